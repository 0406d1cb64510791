//! The metric catalogue: every metric modelgate emits, once, with its OTLP
//! name, its Prometheus name, its type, unit and help text.
//!
//! Both exporters ([`super::prometheus`] and [`super::otlp`]) read their
//! names and descriptions from here, so the two can never drift apart; the
//! Prometheus name is the OTLP name in the usual translation (dots to
//! underscores; `prometheus-client` appends the unit and `_total`), which a
//! test checks for every entry. Adding a metric means adding it here.

use crate::telemetry::SelfMetric;

/// How a metric's values behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (a reset is a restart).
    Counter,
    /// A value now.
    Gauge,
    /// A distribution.
    Histogram,
}

/// One metric.
#[derive(Debug, PartialEq, Eq)]
pub struct Metric {
    /// The OTLP name (DESIGN.md's table).
    pub otlp: &'static str,
    /// The Prometheus family name, before the unit suffix and `_total`.
    pub prometheus: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// UCUM unit for OTLP (`s`); Prometheus gets the `_seconds` suffix.
    pub unit: Option<&'static str>,
    /// What it means, one sentence.
    pub help: &'static str,
}

/// `modelgate.request.duration`.
pub static REQUEST_DURATION: Metric = Metric {
    otlp: "modelgate.request.duration",
    prometheus: "modelgate_request_duration",
    kind: Kind::Histogram,
    unit: Some("s"),
    help: "Request latency per service, endpoint, model version and outcome, of the requests modelgate measured from spans and log records (requests read from histogram points are the sender's own histograms, forwarded as they came).",
};

/// `modelgate.regression.active`.
pub static REGRESSION_ACTIVE: Metric = Metric {
    otlp: "modelgate.regression.active",
    prometheus: "modelgate_regression_active",
    kind: Kind::Gauge,
    unit: None,
    help: "1 while a regression alert fires for the candidate against the baseline under the rule, else 0.",
};

/// `modelgate.regression.ratio`.
pub static REGRESSION_RATIO: Metric = Metric {
    otlp: "modelgate.regression.ratio",
    prometheus: "modelgate_regression_ratio",
    kind: Kind::Gauge,
    unit: None,
    help: "Candidate over baseline on the rule's figure (sla: over the limit).",
};

/// `modelgate.regression.difference`.
pub static REGRESSION_DIFFERENCE: Metric = Metric {
    otlp: "modelgate.regression.difference",
    prometheus: "modelgate_regression_difference",
    kind: Kind::Gauge,
    unit: None,
    help: "Candidate minus baseline on the rule's figure (sla: minus the limit), in the rule's unit: ms for latency, a rate for errors (0.078 = 7.8 percentage points), calls per request for fanout.",
};

/// `modelgate.regression.verdict`.
pub static REGRESSION_VERDICT: Metric = Metric {
    otlp: "modelgate.regression.verdict",
    prometheus: "modelgate_regression_verdict",
    kind: Kind::Gauge,
    unit: None,
    help: "The latest evaluation of the rule, as a state set: 1 for the current verdict (pass, regression, inconclusive = too little traffic or not yet significant), 0 for the others.",
};

/// `modelgate.alerts`.
pub static ALERTS: Metric = Metric {
    otlp: "modelgate.alerts",
    prometheus: "modelgate_alerts",
    kind: Kind::Counter,
    unit: None,
    help: "Times a regression alert started firing.",
};

/// `modelgate.db.calls_per_request`.
pub static DB_CALLS_PER_REQUEST: Metric = Metric {
    otlp: "modelgate.db.calls_per_request",
    prometheus: "modelgate_db_calls_per_request",
    kind: Kind::Gauge,
    unit: None,
    help: "Database calls per request over the candidate window.",
};

/// `modelgate.receiver.accepted`.
pub static RECEIVER_ACCEPTED: Metric = Metric {
    otlp: "modelgate.receiver.accepted",
    prometheus: "modelgate_receiver_accepted",
    kind: Kind::Counter,
    unit: None,
    help: "Spans, log records and metric data points accepted by the receivers, by signal.",
};

/// `modelgate.receiver.refused`.
pub static RECEIVER_REFUSED: Metric = Metric {
    otlp: "modelgate.receiver.refused",
    prometheus: "modelgate_receiver_refused",
    kind: Kind::Counter,
    unit: None,
    help: "Spans, log records and data points refused, by reason (a payload that could not be decoded counts once).",
};

/// `modelgate.samples.dropped`.
pub static SAMPLES_DROPPED: Metric = Metric {
    otlp: "modelgate.samples.dropped",
    prometheus: "modelgate_samples_dropped",
    kind: Kind::Counter,
    unit: None,
    help: "Accepted samples left out of the judgement, by reason: late (older than aggregate.allowed_lateness), future (beyond aggregate.max_future), cumulative_reference (a cumulative histogram point kept as the reference of its stream's next one), repeated (a cumulative point no newer than its stream's last), stream_cap (extract.metrics.max_streams reached).",
};

