//! The Prometheus/OpenMetrics text of `/metrics`.
//!
//! The pipeline task copies what is to be shown into a [`MetricsSnapshot`]
//! (cheap: counts, not sketches) and the HTTP handler encodes it here with
//! `prometheus-client`, off the pipeline task. Names and help texts come
//! from [`super::catalogue`].

use std::borrow::Cow;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::catalogue::{self, Kind, Metric};
use crate::aggregate::Cumulative;
use crate::config::VerdictSet;
use crate::judge::Severity;
use crate::telemetry::{Reading, SelfMetric};

/// The media type of what [`encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Attribute names (OTLP spelling) and values.
pub type Labels = Vec<(Cow<'static, str>, String)>;

/// One series' latency histogram for one outcome.
#[derive(Debug, Clone)]
pub struct HistogramRow {
    /// service.name, endpoint, model.version, outcome (or the overflow mark).
    pub labels: Labels,
    /// The counts.
    pub histogram: Cumulative,
}

/// One judged (endpoint, candidate, baseline, rule).
#[derive(Debug, Clone)]
pub struct RegressionRow {
    /// service.name, endpoint, candidate.version, baseline.version, rule.
    pub labels: Labels,
    /// Firing now, per severity ([`Severity::index`]).
    pub active: [bool; 2],
    /// Candidate over baseline (sla: over the limit).
    pub ratio: f64,
    /// Candidate minus baseline, in the rule's unit.
    pub difference: f64,
    /// Times fired, per severity.
    pub firings: [u64; 2],
    /// The latest evaluation: "pass", "regression" or "inconclusive".
    pub verdict: &'static str,
}

/// The values of the `verdict` attribute: a bounded state set.
pub const VERDICTS: [&str; 3] = ["pass", "regression", "inconclusive"];

/// Everything `/metrics` shows, copied out of the pipeline.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// Histogram bucket bounds, milliseconds.
    pub bounds_ms: Vec<f64>,
    /// Latency histograms.
    pub histograms: Vec<HistogramRow>,
    /// Regression gauges and alert counters.
    pub regressions: Vec<RegressionRow>,
    /// (service.name, endpoint, model.version) and calls per request.
    pub db_calls: Vec<(Labels, f64)>,
    /// modelgate's own figures.
    pub readings: Vec<Reading>,
    /// The verdict state set whole, or its current line only
    /// (`emit.prometheus.verdicts`).
    pub verdicts: VerdictSet,
}

/// Writes `snapshot` as OpenMetrics text into `out`.
pub fn encode_into(
    snapshot: MetricsSnapshot,
    out: &mut impl std::fmt::Write,
) -> Result<(), std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    prometheus_client::encoding::text::encode(out, &registry)
}

/// Writes `snapshot` as OpenMetrics text into a string.
pub fn encode(snapshot: MetricsSnapshot) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    encode_into(snapshot, &mut out)?;
    Ok(out)
}

/// Bytes a sample line takes besides its labels: the family name, the
/// `le` of a bucket, the value and punctuation (an upper estimate).
const LINE_BYTES: usize = 96;

/// Leaves out the latency histograms of the last series until the page's
/// estimated size fits `max_bytes` (`admin.metrics_max_bytes`); the
/// regression, database and self-telemetry families always stay. Returns
/// how many series were left out.
pub fn bound(snapshot: &mut MetricsSnapshot, max_bytes: usize) -> u64 {
    fn labels_len(labels: &Labels) -> usize {
        labels.iter().map(|(k, v)| k.len() + v.len() + 4).sum()
    }
    // Per regression: active and alerts per severity, ratio, difference,
    // one or three verdicts.
    let lines = 6 + snapshot.verdict_lines();
    let regressions: usize = snapshot
        .regressions
        .iter()
        .map(|r| lines * (LINE_BYTES + labels_len(&r.labels) + 24))
        .sum();
    let db: usize = snapshot
        .db_calls
        .iter()
        .map(|(l, _)| LINE_BYTES + labels_len(l))
        .sum();
    // Descriptors and self-telemetry.
    let fixed = 16 << 10;
    let per_row =
        |labels: &Labels| (snapshot.bounds_ms.len() + 3) * (LINE_BYTES + labels_len(labels));
    let mut total = regressions + db + fixed;
    let mut keep = 0;
    for row in &snapshot.histograms {
        let n = per_row(&row.labels);
        if total + n > max_bytes {
            break;
        }
        total += n;
        keep += 1;
    }
    let omitted = snapshot.histograms.len() - keep;
    snapshot.histograms.truncate(keep);
    omitted as u64
}

