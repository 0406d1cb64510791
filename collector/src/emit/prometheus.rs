//! The Prometheus/OpenMetrics text of `/metrics`.
//!
//! The pipeline task copies what is to be shown into a [`MetricsSnapshot`]
//! (cheap: counts, not sketches) and the HTTP handler encodes it here with
//! `prometheus-client`, off the pipeline task. Names are the OTLP names of
//! `DESIGN.md` in the usual translation: dots to underscores, the unit as a
//! suffix, `_total` on counters.

use std::borrow::Cow;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::aggregate::{AggregateCounters, Cumulative};
use crate::telemetry::{ForwardCounters, RefusedReason};

/// The media type of what [`encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

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
    /// Firing now.
    pub active: bool,
    /// Candidate over baseline (sla: over the limit).
    pub ratio: f64,
    /// Times fired.
    pub firings: u64,
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
    /// Live series.
    pub series_active: u64,
    /// Limits the aggregator hit.
    pub counters: AggregateCounters,
    /// Spans accepted.
    pub accepted: u64,
    /// Refused, by reason.
    pub refused: Vec<(RefusedReason, u64)>,
    /// The forwarder's queue and counters (zero when forwarding is off).
    pub forward: ForwardCounters,
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

/// A `fmt::Write` that hands its text on in chunks, so a scrape of 100,000
/// series (hundreds of megabytes of text) never sits in memory whole. A
/// closed receiver (the scraper left) aborts the encoding.
#[derive(Debug)]
pub struct ChunkWriter {
    buffer: String,
    chunk: usize,
    tx: tokio::sync::mpsc::Sender<String>,
}

impl ChunkWriter {
    /// Chunks of about `chunk` bytes go to `tx`; call from a blocking thread.
    pub fn new(chunk: usize, tx: tokio::sync::mpsc::Sender<String>) -> Self {
        Self {
            buffer: String::with_capacity(chunk),
            chunk,
            tx,
        }
    }

    /// Sends what is left.
    pub fn finish(mut self) -> Result<(), std::fmt::Error> {
        self.flush()
    }

    fn flush(&mut self) -> Result<(), std::fmt::Error> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, String::with_capacity(self.chunk));
        self.tx.blocking_send(chunk).map_err(|_| std::fmt::Error)
    }
}

impl std::fmt::Write for ChunkWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.buffer.push_str(s);
        if self.buffer.len() >= self.chunk {
            self.flush()?;
        }
        Ok(())
    }
}