/// `modelgate.forward.queue`.
pub static FORWARD_QUEUE: Metric = Metric {
    otlp: "modelgate.forward.queue",
    prometheus: "modelgate_forward_queue",
    kind: Kind::Gauge,
    unit: None,
    help: "Export requests waiting for the forward downstream or being sent.",
};

/// `modelgate.forward.sent`.
pub static FORWARD_SENT: Metric = Metric {
    otlp: "modelgate.forward.sent",
    prometheus: "modelgate_forward_sent",
    kind: Kind::Counter,
    unit: None,
    help: "Export requests delivered to the forward downstream.",
};

/// `modelgate.forward.refused`.
pub static FORWARD_REFUSED: Metric = Metric {
    otlp: "modelgate.forward.refused",
    prometheus: "modelgate_forward_refused",
    kind: Kind::Counter,
    unit: None,
    help: "Export requests refused to senders (retryable) because the forward queue was full.",
};

/// `modelgate.forward.dropped`.
pub static FORWARD_DROPPED: Metric = Metric {
    otlp: "modelgate.forward.dropped",
    prometheus: "modelgate_forward_dropped",
    kind: Kind::Counter,
    unit: None,
    help: "Accepted export requests the forwarder gave up on, by reason.",
};

/// `modelgate.series.active`.
pub static SERIES_ACTIVE: Metric = Metric {
    otlp: "modelgate.series.active",
    prometheus: "modelgate_series_active",
    kind: Kind::Gauge,
    unit: None,
    help: "Live series (service, endpoint, version).",
};

/// `modelgate.series.overflow`.
pub static SERIES_OVERFLOW: Metric = Metric {
    otlp: "modelgate.series.overflow",
    prometheus: "modelgate_series_overflow",
    kind: Kind::Counter,
    unit: None,
    help: "Samples routed to the overflow series because aggregate.max_series was reached.",
};

/// `modelgate.series.expired`.
pub static SERIES_EXPIRED: Metric = Metric {
    otlp: "modelgate.series.expired",
    prometheus: "modelgate_series_expired",
    kind: Kind::Counter,
    unit: None,
    help: "Series forgotten after idling past aggregate.series_idle_timeout.",
};

/// `modelgate.endpoints.overflow`.
pub static ENDPOINTS_OVERFLOW: Metric = Metric {
    otlp: "modelgate.endpoints.overflow",
    prometheus: "modelgate_endpoints_overflow",
    kind: Kind::Counter,
    unit: None,
    help: "Samples routed to their service's overflow endpoint because extract.endpoints.max_per_service was reached.",
};

/// `modelgate.metric.streams`.
pub static METRIC_STREAMS: Metric = Metric {
    otlp: "modelgate.metric.streams",
    prometheus: "modelgate_metric_streams",
    kind: Kind::Gauge,
    unit: None,
    help: "Cumulative histogram streams remembered (each one's last point, to measure the next one's increase).",
};

/// `modelgate.db.pending_dropped`.
pub static DB_PENDING_DROPPED: Metric = Metric {
    otlp: "modelgate.db.pending_dropped",
    prometheus: "modelgate_db_pending_dropped",
    kind: Kind::Counter,
    unit: None,
    help: "Database calls dropped because aggregate.max_pending_traces traces were waiting.",
};

/// `modelgate.db.unmatched`.
pub static DB_UNMATCHED: Metric = Metric {
    otlp: "modelgate.db.unmatched",
    prometheus: "modelgate_db_unmatched",
    kind: Kind::Counter,
    unit: None,
    help: "Database calls whose request span never arrived.",
};

/// `modelgate.names.truncated`.
pub static NAMES_TRUNCATED: Metric = Metric {
    otlp: "modelgate.names.truncated",
    prometheus: "modelgate_names_truncated",
    kind: Kind::Counter,
    unit: None,
    help: "Attribute values naming a series (service, endpoint, version, dimension) cut to extract.max_name_length.",
};

/// `modelgate.series.evicted`.
pub static SERIES_EVICTED: Metric = Metric {
    otlp: "modelgate.series.evicted",
    prometheus: "modelgate_series_evicted",
    kind: Kind::Counter,
    unit: None,
    help: "Idle or nearly empty series evicted at the series cap (or a service's share of it) to make room for a new one.",
};

/// `modelgate.connections.active`.
pub static CONNECTIONS_ACTIVE: Metric = Metric {
    otlp: "modelgate.connections.active",
    prometheus: "modelgate_connections_active",
    kind: Kind::Gauge,
    unit: None,
    help: "Client connections open on all listeners.",
};

/// `modelgate.connections.closed`.
pub static CONNECTIONS_CLOSED: Metric = Metric {
    otlp: "modelgate.connections.closed",
    prometheus: "modelgate_connections_closed",
    kind: Kind::Counter,
    unit: None,
    help: "Client connections closed by modelgate, by reason: idle (receiver.idle_timeout), stalled (receiver.write_timeout), evicted or refused (receiver.max_connections).",
};