fn labels(pairs: &[(Cow<'static, str>, String)]) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
    pairs
        .iter()
        .map(|(k, v)| (Cow::Owned(k.replace('.', "_")), Cow::Owned(v.clone())))
        .collect()
}

impl MetricsSnapshot {
    /// `modelgate_regression_verdict` lines per judged rule.
    fn verdict_lines(&self) -> usize {
        match self.verdicts {
            VerdictSet::All => VERDICTS.len(),
            VerdictSet::Current => 1,
        }
    }

    /// Every regression row once per severity.
    fn per_severity(&self) -> impl Iterator<Item = (&RegressionRow, Severity)> {
        self.regressions
            .iter()
            .flat_map(|r| Severity::ALL.into_iter().map(move |s| (r, s)))
    }
}

/// A regression row's labels with its `severity`.
fn with_severity(
    pairs: &[(Cow<'static, str>, String)],
    severity: Severity,
) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
    let mut set = labels(pairs);
    set.push((Cow::Borrowed("severity"), Cow::Borrowed(severity.as_str())));
    set
}

/// A family's descriptor, from its catalogue entry.
fn descriptor<'a>(
    encoder: &'a mut DescriptorEncoder<'_>,
    metric: &Metric,
) -> Result<MetricEncoder<'a>, std::fmt::Error> {
    let kind = match metric.kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
        Kind::Histogram => MetricType::Histogram,
    };
    // The catalogue's only unit is the second.
    let unit = metric.unit.map(|_| &Unit::Seconds);
    encoder.encode_descriptor(metric.prometheus, metric.help, unit, kind)
}

impl Collector for MetricsSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        {
            let mut m = descriptor(&mut encoder, &catalogue::REQUEST_DURATION)?;
            for row in &self.histograms {
                let h = &row.histogram;
                // Per-bucket counts: the encoder makes them cumulative.
                let buckets: Vec<(f64, u64)> = h
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        (
                            self.bounds_ms.get(i).map_or(f64::INFINITY, |ms| ms / 1e3),
                            *n,
                        )
                    })
                    .collect();
                let set = labels(&row.labels);
                m.encode_family(&set)?.encode_histogram::<NoLabelSet>(
                    h.sum_ms / 1e3,
                    h.count,
                    &buckets,
                    None,
                )?;
            }
        }
        {
            let mut m = descriptor(&mut encoder, &catalogue::REGRESSION_ACTIVE)?;
            for (r, severity) in self.per_severity() {
                let set = with_severity(&r.labels, severity);
                m.encode_family(&set)?
                    .encode_gauge(&i64::from(r.active[severity.index()]))?;
            }
        }
        gauge_family(
            &mut encoder,
            &catalogue::REGRESSION_RATIO,
            self.regressions.iter().map(|r| (&r.labels, r.ratio)),
        )?;
        gauge_family(
            &mut encoder,
            &catalogue::REGRESSION_DIFFERENCE,
            self.regressions.iter().map(|r| (&r.labels, r.difference)),
        )?;
        {
            let mut m = descriptor(&mut encoder, &catalogue::REGRESSION_VERDICT)?;
            for r in &self.regressions {
                let shown = VERDICTS
                    .into_iter()
                    .filter(|v| self.verdicts == VerdictSet::All || *v == r.verdict);
                for verdict in shown {
                    let mut set = labels(&r.labels);
                    set.push((Cow::Borrowed("verdict"), Cow::Borrowed(verdict)));
                    m.encode_family(&set)?
                        .encode_gauge(&i64::from(r.verdict == verdict))?;
                }
            }
        }
        {
            let mut m = descriptor(&mut encoder, &catalogue::ALERTS)?;
            for (r, severity) in self.per_severity() {
                let set = with_severity(&r.labels, severity);
                m.encode_family(&set)?
                    .encode_counter::<NoLabelSet, _, f64>(&r.firings[severity.index()], None)?;
            }
        }
        gauge_family(
            &mut encoder,
            &catalogue::DB_CALLS_PER_REQUEST,
            self.db_calls.iter().map(|(l, v)| (l, *v)),
        )?;
        encode_readings(&mut encoder, &self.readings)
    }
}

/// modelgate's own figures: one family per [`SelfMetric`], a `reason`
/// attribute where the figure is split by reason.
fn encode_readings(
    encoder: &mut DescriptorEncoder<'_>,
    readings: &[Reading],
) -> Result<(), std::fmt::Error> {
    for metric in SelfMetric::ALL {
        let entry = catalogue::self_metric(metric);
        let mut m = descriptor(encoder, entry)?;
        for r in readings.iter().filter(|r| r.metric == metric) {
            match r.label {
                Some(label) => encode_value(&mut m.encode_family(&[label])?, entry, r.value)?,
                None => encode_value(&mut m, entry, r.value)?,
            }
        }
    }
    Ok(())
}

fn encode_value(
    m: &mut MetricEncoder<'_>,
    metric: &Metric,
    value: u64,
) -> Result<(), std::fmt::Error> {
    match metric.kind {
        Kind::Counter => m.encode_counter::<NoLabelSet, _, f64>(&value, None),
        Kind::Gauge | Kind::Histogram => m.encode_gauge(&(value as i64)),
    }
}

