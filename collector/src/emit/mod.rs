//! Emit: what the judge found and what the aggregator measured, out.
//!
//! - [`catalogue`]: every metric's OTLP and Prometheus name, type, unit and help.
//! - [`prometheus`]: the `/metrics` text, from a [`MetricsSnapshot`].
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
pub mod views;

use crate::aggregate::{Aggregator, Cumulative};
use crate::config::{OutcomeSplit, PrometheusConfig};
use crate::extract::{EndpointKey, Outcome};
use crate::judge::{AlertState, Judge, Severity, Verdict};
use crate::telemetry::Telemetry;
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

/// Copies what `/metrics` shows out of the pipeline's state, trimmed as
/// `prometheus` (`emit.prometheus`) says.
pub fn snapshot(
    agg: &Aggregator,
    judge: &Judge,
    telemetry: &Telemetry,
    bounds_ms: &[f64],
    dimensions: &[String],
    prometheus: PrometheusConfig,
    now_ms: u64,
) -> MetricsSnapshot {
    // Every series identity carries its dimensions, its phase (unless it
    // is the whole request) and its band of input sizes (a first token's,
    // when read): without them two series that differ only there would be
    // one duplicated line.
    let named = |mut labels: Labels, endpoint: &EndpointKey| {
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
    };
    let mut histograms = Vec::new();
    let mut db_calls = Vec::new();
    for (endpoint, versions) in agg.endpoints() {
        for (version, series) in versions.iter() {
            let dims = named(Labels::new(), endpoint);
            histogram_rows(
                &series.histograms,
                prometheus.outcomes,
                || {
                    let mut labels: Labels = vec![
                        ("service.name".into(), endpoint.service.clone()),
                        ("endpoint".into(), endpoint.endpoint.clone()),
                        ("model.version".into(), version.clone()),
                    ];
                    labels.extend(dims.iter().cloned());
                    labels
                },
                &mut histograms,
            );
            if !endpoint.phase.is_request() {
                // Database calls are counted per request, not per phase.
                continue;
            }
            db_calls.push((
                named(
                    vec![
                        ("service.name".into(), endpoint.service.clone()),
                        ("endpoint".into(), endpoint.endpoint.clone()),
                        ("model.version".into(), version.clone()),
                    ],
                    endpoint,
                ),
                agg.window(series, now_ms).db_calls_per_request(),
            ));
        }
    }
    histograms.sort_by(|a, b| a.labels.cmp(&b.labels));
    db_calls.sort_by(|a, b| a.0.cmp(&b.0));
    // The overflow series last; split, its rows differ by outcome too.
    let overflow = vec![("otel.metric.overflow".into(), "true".to_owned())];
    histogram_rows(
        &agg.overflow().histograms,
        prometheus.outcomes,
        || overflow.clone(),
        &mut histograms,
    );
    let mut regressions: Vec<RegressionRow> = judge
        .judgements()
        .map(|(k, j)| RegressionRow {
            labels: named(
                vec![
                    ("service.name".into(), k.endpoint.service.clone()),
                    ("endpoint".into(), k.endpoint.endpoint.clone()),
                    ("candidate.version".into(), k.candidate.clone()),
                    ("baseline.version".into(), k.baseline.clone()),
                    ("rule".into(), k.rule.as_str().to_owned()),
                ],
                &k.endpoint,
            ),
            active: Severity::ALL.map(|s| j.alert(s).state == AlertState::Firing),
            ratio: j.result.evidence.ratio,
            difference: j.result.evidence.difference,
            firings: Severity::ALL.map(|s| j.alert(s).firings),
            verdict: verdict_of(j.verdict()),
        })
        .collect();
    regressions.sort_by(|a, b| a.labels.cmp(&b.labels));
    MetricsSnapshot {
        bounds_ms: bounds_ms.to_vec(),
        histograms,
        regressions,
        db_calls,
        readings: telemetry.readings(),
        verdicts: prometheus.verdicts,
    }
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
