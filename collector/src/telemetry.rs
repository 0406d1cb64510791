//! modelgate's own figures, as named internal events: what the receivers
//! accepted (per signal) and refused, and why; what the forwarder queued,
//! sent, refused and dropped; what limits the aggregator hit (series cap,
//! a service's endpoint cap, idle expiry, database calls that waited in
//! vain, cumulative metric streams).
//!
//! This is the one place self-telemetry lives (vector's `internal_events`
//! is the model): each internal event is one method that bumps its counter
//! and logs at debug level; the counters are atomics shared by the receiver
//! tasks, the forwarder and the pipeline task, read by the emitters through
//! [`Telemetry::readings`], named by [`crate::emit::catalogue`]. Relaxed
//! ordering: these are statistics, not synchronisation. Nothing here may
//! block or allocate (but [`Telemetry::readings`], for the emitters).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::signal::Signal;

/// Why spans (or whole requests) were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusedReason {
    /// The payload did not decode as an export request (one per request).
    InvalidPayload,
    /// The payload exceeded `receiver.max_message_bytes` (one per request).
    TooLarge,
    /// A span without timestamps or ending before it started.
    InvalidSpan,
    /// The aggregator's queue was full; the sender was told to retry.
    QueueFull,
    /// A log record the `extract.logs` mapping could not turn into a request.
    UnmappedLog,
    /// A span or log record whose duration is outside
    /// `extract.min_duration..=extract.max_duration`.
    ImplausibleDuration,
    /// A request whose body did not arrive within `receiver.body_timeout`
    /// (one per request).
    Timeout,
    /// A request refused because `receiver.max_bytes_in_flight` bytes of
    /// other requests were being read (one per request; retryable).
    BytesInFlight,
    /// A request refused because the process was over
    /// `receiver.memory_limit` (one per request; retryable).
    MemoryLimit,
    /// A histogram data point of a mapped metric that cannot be read as
    /// requests (buckets that do not add up, negative durations).
    InvalidPoint,
}

impl RefusedReason {
    /// Every reason, in counter order.
    pub const ALL: [RefusedReason; 10] = [
        RefusedReason::InvalidPayload,
        RefusedReason::TooLarge,
        RefusedReason::InvalidSpan,
        RefusedReason::QueueFull,
        RefusedReason::UnmappedLog,
        RefusedReason::ImplausibleDuration,
        RefusedReason::Timeout,
        RefusedReason::BytesInFlight,
        RefusedReason::MemoryLimit,
        RefusedReason::InvalidPoint,
    ];

    /// The `reason` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusedReason::InvalidPayload => "invalid_payload",
            RefusedReason::TooLarge => "too_large",
            RefusedReason::InvalidSpan => "invalid_span",
            RefusedReason::QueueFull => "queue_full",
            RefusedReason::UnmappedLog => "unmapped_log",
            RefusedReason::ImplausibleDuration => "implausible_duration",
            RefusedReason::Timeout => "timeout",
            RefusedReason::BytesInFlight => "bytes_in_flight",
            RefusedReason::MemoryLimit => "memory_limit",
            RefusedReason::InvalidPoint => "invalid_point",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Why the forwarder gave up on an export request it had accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DroppedReason {
    /// The downstream answered with a non-retryable failure.
    Rejected,
    /// Still undelivered after `forward.max_elapsed`, or the downstream
    /// asked to wait past it.
    Expired,
    /// Left in the queue when `forward.drain_timeout` ran out at shutdown.
    Shutdown,
}

impl DroppedReason {
    /// Every reason, in counter order.
    pub const ALL: [DroppedReason; 3] = [
        DroppedReason::Rejected,
        DroppedReason::Expired,
        DroppedReason::Shutdown,
    ];