fn gauge_family<'a, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    metric: &Metric,
    rows: impl Iterator<Item = (&'a Labels, V)>,
) -> Result<(), std::fmt::Error> {
    let mut m = descriptor(encoder, metric)?;
    for (l, v) in rows {
        let set = labels(l);
        m.encode_family(&set)?.encode_gauge(&v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{DroppedReason, RefusedReason, Telemetry};

    #[test]
    fn the_page_is_bounded_by_bytes() {
        let row = |i: usize| HistogramRow {
            labels: vec![
                ("service.name".into(), "s".into()),
                ("endpoint".into(), format!("/{}", "x".repeat(1000 + i))),
                ("model.version".into(), "v1".into()),
                ("outcome".into(), "ok".into()),
            ],
            histogram: Cumulative {
                buckets: vec![1, 0, 0],
                sum_ms: 1.0,
                count: 1,
            },
        };
        let mut snapshot = MetricsSnapshot {
            bounds_ms: vec![100.0, 150.0],
            histograms: (0..1000).map(row).collect(),
            ..MetricsSnapshot::default()
        };
        let max = 256 << 10;
        let omitted = bound(&mut snapshot, max);
        assert!(omitted > 900 && omitted < 1000, "{omitted}");
        let text = encode(snapshot).unwrap();
        assert!(text.len() <= max, "{}", text.len());
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn renders_names_labels_and_buckets_as_prometheus_expects() {
        let telemetry = Telemetry::default();
        telemetry.refused(RefusedReason::TooLarge, 2, "test");
        telemetry.accepted(crate::signal::Signal::Traces, 10);
        // 12 in, 7 delivered, 2 given up on: 3 still queued.
        for _ in 0..12 {
            telemetry.forward_queued();
        }
        for _ in 0..7 {
            telemetry.forward_sent();
        }
        telemetry.forward_refused();
        telemetry.forward_dropped(DroppedReason::Rejected, 2);
        telemetry.series_active(4);
        telemetry.series_overflowed();
        let snapshot = MetricsSnapshot {
            bounds_ms: vec![100.0, 150.0],
            histograms: vec![HistogramRow {
                labels: vec![
                    ("service.name".into(), "lending-api".into()),
                    ("endpoint".into(), "/risk-score".into()),
                    ("model.version".into(), "v1.3".into()),
                    ("outcome".into(), "timeout".into()),
                ],
                histogram: Cumulative {
                    buckets: vec![0, 1, 2],
                    sum_ms: 1_700.0,
                    count: 3,
                },
            }],
            regressions: vec![RegressionRow {
                labels: vec![
                    ("service.name".into(), "lending-api".into()),
                    ("endpoint".into(), "/risk-score".into()),
                    ("candidate.version".into(), "v1.3".into()),
                    ("baseline.version".into(), "v1.2".into()),
                    ("rule".into(), "sla".into()),
                ],
                active: [true, true],
                ratio: 5.07,
                difference: 610.5,
                firings: [1, 1],
                verdict: "inconclusive",
            }],
            readings: telemetry.readings(),
            verdicts: VerdictSet::All,
            ..MetricsSnapshot::default()
        };
        let current = encode(MetricsSnapshot {
            verdicts: VerdictSet::Current,
            ..snapshot.clone()
        })
        .unwrap();
        assert!(
            current.contains(r#"rule="sla",verdict="inconclusive"} 1"#)
                && !current.contains(r#"verdict="pass""#),
            "{current}"
        );
        let text = encode(snapshot).unwrap();
        assert!(text.contains(r#"modelgate_request_duration_seconds_bucket{le="0.15",service_name="lending-api",endpoint="/risk-score",model_version="v1.3",outcome="timeout"} 1"#), "{text}");
        assert!(text.contains(r#"le="+Inf",service_name="lending-api",endpoint="/risk-score",model_version="v1.3",outcome="timeout"} 3"#), "{text}");
        assert!(text.contains(r#"modelgate_request_duration_seconds_count{service_name="lending-api",endpoint="/risk-score",model_version="v1.3",outcome="timeout"} 3"#), "{text}");
        assert!(text.contains(r#"modelgate_regression_active{service_name="lending-api",endpoint="/risk-score",candidate_version="v1.3",baseline_version="v1.2",rule="sla",severity="critical"} 1"#), "{text}");
        assert!(
            text.contains(r#"rule="sla",severity="warning"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"modelgate_alerts_total{"#), "{text}");
        assert!(
            text.contains(r#"rule="sla",verdict="inconclusive"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"rule="sla",verdict="pass"} 0"#), "{text}");
        assert!(
            text.contains(r#"modelgate_receiver_refused_total{reason="too_large"} 2"#),
            "{text}"
        );
        for line in [
            "modelgate_forward_queue 3",
            "modelgate_forward_sent_total 7",
            "modelgate_forward_refused_total 1",
            r#"modelgate_forward_dropped_total{reason="rejected"} 2"#,
            "modelgate_series_active 4",
            "modelgate_series_overflow_total 1",
            "modelgate_db_unmatched_total 0",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert!(
            text.contains("modelgate_receiver_accepted_total{signal=\"traces\"} 10"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
