//! Emit: what the judge found and what the aggregator measured, out.
//!
//! - [`catalogue`]: every metric's OTLP and Prometheus name, type, unit and help.
//! - [`prometheus`]: the `/metrics` text, from a [`MetricsSnapshot`].
//! - [`scrape`]: `/metrics` pages that cost what changed since the last
//!   one: fingerprints and rows copied in slices of the pipeline task,
//!   groups of series encoded and compressed only when they changed.
//! - [`otlp`]: OTLP metrics push through the OpenTelemetry SDK (optional).
//! - [`history`]: the bounded per-series history and past regressions the
//!   dashboard draws, kept by the pipeline task.
//! - [`views`]: what the API, the gate, the filter and the dashboard ask,
//!   as plain data (pure functions of the aggregator and the judge).
//!
//! Emitters read state; they never change what is measured or judged.

pub mod catalogue;
pub mod history;
pub mod otlp;
pub mod prometheus;
pub mod scrape;
pub mod views;

use crate::aggregate::{Aggregator, Cumulative, Versions};
use crate::config::{OutcomeSplit, PrometheusConfig};
use crate::extract::{EndpointKey, Outcome};
use crate::judge::{AlertKey, AlertState, Judgement, Severity, Verdict};
use std::borrow::Cow;

use prometheus::{HistogramRow, Labels, MetricsSnapshot, RegressionRow};

/// The bounded `verdict` attribute of a rule's latest evaluation.
pub fn verdict_of(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Regression(_) => "regression",
        Verdict::Pass => "pass",
        Verdict::Inconclusive => "inconclusive",
    }
}

/// The histograms of one series' outcomes as one (same bounds: bucket by
/// bucket).
fn merged<'a>(histograms: impl Iterator<Item = &'a Cumulative>) -> Option<Cumulative> {
    histograms.fold(None, |sum, h| {
        let Some(mut sum) = sum else {
            return Some(h.clone());
        };
        for (total, n) in sum.buckets.iter_mut().zip(&h.buckets) {
            *total += n;
        }
        sum.sum_ms += h.sum_ms;
        sum.count += h.count;
        Some(sum)
    })
}

/// A series' latency histogram rows: one per outcome seen, or one over all
/// of them (`emit.prometheus.outcomes`), labelled by `labels` (plus the
/// outcome when split).
fn histogram_rows(
    histograms: &[Option<Box<Cumulative>>; Outcome::ALL.len()],
    split: OutcomeSplit,
    labels: impl Fn() -> Labels,
    out: &mut Vec<HistogramRow>,
) {
    match split {
        OutcomeSplit::Split => {
            for outcome in Outcome::ALL {
                if let Some(h) = &histograms[outcome.index()] {
                    let mut labels = labels();
                    labels.push(("outcome".into(), outcome.as_str().to_owned()));
                    out.push(HistogramRow {
                        labels,
                        histogram: (**h).clone(),
                    });
                }
            }
        }
        OutcomeSplit::Merged => {
            if let Some(histogram) = merged(histograms.iter().flatten().map(|h| &**h)) {
                out.push(HistogramRow {
                    labels: labels(),
                    histogram,
                });
            }
        }
    }
}

/// A series identity's labels with its dimensions, its phase (unless it
/// is the whole request) and its band of input sizes (a first token's,
/// when read): without them two series that differ only there would be
/// one duplicated line.
fn named(mut labels: Labels, dimensions: &[String], endpoint: &EndpointKey) -> Labels {
    for (name, value) in dimensions.iter().zip(&endpoint.dims) {
        labels.push((Cow::Owned(name.clone()), value.clone()));
    }
    if !endpoint.phase.is_request() {
        labels.push(("phase".into(), endpoint.phase.as_str().to_owned()));
    }
    if let Some(band) = endpoint.input {
        labels.push(("input_tokens".into(), band.as_str().to_owned()));
    }
    labels
}

/// The labels of one series of `endpoint`.
fn series_labels(dimensions: &[String], endpoint: &EndpointKey, version: &str) -> Labels {
    named(
        vec![
            ("service.name".into(), endpoint.service.clone()),
            ("endpoint".into(), endpoint.endpoint.clone()),
            ("model.version".into(), version.to_owned()),
        ],
        dimensions,
        endpoint,
    )
}