    /// The `reason` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DroppedReason::Rejected => "rejected",
            DroppedReason::Expired => "expired",
            DroppedReason::Shutdown => "shutdown",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Why a sample was left out of the judgement after it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleDropped {
    /// Older than `aggregate.allowed_lateness` when it arrived.
    Late,
    /// Further in the future than `aggregate.max_future`.
    Future,
    /// A cumulative histogram point kept only as the reference its
    /// stream's next point is measured from: the first point of a stream
    /// that started before `aggregate.allowed_lateness`, or one whose
    /// counts went down or whose buckets changed without a new start time.
    CumulativeReference,
    /// A cumulative histogram point no newer than its stream's last one
    /// (a retry, a duplicate).
    Repeated,
    /// A cumulative histogram point of a new stream while
    /// `extract.metrics.max_streams` streams are remembered.
    StreamCap,
}

impl SampleDropped {
    /// Every reason, in counter order.
    pub const ALL: [SampleDropped; 5] = [
        SampleDropped::Late,
        SampleDropped::Future,
        SampleDropped::CumulativeReference,
        SampleDropped::Repeated,
        SampleDropped::StreamCap,
    ];

    /// The `reason` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            SampleDropped::Late => "late",
            SampleDropped::Future => "future",
            SampleDropped::CumulativeReference => "cumulative_reference",
            SampleDropped::Repeated => "repeated",
            SampleDropped::StreamCap => "stream_cap",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Why modelgate closed (or never served) a client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionClosed {
    /// No request in flight and no byte for `receiver.idle_timeout`.
    Idle,
    /// A write made no progress for `receiver.write_timeout` (a client that
    /// stopped reading).
    Stalled,
    /// The oldest idle connection, closed to make room for a new one at
    /// `receiver.max_connections`.
    Evicted,
    /// Refused at `receiver.max_connections`: every connection was busy.
    Refused,
}

impl ConnectionClosed {
    /// Every reason, in counter order.
    pub const ALL: [ConnectionClosed; 4] = [
        ConnectionClosed::Idle,
        ConnectionClosed::Stalled,
        ConnectionClosed::Evicted,
        ConnectionClosed::Refused,
    ];