/// `modelgate.receiver.bytes_in_flight`.
pub static BYTES_IN_FLIGHT: Metric = Metric {
    otlp: "modelgate.receiver.bytes_in_flight",
    prometheus: "modelgate_receiver_bytes_in_flight",
    kind: Kind::Gauge,
    unit: None,
    help: "Request bytes being read or held by the receivers (bounded by receiver.max_bytes_in_flight).",
};

/// `modelgate.memory.resident`.
pub static MEMORY_RESIDENT: Metric = Metric {
    otlp: "modelgate.memory.resident",
    prometheus: "modelgate_memory_resident",
    kind: Kind::Gauge,
    unit: None,
    help: "Resident memory of the process in bytes, as last measured for receiver.memory_limit.",
};

/// `modelgate.metrics.omitted`.
pub static METRICS_OMITTED: Metric = Metric {
    otlp: "modelgate.metrics.omitted",
    prometheus: "modelgate_metrics_omitted",
    kind: Kind::Counter,
    unit: None,
    help: "Latency histogram series left out of a /metrics exposition to keep it under admin.metrics_max_bytes.",
};

/// The catalogue entry of one of modelgate's own figures.
pub fn self_metric(metric: SelfMetric) -> &'static Metric {
    match metric {
        SelfMetric::ReceiverAccepted => &RECEIVER_ACCEPTED,
        SelfMetric::ReceiverRefused => &RECEIVER_REFUSED,
        SelfMetric::SamplesDropped => &SAMPLES_DROPPED,
        SelfMetric::ForwardQueue => &FORWARD_QUEUE,
        SelfMetric::ForwardSent => &FORWARD_SENT,
        SelfMetric::ForwardRefused => &FORWARD_REFUSED,
        SelfMetric::ForwardDropped => &FORWARD_DROPPED,
        SelfMetric::SeriesActive => &SERIES_ACTIVE,
        SelfMetric::SeriesOverflow => &SERIES_OVERFLOW,
        SelfMetric::SeriesExpired => &SERIES_EXPIRED,
        SelfMetric::EndpointsOverflow => &ENDPOINTS_OVERFLOW,
        SelfMetric::MetricStreams => &METRIC_STREAMS,
        SelfMetric::DbPendingDropped => &DB_PENDING_DROPPED,
        SelfMetric::DbUnmatched => &DB_UNMATCHED,
        SelfMetric::NamesTruncated => &NAMES_TRUNCATED,
        SelfMetric::SeriesEvicted => &SERIES_EVICTED,
        SelfMetric::ConnectionsActive => &CONNECTIONS_ACTIVE,
        SelfMetric::ConnectionsClosed => &CONNECTIONS_CLOSED,
        SelfMetric::BytesInFlight => &BYTES_IN_FLIGHT,
        SelfMetric::MemoryResident => &MEMORY_RESIDENT,
        SelfMetric::MetricsOmitted => &METRICS_OMITTED,
    }
}

/// Every metric, in the order `/metrics` lists them.
pub static ALL: [&Metric; 28] = [
    &REQUEST_DURATION,
    &REGRESSION_ACTIVE,
    &REGRESSION_RATIO,
    &REGRESSION_DIFFERENCE,
    &REGRESSION_VERDICT,
    &ALERTS,
    &DB_CALLS_PER_REQUEST,
    &RECEIVER_ACCEPTED,
    &RECEIVER_REFUSED,
    &SAMPLES_DROPPED,
    &FORWARD_QUEUE,
    &FORWARD_SENT,
    &FORWARD_REFUSED,
    &FORWARD_DROPPED,
    &SERIES_ACTIVE,
    &SERIES_OVERFLOW,
    &SERIES_EXPIRED,
    &ENDPOINTS_OVERFLOW,
    &METRIC_STREAMS,
    &DB_PENDING_DROPPED,
    &DB_UNMATCHED,
    &NAMES_TRUNCATED,
    &SERIES_EVICTED,
    &CONNECTIONS_ACTIVE,
    &CONNECTIONS_CLOSED,
    &BYTES_IN_FLIGHT,
    &MEMORY_RESIDENT,
    &METRICS_OMITTED,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_are_the_usual_translation_of_the_otlp_names() {
        for m in ALL {
            assert_eq!(m.prometheus, m.otlp.replace('.', "_"), "{m:?}");
            assert!(!m.help.is_empty(), "{m:?}");
        }
        let mut names: Vec<_> = ALL.iter().map(|m| m.otlp).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a name is listed twice");
    }

    #[test]
    fn every_self_metric_is_in_the_catalogue() {
        for s in SelfMetric::ALL {
            assert!(ALL.contains(&self_metric(s)), "{s:?}");
        }
    }
}