/// Copies what `/metrics` shows of one endpoint's series into `out`
/// (latency histograms trimmed as `prometheus` says; database calls per
/// request in the window at `now_ms`).
fn endpoint_rows(
    agg: &Aggregator,
    endpoint: &EndpointKey,
    versions: &Versions,
    dimensions: &[String],
    prometheus: PrometheusConfig,
    now_ms: u64,
    out: &mut MetricsSnapshot,
) {
    for (version, series) in versions.iter() {
        let labels = series_labels(dimensions, endpoint, version);
        histogram_rows(
            &series.histograms,
            prometheus.outcomes,
            || labels.clone(),
            &mut out.histograms,
        );
        if !endpoint.phase.is_request() {
            // Database calls are counted per request, not per phase.
            continue;
        }
        out.db_calls
            .push((labels, agg.window_db_calls(series, now_ms)));
    }
}

/// What `/metrics` shows of one judgement, as a row without labels.
fn judged(judgement: &Judgement) -> RegressionRow {
    RegressionRow {
        labels: Labels::new(),
        active: Severity::ALL.map(|s| judgement.alert(s).state == AlertState::Firing),
        ratio: judgement.result.evidence.ratio,
        difference: judgement.result.evidence.difference,
        firings: Severity::ALL.map(|s| judgement.alert(s).firings),
        verdict: verdict_of(judgement.verdict()),
    }
}

/// The row `/metrics` shows of one judgement.
fn regression_row(key: &AlertKey, judgement: &Judgement, dimensions: &[String]) -> RegressionRow {
    RegressionRow {
        labels: named(
            vec![
                ("service.name".into(), key.endpoint.service.clone()),
                ("endpoint".into(), key.endpoint.endpoint.clone()),
                ("candidate.version".into(), key.candidate.clone()),
                ("baseline.version".into(), key.baseline.clone()),
                ("rule".into(), key.rule.as_str().to_owned()),
            ],
            dimensions,
            &key.endpoint,
        ),
        ..judged(judgement)
    }
}

/// The overflow series' latency histogram rows (split, they differ by
/// outcome too).
fn overflow_rows(agg: &Aggregator, prometheus: PrometheusConfig, out: &mut Vec<HistogramRow>) {
    let overflow = vec![("otel.metric.overflow".into(), "true".to_owned())];
    histogram_rows(
        &agg.overflow().histograms,
        prometheus.outcomes,
        || overflow.clone(),
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_outcomes_add_up_bucket_by_bucket() {
        let h = |buckets: Vec<u64>, sum_ms: f64| {
            let count = buckets.iter().sum();
            Some(Box::new(Cumulative {
                buckets,
                sum_ms,
                count,
            }))
        };
        let histograms = [h(vec![3, 1, 0], 120.0), None, h(vec![0, 1, 2], 2500.0)];
        let labels = || vec![("service.name".into(), "s".to_owned())];
        let mut rows = Vec::new();
        histogram_rows(&histograms, OutcomeSplit::Merged, labels, &mut rows);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].labels, labels());
        assert_eq!(rows[0].histogram.buckets, [3, 2, 2]);
        assert_eq!(rows[0].histogram.count, 7);
        assert_eq!(rows[0].histogram.sum_ms, 2620.0);

        let mut rows = Vec::new();
        histogram_rows(&histograms, OutcomeSplit::Split, labels, &mut rows);
        let outcomes: Vec<&str> = rows.iter().map(|r| r.labels[1].1.as_str()).collect();
        assert_eq!(
            outcomes,
            [Outcome::ALL[0].as_str(), Outcome::ALL[2].as_str()]
        );
        assert!(rows.iter().all(|r| r.labels[1].0 == "outcome"));

        let mut rows = Vec::new();
        histogram_rows(&[None, None, None], OutcomeSplit::Merged, labels, &mut rows);
        assert!(rows.is_empty(), "no requests, no histogram");
    }
}