    /// The `reason` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectionClosed::Idle => "idle",
            ConnectionClosed::Stalled => "stalled",
            ConnectionClosed::Evicted => "evicted",
            ConnectionClosed::Refused => "refused",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The forwarder's figures at one moment, in export requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardCounters {
    /// Waiting or being sent (`modelgate.forward.queue`).
    pub queue: u64,
    /// Delivered (`modelgate.forward.sent`).
    pub sent: u64,
    /// Refused to senders because the queue was full (`modelgate.forward.refused`).
    pub refused: u64,
    /// Given up on, by reason (`modelgate.forward.dropped`).
    pub dropped: Vec<(DroppedReason, u64)>,
}

/// One of modelgate's own figures (its entry in the metric catalogue is
/// [`crate::emit::catalogue::self_metric`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SelfMetric {
    /// Spans, log records and data points accepted, by [`Signal`].
    ReceiverAccepted,
    /// Refused, by [`RefusedReason`].
    ReceiverRefused,
    /// Export requests waiting for the downstream.
    ForwardQueue,
    /// Export requests delivered.
    ForwardSent,
    /// Export requests refused because the forward queue was full.
    ForwardRefused,
    /// Export requests given up on, by [`DroppedReason`].
    ForwardDropped,
    /// Samples left out of the judgement, by [`SampleDropped`].
    SamplesDropped,
    /// Live series.
    SeriesActive,
    /// Samples that went to the overflow series.
    SeriesOverflow,
    /// Series forgotten after idling.
    SeriesExpired,
    /// Samples that went to their service's overflow endpoint.
    EndpointsOverflow,
    /// Cumulative histogram streams remembered.
    MetricStreams,
    /// Database calls dropped: too many traces waiting.
    DbPendingDropped,
    /// Database calls that never met their request.
    DbUnmatched,
    /// Attribute values naming a series cut to `extract.max_name_length`.
    NamesTruncated,
    /// Series evicted to make room for a new one under the series cap.
    SeriesEvicted,
    /// Client connections open, all listeners.
    ConnectionsActive,
    /// Client connections closed by modelgate, by [`ConnectionClosed`].
    ConnectionsClosed,
    /// Request bytes being read or held by the receivers now.
    BytesInFlight,
    /// The process's resident memory, as last measured for
    /// `receiver.memory_limit`.
    MemoryResident,
    /// Series left out of a `/metrics` exposition by `admin.metrics_max_bytes`.
    MetricsOmitted,
}

impl SelfMetric {
    /// Every figure, in the order [`Telemetry::readings`] lists them.
    pub const ALL: [SelfMetric; 21] = [
        SelfMetric::ReceiverAccepted,
        SelfMetric::ReceiverRefused,
        SelfMetric::SamplesDropped,
        SelfMetric::ForwardQueue,
        SelfMetric::ForwardSent,
        SelfMetric::ForwardRefused,
        SelfMetric::ForwardDropped,
        SelfMetric::SeriesActive,
        SelfMetric::SeriesOverflow,
        SelfMetric::SeriesExpired,
        SelfMetric::EndpointsOverflow,
        SelfMetric::MetricStreams,
        SelfMetric::DbPendingDropped,
        SelfMetric::DbUnmatched,
        SelfMetric::NamesTruncated,
        SelfMetric::SeriesEvicted,
        SelfMetric::ConnectionsActive,
        SelfMetric::ConnectionsClosed,
        SelfMetric::BytesInFlight,
        SelfMetric::MemoryResident,
        SelfMetric::MetricsOmitted,
    ];
}

/// One value of a [`SelfMetric`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Which figure.
    pub metric: SelfMetric,
    /// Its one attribute (`reason`, `signal`), for the figures split by
    /// one: (key, value).
    pub label: Option<(&'static str, &'static str)>,
    /// The value.
    pub value: u64,
}

/// modelgate's own counters, shared; see the module docs.
#[derive(Debug, Default)]
pub struct Telemetry {
    accepted: [AtomicU64; Signal::ALL.len()],
    refused: [AtomicU64; RefusedReason::ALL.len()],
    forward_queue: AtomicU64,
    forward_sent: AtomicU64,
    forward_refused: AtomicU64,
    forward_dropped: [AtomicU64; DroppedReason::ALL.len()],
    samples_dropped: [AtomicU64; SampleDropped::ALL.len()],
    series_active: AtomicU64,
    series_overflow: AtomicU64,
    series_expired: AtomicU64,
    endpoints_overflow: AtomicU64,
    metric_streams: AtomicU64,
    db_pending_dropped: AtomicU64,
    db_unmatched: AtomicU64,
    names_truncated: AtomicU64,
    series_evicted: AtomicU64,
    connections_active: AtomicU64,
    connections_closed: [AtomicU64; ConnectionClosed::ALL.len()],
    bytes_in_flight: AtomicU64,
    memory_resident: AtomicU64,
    metrics_omitted: AtomicU64,
    /// The first long-lived task that ended abnormally, for `/healthz`.
    failure: OnceLock<String>,
}

impl Telemetry {
    /// Items of `signal` accepted (measured or deliberately ignored).
    pub fn accepted(&self, signal: Signal, n: u64) {
        self.accepted[signal.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Spans or log records (or requests, for payload-level reasons) refused.
    pub fn refused(&self, reason: RefusedReason, n: u64, detail: &str) {
        self.refused[reason.index()].fetch_add(n, Ordering::Relaxed);
        tracing::debug!(reason = reason.as_str(), count = n, detail, "refused");
    }

    /// Total accepted so far, every signal.
    pub fn accepted_total(&self) -> u64 {
        self.accepted
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    /// Total refused so far for `reason`.
    pub fn refused_total(&self, reason: RefusedReason) -> u64 {
        self.refused[reason.index()].load(Ordering::Relaxed)
    }

    /// An export request entered the forward queue.
    pub fn forward_queued(&self) {
        self.forward_queue.fetch_add(1, Ordering::Relaxed);
    }

    /// The downstream took an export request.
    pub fn forward_sent(&self) {
        self.forward_queue.fetch_sub(1, Ordering::Relaxed);
        self.forward_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// An export request was refused because the forward queue was full;
    /// the sender was told to retry.
    pub fn forward_refused(&self) {
        self.forward_refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("forward queue full: export refused");
    }

    /// `n` accepted export requests were given up on.
    pub fn forward_dropped(&self, reason: DroppedReason, n: u64) {
        self.forward_queue.fetch_sub(n, Ordering::Relaxed);
        self.forward_dropped[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// A sample was left out of the judgement for `reason`.
    pub fn sample_dropped(&self, reason: SampleDropped) {
        self.samples_dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The live series count changed to `n` (a series created, expired or
    /// restored).
    pub fn series_active(&self, n: usize) {
        self.series_active.store(n as u64, Ordering::Relaxed);
    }

    /// A sample went to the overflow series: `aggregate.max_series` is reached.
    pub fn series_overflowed(&self) {
        self.series_overflow.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` series idled past `aggregate.series_idle_timeout` and were forgotten.
    pub fn series_expired(&self, n: u64) {
        self.series_expired.fetch_add(n, Ordering::Relaxed);
        tracing::debug!(count = n, "series expired");
    }

    /// A sample went to its service's overflow endpoint:
    /// `extract.endpoints.max_per_service` is reached.
    pub fn endpoint_overflowed(&self) {
        self.endpoints_overflow.fetch_add(1, Ordering::Relaxed);
    }

    /// The number of cumulative histogram streams remembered changed to `n`.
    pub fn metric_streams(&self, n: usize) {
        self.metric_streams.store(n as u64, Ordering::Relaxed);
    }

    /// A database call was dropped: `aggregate.max_pending_traces` traces
    /// were already waiting for their request.
    pub fn db_pending_dropped(&self) {
        self.db_pending_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` database calls never met their request span (no trace id, or
    /// none arrived in time).
    pub fn db_unmatched(&self, n: u64) {
        self.db_unmatched.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` attribute values naming a series were cut to
    /// `extract.max_name_length`.
    pub fn names_truncated(&self, n: u64) {
        self.names_truncated.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` series were evicted under the series cap to make room.
    pub fn series_evicted(&self, n: u64) {
        self.series_evicted.fetch_add(n, Ordering::Relaxed);
        tracing::debug!(count = n, "series evicted");
    }

    /// A client connection opened.
    pub fn connection_opened(&self) {
        self.connections_active.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection ended (for whatever reason).
    pub fn connection_ended(&self) {
        self.connections_active.fetch_sub(1, Ordering::Relaxed);
    }

    /// modelgate closed a client's connection (or refused it) for `reason`.
    pub fn connection_closed(&self, reason: ConnectionClosed) {
        self.connections_closed[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Total connections closed so far for `reason`.
    pub fn connections_closed_total(&self, reason: ConnectionClosed) -> u64 {
        self.connections_closed[reason.index()].load(Ordering::Relaxed)
    }

    /// Request bytes held by the receivers now.
    pub fn bytes_in_flight(&self, n: usize) {
        self.bytes_in_flight.store(n as u64, Ordering::Relaxed);
    }

    /// The resident memory last measured.
    pub fn memory_resident(&self, bytes: u64) {
        self.memory_resident.store(bytes, Ordering::Relaxed);
    }

    /// `n` series were left out of a `/metrics` exposition.
    pub fn metrics_omitted(&self, n: u64) {
        self.metrics_omitted.fetch_add(n, Ordering::Relaxed);
    }

    /// A long-lived task (the pipeline, the forwarder, a server) ended
    /// abnormally: logged, and kept for `/healthz` (the first one wins).
    pub fn task_failed(&self, task: &str, why: &str) {
        tracing::error!(task, why, "a long-lived task failed: shutting down");
        let _ = self.failure.set(format!("the {task} task failed: {why}"));
    }

    /// What failed, if anything did (see [`Telemetry::task_failed`]).
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Every figure now, in [`SelfMetric::ALL`] order (figures split by
    /// reason once per reason): what both exporters show.
    pub fn readings(&self) -> Vec<Reading> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let one = |metric, value| Reading {
            metric,
            label: None,
            value,
        };
        let by_reason = |metric, reason, value| Reading {
            metric,
            label: Some(("reason", reason)),
            value,
        };
        let forward = self.forward();
        let mut out = Vec::with_capacity(SelfMetric::ALL.len() + 16);
        out.extend(Signal::ALL.iter().map(|s| Reading {
            metric: SelfMetric::ReceiverAccepted,
            label: Some(("signal", s.as_str())),
            value: load(&self.accepted[s.index()]),
        }));
        out.extend(RefusedReason::ALL.iter().map(|r| {
            by_reason(
                SelfMetric::ReceiverRefused,
                r.as_str(),
                self.refused_total(*r),
            )
        }));
        out.extend(SampleDropped::ALL.iter().map(|r| {
            by_reason(
                SelfMetric::SamplesDropped,
                r.as_str(),
                load(&self.samples_dropped[r.index()]),
            )
        }));
        out.push(one(SelfMetric::ForwardQueue, forward.queue));
        out.push(one(SelfMetric::ForwardSent, forward.sent));
        out.push(one(SelfMetric::ForwardRefused, forward.refused));
        out.extend(
            forward
                .dropped
                .iter()
                .map(|(r, n)| by_reason(SelfMetric::ForwardDropped, r.as_str(), *n)),
        );
        out.push(one(SelfMetric::SeriesActive, load(&self.series_active)));
        out.push(one(SelfMetric::SeriesOverflow, load(&self.series_overflow)));
        out.push(one(SelfMetric::SeriesExpired, load(&self.series_expired)));
        out.push(one(
            SelfMetric::EndpointsOverflow,
            load(&self.endpoints_overflow),
        ));
        out.push(one(SelfMetric::MetricStreams, load(&self.metric_streams)));
        out.push(one(
            SelfMetric::DbPendingDropped,
            load(&self.db_pending_dropped),
        ));
        out.push(one(SelfMetric::DbUnmatched, load(&self.db_unmatched)));
        out.push(one(SelfMetric::NamesTruncated, load(&self.names_truncated)));
        out.push(one(SelfMetric::SeriesEvicted, load(&self.series_evicted)));
        out.push(one(
            SelfMetric::ConnectionsActive,
            load(&self.connections_active),
        ));
        out.extend(ConnectionClosed::ALL.iter().map(|r| Reading {
            metric: SelfMetric::ConnectionsClosed,
            label: Some(("reason", r.as_str())),
            value: load(&self.connections_closed[r.index()]),
        }));
        out.push(one(SelfMetric::BytesInFlight, load(&self.bytes_in_flight)));
        out.push(one(SelfMetric::MemoryResident, load(&self.memory_resident)));
        out.push(one(SelfMetric::MetricsOmitted, load(&self.metrics_omitted)));
        out
    }

    /// The value of a figure now, summed over its attribute (tests and
    /// benchmarks).
    pub fn reading(&self, metric: SelfMetric) -> u64 {
        self.readings()
            .iter()
            .filter(|r| r.metric == metric)
            .map(|r| r.value)
            .sum()
    }

    /// The forwarder's counters now.
    pub fn forward(&self) -> ForwardCounters {
        ForwardCounters {
            queue: self.forward_queue.load(Ordering::Relaxed),
            sent: self.forward_sent.load(Ordering::Relaxed),
            refused: self.forward_refused.load(Ordering::Relaxed),
            dropped: DroppedReason::ALL
                .iter()
                .map(|r| (*r, self.forward_dropped[r.index()].load(Ordering::Relaxed)))
                .collect(),
        }
    }
}
