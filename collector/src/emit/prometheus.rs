//! The Prometheus/OpenMetrics text of `/metrics`.
//!
//! The pipeline task copies what is to be shown into [`MetricsSnapshot`]s
//! (cheap: counts, not sketches; one per group of series that changed,
//! see [`super::scrape`]) and the HTTP handler encodes them here with
//! `prometheus-client`, off the pipeline task, a [`Family`] at a time so
//! that a page can be put together from groups encoded at different
//! times. Names and help texts come from [`super::catalogue`].

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

/// The families of `/metrics`, in the order the page lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `modelgate_request_duration_seconds`, a histogram per series and outcome.
    RequestDuration,
    /// `modelgate_regression_active`, per judged rule and severity.
    RegressionActive,
    /// `modelgate_regression_ratio`, per judged rule.
    RegressionRatio,
    /// `modelgate_regression_difference`, per judged rule.
    RegressionDifference,
    /// `modelgate_regression_verdict`, per judged rule (and verdict).
    RegressionVerdict,
    /// `modelgate_alerts_total`, per judged rule and severity.
    Alerts,
    /// `modelgate_db_calls_per_request`, per series.
    DbCalls,
    /// modelgate's own figures (several families), last.
    SelfTelemetry,
}

impl Family {
    /// The families whose lines come from series and judgements, in page
    /// order: all but the self-telemetry, which comes last.
    pub const PER_SERIES: [Family; 7] = [
        Family::RequestDuration,
        Family::RegressionActive,
        Family::RegressionRatio,
        Family::RegressionDifference,
        Family::RegressionVerdict,
        Family::Alerts,
        Family::DbCalls,
    ];
}

/// One family of a snapshot, for a registry of its own.
#[derive(Debug)]
struct Only {
    snapshot: std::sync::Arc<MetricsSnapshot>,
    family: Family,
}

impl Collector for Only {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.snapshot.encode_family(self.family, &mut encoder)
    }
}

/// `family` of `snapshot` as a page of its own: its descriptor, its
/// lines, `# EOF`.
pub fn encode_family(
    snapshot: std::sync::Arc<MetricsSnapshot>,
    family: Family,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Only { snapshot, family }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The end of every page.
pub const EOF: &str = "# EOF\n";

/// The sample lines of a page of one family ([`encode_family`]): without
/// its descriptor (the lines starting with `#`, which no sample line
/// does) and without the end of page.
pub fn samples_of(page: &str) -> &str {
    let body = page.strip_suffix(EOF).unwrap_or(page);
    let mut start = 0;
    while body[start..].starts_with('#') {
        start = body[start..]
            .find('\n')
            .map_or(body.len(), |end| start + end + 1);
    }
    &body[start..]
}

/// The descriptor of a page of one family: its lines starting with `#`,
/// without the end of page.
pub fn descriptor_of(page: &str) -> &str {
    let body = page.strip_suffix(EOF).unwrap_or(page);
    &body[..body.len() - samples_of(page).len()]
}

fn labels(pairs: &[(Cow<'static, str>, String)]) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
    pairs
        .iter()
        .map(|(k, v)| (Cow::Owned(k.replace('.', "_")), Cow::Owned(v.clone())))
        .collect()
}

impl MetricsSnapshot {
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
        for family in Family::PER_SERIES {
            self.encode_family(family, &mut encoder)?;
        }
        self.encode_family(Family::SelfTelemetry, &mut encoder)
    }
}

impl MetricsSnapshot {
    /// Writes one family: its descriptor and its lines.
    fn encode_family(
        &self,
        family: Family,
        encoder: &mut DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        match family {
            Family::RequestDuration => {
                let mut m = descriptor(encoder, &catalogue::REQUEST_DURATION)?;
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
                Ok(())
            }
            Family::RegressionActive => {
                let mut m = descriptor(encoder, &catalogue::REGRESSION_ACTIVE)?;
                for (r, severity) in self.per_severity() {
                    let set = with_severity(&r.labels, severity);
                    m.encode_family(&set)?
                        .encode_gauge(&i64::from(r.active[severity.index()]))?;
                }
                Ok(())
            }
            Family::RegressionRatio => gauge_family(
                encoder,
                &catalogue::REGRESSION_RATIO,
                self.regressions.iter().map(|r| (&r.labels, r.ratio)),
            ),
            Family::RegressionDifference => gauge_family(
                encoder,
                &catalogue::REGRESSION_DIFFERENCE,
                self.regressions.iter().map(|r| (&r.labels, r.difference)),
            ),
            Family::RegressionVerdict => {
                let mut m = descriptor(encoder, &catalogue::REGRESSION_VERDICT)?;
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
                Ok(())
            }
            Family::Alerts => {
                let mut m = descriptor(encoder, &catalogue::ALERTS)?;
                for (r, severity) in self.per_severity() {
                    let set = with_severity(&r.labels, severity);
                    m.encode_family(&set)?
                        .encode_counter::<NoLabelSet, _, f64>(&r.firings[severity.index()], None)?;
                }
                Ok(())
            }
            Family::DbCalls => gauge_family(
                encoder,
                &catalogue::DB_CALLS_PER_REQUEST,
                self.db_calls.iter().map(|(l, v)| (l, *v)),
            ),
            Family::SelfTelemetry => encode_readings(encoder, &self.readings),
        }
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