fn labels(pairs: &[(&'static str, String)]) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
    pairs
        .iter()
        .map(|(k, v)| (Cow::Owned(k.replace('.', "_")), Cow::Owned(v.clone())))
        .collect()
}

impl Collector for MetricsSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        {
            let mut m = encoder.encode_descriptor(
                "modelgate_request_duration",
                "Request latency per service, endpoint, model version and outcome.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
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
        gauge_family(
            &mut encoder,
            "modelgate_regression_active",
            "1 while a regression alert fires for the candidate against the baseline under the rule, else 0.",
            self.regressions
                .iter()
                .map(|r| (&r.labels, i64::from(r.active))),
        )?;
        gauge_family(
            &mut encoder,
            "modelgate_regression_ratio",
            "Candidate over baseline on the rule's figure (sla: over the limit).",
            self.regressions.iter().map(|r| (&r.labels, r.ratio)),
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "modelgate_regression_verdict",
                "The latest evaluation of the rule, as a state set: 1 for the current verdict (pass, regression, inconclusive = too little traffic or not yet significant), 0 for the others.",
                None,
                MetricType::Gauge,
            )?;
            for r in &self.regressions {
                for verdict in VERDICTS {
                    let mut set = labels(&r.labels);
                    set.push((Cow::Borrowed("verdict"), Cow::Borrowed(verdict)));
                    m.encode_family(&set)?
                        .encode_gauge(&i64::from(r.verdict == verdict))?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "modelgate_alerts",
                "Times a regression alert started firing.",
                None,
                MetricType::Counter,
            )?;
            for r in &self.regressions {
                let set = labels(&r.labels);
                m.encode_family(&set)?
                    .encode_counter::<NoLabelSet, _, f64>(&r.firings, None)?;
            }
        }
        gauge_family(
            &mut encoder,
            "modelgate_db_calls_per_request",
            "Database calls per request over the candidate window.",
            self.db_calls.iter().map(|(l, v)| (l, *v)),
        )?;
        let c = &self.counters;
        simple(
            &mut encoder,
            "modelgate_receiver_accepted",
            "Spans and log records accepted by the receivers.",
            MetricType::Counter,
            self.accepted,
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "modelgate_receiver_refused",
                "Spans and log records refused, by reason (a payload that could not be decoded counts once).",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in &self.refused {
                let set = [("reason", reason.as_str())];
                m.encode_family(&set)?
                    .encode_counter::<NoLabelSet, _, f64>(n, None)?;
            }
        }
        let f = &self.forward;
        simple(
            &mut encoder,
            "modelgate_forward_queue",
            "Export requests waiting for the forward downstream or being sent.",
            MetricType::Gauge,
            f.queue,
        )?;
        simple(
            &mut encoder,
            "modelgate_forward_sent",
            "Export requests delivered to the forward downstream.",
            MetricType::Counter,
            f.sent,
        )?;
        simple(
            &mut encoder,
            "modelgate_forward_refused",
            "Export requests refused to senders (retryable) because the forward queue was full.",
            MetricType::Counter,
            f.refused,
        )?;
        {
            let mut m = encoder.encode_descriptor(
                "modelgate_forward_dropped",
                "Accepted export requests the forwarder gave up on, by reason.",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in &f.dropped {
                let set = [("reason", reason.as_str())];
                m.encode_family(&set)?
                    .encode_counter::<NoLabelSet, _, f64>(n, None)?;
            }
        }
        simple(
            &mut encoder,
            "modelgate_series_active",
            "Live series (service, endpoint, version).",
            MetricType::Gauge,
            self.series_active,
        )?;
        simple(
            &mut encoder,
            "modelgate_series_overflow",
            "Samples routed to the overflow series because aggregate.max_series was reached.",
            MetricType::Counter,
            c.overflow_samples,
        )?;
        simple(
            &mut encoder,
            "modelgate_series_expired",
            "Series forgotten after idling past aggregate.series_idle_timeout.",
            MetricType::Counter,
            c.series_expired,
        )?;
        simple(
            &mut encoder,
            "modelgate_db_pending_dropped",
            "Database calls dropped because aggregate.max_pending_traces traces were waiting.",
            MetricType::Counter,
            c.db_pending_dropped,
        )?;
        simple(
            &mut encoder,
            "modelgate_db_unmatched",
            "Database calls whose request span never arrived.",
            MetricType::Counter,
            c.db_unmatched,
        )?;
        Ok(())
    }
}

fn gauge_family<'a, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (&'a Labels, V)>,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (l, v) in rows {
        let set = labels(l);
        m.encode_family(&set)?.encode_gauge(&v)?;
    }
    Ok(())
}

fn simple(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => m.encode_counter::<NoLabelSet, _, f64>(&value, None),
        _ => m.encode_gauge(&(value as i64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::DroppedReason;

    #[test]
    fn renders_names_labels_and_buckets_as_prometheus_expects() {
        let snapshot = MetricsSnapshot {
            bounds_ms: vec![100.0, 150.0],
            histograms: vec![HistogramRow {
                labels: vec![
                    ("service.name", "lending-api".into()),
                    ("endpoint", "/risk-score".into()),
                    ("model.version", "v1.3".into()),
                    ("outcome", "timeout".into()),
                ],
                histogram: Cumulative {
                    buckets: vec![0, 1, 2],
                    sum_ms: 1_700.0,
                    count: 3,
                },
            }],
            regressions: vec![RegressionRow {
                labels: vec![
                    ("service.name", "lending-api".into()),
                    ("endpoint", "/risk-score".into()),
                    ("candidate.version", "v1.3".into()),
                    ("baseline.version", "v1.2".into()),
                    ("rule", "sla".into()),
                ],
                active: true,
                ratio: 5.07,
                firings: 1,
                verdict: "inconclusive",
            }],
            refused: vec![(RefusedReason::TooLarge, 2)],
            accepted: 10,
            forward: ForwardCounters {
                queue: 3,
                sent: 7,
                refused: 1,
                dropped: vec![(DroppedReason::Rejected, 2)],
            },
            ..MetricsSnapshot::default()
        };
        let text = encode(snapshot).unwrap();
        assert!(text.contains(r#"modelgate_request_duration_seconds_bucket{le="0.15",service_name="lending-api",endpoint="/risk-score",model_version="v1.3",outcome="timeout"} 1"#), "{text}");
        assert!(text.contains(r#"le="+Inf",service_name="lending-api",endpoint="/risk-score",model_version="v1.3",outcome="timeout"} 3"#), "{text}");
        assert!(text.contains(r#"modelgate_request_duration_seconds_count{service_name="lending-api",endpoint="/risk-score",model_version="v1.3",outcome="timeout"} 3"#), "{text}");
        assert!(text.contains(r#"modelgate_regression_active{service_name="lending-api",endpoint="/risk-score",candidate_version="v1.3",baseline_version="v1.2",rule="sla"} 1"#), "{text}");
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
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert!(
            text.contains("modelgate_receiver_accepted_total 10"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
