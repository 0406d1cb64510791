//! Receive: where OTLP enters modelgate.
//!
//! - [`grpc`]: OTLP/gRPC `TraceService`, `LogsService` and `MetricsService`
//!   on `receiver.grpc_listen`.
//! - [`http`]: OTLP/HTTP `/v1/traces`, `/v1/logs` and `/v1/metrics` on
//!   `receiver.http_listen`, protobuf or JSON.
//!
//! Both read an export the same way ([`Receiver::accept`]): protobuf
//! traces with [`crate::extract::wire::scan`], everything else decoded and
//! passed to its extractor ([`crate::extract`], [`crate::extract::logs`],
//! [`crate::extract::metrics`]); they hand the samples to the pipeline
//! without waiting ([`hand_over`]), and with forwarding on queue the
//! accepted export for [`crate::forward`] as the bytes received. Each
//! signal gets the same limits, refusals and counters. The receivers are
//! the only place where protocol status codes are made. They keep no state
//! of their own beyond a per-thread cache of interned series names
//! (`with_interner`).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{ExtractConfig, ReceiverConfig};
use crate::extract::logs::extract_logs;
use crate::extract::metrics::extract_metrics;
use crate::extract::{extract, wire, ExtractReport, Interner, Sample};
use crate::forward::{ForwardError, ForwardHandle};
use crate::pipeline::{IngestError, PipelineHandle};
use crate::signal::Signal;
use crate::telemetry::{RefusedReason, Telemetry};

pub mod grpc;
pub mod http;

/// About the fewest bytes a span of an instrumented request takes on the
/// wire (they take 300 to 1,000), to size a request's sample list up front;
/// a request of smaller spans only grows its list a few times more.
const SPAN_BYTES_AT_LEAST: usize = 256;

thread_local! {
    /// Per thread, so no lock is ever taken on the receive path.
    static INTERNER: RefCell<Interner> = RefCell::new(Interner::default());
}

/// Runs `read` with this thread's interner: every receiver names its
/// samples' series through it, so a span of a known series allocates
/// nothing.
pub(crate) fn with_interner<T>(read: impl FnOnce(&mut Interner) -> T) -> T {
    INTERNER.with(|interner| read(&mut interner.borrow_mut()))
}

/// Reads an export's protobuf bytes into samples without decoding them
/// ([`wire::scan`]): the fast path of the gRPC and the OTLP/HTTP protobuf
/// receivers.
pub(crate) fn read_traces(
    bytes: &[u8],
    config: &ExtractConfig,
) -> Result<(Vec<Sample>, ExtractReport), wire::WireError> {
    with_interner(|interner| {
        // Sized so that the list rarely grows while it is filled.
        let mut samples = Vec::with_capacity(bytes.len() / SPAN_BYTES_AT_LEAST);
        let report = wire::scan(bytes, config, |s| samples.push(interner.intern(s)))?;
        Ok((samples, report))
    })
}

/// How a body is encoded; the answer is encoded the same way. gRPC is
/// always protobuf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Binary protobuf.
    Protobuf,
    /// OTLP/JSON.
    Json,
}

impl Encoding {
    fn decode<T: prost::Message + Default + DeserializeOwned>(
        self,
        body: &[u8],
    ) -> Result<T, String> {
        match self {
            Encoding::Protobuf => T::decode(body).map_err(|e| format!("invalid protobuf: {e}")),
            Encoding::Json => {
                serde_json::from_slice(body).map_err(|e| format!("invalid OTLP/JSON: {e}"))
            }
        }
    }

    /// `message` in this encoding.
    pub(crate) fn encode<T: prost::Message + Serialize>(self, message: &T) -> Vec<u8> {
        match self {
            Encoding::Protobuf => message.encode_to_vec(),
            // Serializing a generated OTLP message cannot fail; an empty
            // object is still a valid (empty) answer.
            Encoding::Json => serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec()),
        }
    }
}

/// What every receiver shares: where samples go, how they are read, where
/// accepted exports are forwarded.
#[derive(Debug)]
pub struct Receiver {
    pipeline: PipelineHandle,
    extract: ExtractConfig,
    limits: Limits,
    forward: Option<ForwardHandle>,
}

/// Why an export was not accepted; each protocol answers it in its own
/// terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The payload does not decode (counted as `invalid_payload`).
    Invalid(String),
    /// The aggregation queue is full: retry.
    QueueFull,
    /// The forward queue is full: retry after [`crate::forward::REFUSAL_RETRY_DELAY`].
    ForwardFull,
    /// Shutting down.
    Closed,
}

impl Refused {
    /// The sentence for the sender.
    pub(crate) fn message(&self) -> &str {
        match self {
            Refused::Invalid(message) => message,
            Refused::QueueFull => {
                "modelgate's aggregation queue is full (receiver.queue_batches); retry with backoff"
            }
            Refused::ForwardFull => {
                "modelgate's forward queue is full (forward.queue_items); retry with backoff"
            }
            Refused::Closed => "modelgate is shutting down",
        }
    }
}

impl Receiver {
    /// A receiver handing samples to `pipeline`, forwarding to `forward`.
    pub fn new(
        pipeline: PipelineHandle,
        extract: ExtractConfig,
        limits: Limits,
        forward: Option<ForwardHandle>,
    ) -> Self {
        Self {
            pipeline,
            extract,
            limits,
            forward,
        }
    }

    /// What every request is held to.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The counters refusals go to.
    pub(crate) fn telemetry(&self) -> &crate::telemetry::Telemetry {
        self.pipeline.telemetry()
    }

    /// One export of `signal` (`body` after gunzip): read, handed to the
    /// pipeline, queued for forwarding, and answered in `encoding`.
    pub(crate) fn accept(
        &self,
        signal: Signal,
        encoding: Encoding,
        body: Bytes,
    ) -> Result<Vec<u8>, Refused> {
        let forwarding = self.forward.is_some();
        let (samples, report, reencoded) = read(signal, encoding, &body, &self.extract, forwarding)
            .map_err(|message| {
                self.telemetry()
                    .refused(RefusedReason::InvalidPayload, 1, &message);
                Refused::Invalid(message)
            })?;
        // The slot is taken first and filled only once the pipeline took
        // the samples, so an export is forwarded exactly when it is
        // accepted.
        let slot = self
            .forward
            .as_ref()
            .map(ForwardHandle::reserve)
            .transpose()
            .map_err(|e| match e {
                ForwardError::Full => Refused::ForwardFull,
                ForwardError::Closed => Refused::Closed,
            })?;
        let partial = hand_over(&self.pipeline, signal, samples, report).map_err(|e| match e {
            IngestError::Full => Refused::QueueFull,
            IngestError::Closed => Refused::Closed,
        })?;
        if let Some(slot) = slot {
            slot.send(signal, reencoded.map_or(body, Bytes::from));
        }
        Ok(answer(signal, partial, encoding))
    }
}

/// What reading a body made of it: the samples, the report, and the
/// protobuf bytes to forward when they are not the body itself (`None`).
type Read = (Vec<Sample>, ExtractReport, Option<Vec<u8>>);

/// Reads one export of `signal`: protobuf traces scanned on the wire,
/// everything else decoded in full; with `forwarding`, the protobuf
/// encoding of a JSON body for the next hop.
fn read(
    signal: Signal,
    encoding: Encoding,
    body: &[u8],
    config: &ExtractConfig,
    forwarding: bool,
) -> Result<Read, String> {
    match (signal, encoding) {
        (Signal::Traces, Encoding::Protobuf) => {
            let (samples, report) = read_traces(body, config).map_err(|e| e.to_string())?;
            Ok((samples, report, None))
        }
        (Signal::Traces, Encoding::Json) => decoded(encoding, body, config, forwarding, extract),
        (Signal::Logs, _) => decoded(encoding, body, config, forwarding, extract_logs),
        (Signal::Metrics, _) => decoded(encoding, body, config, forwarding, extract_metrics),
    }
}

/// Decodes `body` fully and extracts with `extract`.
fn decoded<Req: prost::Message + Default + DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
    config: &ExtractConfig,
    forwarding: bool,
    extract: impl Fn(&Req, &ExtractConfig, &mut Interner, &mut Vec<Sample>) -> ExtractReport,
) -> Result<Read, String> {
    let request: Req = encoding.decode(body)?;
    let mut samples = Vec::new();
    let report = with_interner(|interner| extract(&request, config, interner, &mut samples));
    let reencoded = (forwarding && encoding == Encoding::Json).then(|| request.encode_to_vec());
    Ok((samples, report, reencoded))
}

/// The answer to an accepted export of `signal`, in `encoding`: empty, or
/// its `partial_success`.
fn answer(signal: Signal, partial: Option<Partial>, encoding: Encoding) -> Vec<u8> {
    let (rejected, error_message) = partial.map_or((0, String::new()), |p| (p.rejected, p.message));
    let some = rejected > 0 || !error_message.is_empty();
    match signal {
        Signal::Traces => encoding.encode(&ExportTraceServiceResponse {
            partial_success: some.then_some(ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message,
            }),
        }),
        Signal::Logs => encoding.encode(&ExportLogsServiceResponse {
            partial_success: some.then_some(ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message,
            }),
        }),
        Signal::Metrics => encoding.encode(&ExportMetricsServiceResponse {
            partial_success: some.then_some(ExportMetricsPartialSuccess {
                rejected_data_points: rejected,
                error_message,
            }),
        }),
    }
}

/// Why a request body cannot be read (either protocol).
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Over `receiver.max_message_bytes`, compressed or not.
    TooLarge,
    /// Not readable: broken off, or not the encoding it says.
    Invalid(String),
    /// Not whole within `receiver.body_timeout`.
    Timeout,
    /// Reading it would take the receivers past
    /// `receiver.max_bytes_in_flight` (retryable).
    InFlight,
}

/// What every receiver enforces on a request, shared by all of them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `receiver.max_message_bytes`.
    pub max_message_bytes: usize,
    /// `receiver.body_timeout`.
    pub body_timeout: Duration,
    /// The bytes all requests hold while they are read.
    pub in_flight: Arc<BytesInFlight>,
    /// The soft memory limit.
    pub memory: Arc<MemoryLimit>,
}

impl Limits {
    /// The limits of `config`, counted in `telemetry`.
    pub fn new(config: &ReceiverConfig, telemetry: Arc<Telemetry>) -> Self {
        Self {
            max_message_bytes: config.max_message_bytes,
            body_timeout: config.body_timeout,
            in_flight: Arc::new(BytesInFlight {
                held: AtomicUsize::new(0),
                max: config.max_bytes_in_flight,
                telemetry: telemetry.clone(),
            }),
            memory: Arc::new(MemoryLimit {
                limit: config.memory_limit.unwrap_or_else(default_memory_limit),
                shedding: AtomicBool::new(false),
                telemetry,
            }),
        }
    }
}

/// Request bytes held by the receivers, bounded by
/// `receiver.max_bytes_in_flight`: each request reserves what it reads
/// (and what it inflates) and gives it back when it is answered.
#[derive(Debug)]
pub struct BytesInFlight {
    held: AtomicUsize,
    max: usize,
    telemetry: Arc<Telemetry>,
}

impl BytesInFlight {
    /// `n` bytes reserved, or `None` when they would go over the bound.
    pub fn reserve(self: &Arc<Self>, n: usize) -> Option<Reservation> {
        let mut reservation = Reservation {
            pool: self.clone(),
            held: 0,
        };
        reservation.grow(n).then_some(reservation)
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// Bytes one request holds in [`BytesInFlight`]; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    pool: Arc<BytesInFlight>,
    held: usize,
}

impl Reservation {
    /// Holds `n` more bytes; `false` (nothing more held) over the bound.
    pub fn grow(&mut self, n: usize) -> bool {
        let pool = &self.pool;
        let took = pool
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(n).filter(|total| *total <= pool.max)
            });
        match took {
            Ok(before) => {
                self.held += n;
                pool.telemetry.bytes_in_flight(before + n);
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let before = self.pool.held.fetch_sub(self.held, Ordering::Relaxed);
        self.pool
            .telemetry
            .bytes_in_flight(before.saturating_sub(self.held));
    }
}

/// The soft memory limit (`receiver.memory_limit`): measured every
/// [`MEMORY_CHECK_INTERVAL`] by [`MemoryLimit::watch`]; while the process
/// is over it (until it is back under 90% of it) the receivers refuse
/// exports with the retryable answer.
#[derive(Debug)]
pub struct MemoryLimit {
    limit: u64,
    shedding: AtomicBool,
    telemetry: Arc<Telemetry>,
}

/// How often resident memory is read, as the Collector's `memory_limiter`
/// does by default (its `check_interval` is 1s; a quarter of it here).
pub const MEMORY_CHECK_INTERVAL: Duration = Duration::from_millis(250);

impl MemoryLimit {
    /// Whether exports are being refused now.
    pub fn shedding(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }

    /// The limit in force, bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Measures resident memory until `stop`, shedding above the limit.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(MEMORY_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let Some(resident) = resident_bytes() else {
                return;
            };
            self.telemetry.memory_resident(resident);
            let shedding = self.shedding();
            if !shedding && resident > self.limit {
                self.shedding.store(true, Ordering::Relaxed);
                tracing::warn!(
                    resident,
                    limit = self.limit,
                    "over receiver.memory_limit: refusing exports with the retryable answer"
                );
            } else if shedding && resident < self.limit / 10 * 9 {
                self.shedding.store(false, Ordering::Relaxed);
                tracing::info!(
                    resident,
                    limit = self.limit,
                    "back under receiver.memory_limit: accepting exports again"
                );
            }
        }
    }
}

/// The process's resident memory (`VmRSS` of `/proc/self/status`), bytes.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The default `receiver.memory_limit`: 80% of the cgroup's memory limit
/// or of the machine's memory, whichever is less (no limit known: never).
fn default_memory_limit() -> u64 {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kib| kib * 1024)
    });
    match (cgroup, machine) {
        (Some(a), Some(b)) => a.min(b) / 5 * 4,
        (Some(a), None) | (None, Some(a)) => a / 5 * 4,
        (None, None) => u64::MAX,
    }
}

/// `gzipped` inflated, every member of it (RFC 1952 allows several, one
/// after the other, and senders that append do send them), never past
/// `limit` bytes (a small gzip bomb stays small).
pub(crate) fn gunzip(gzipped: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    use std::io::Read as _;
    let mut out = Vec::new();
    #[allow(
        clippy::disallowed_methods,
        reason = "the one decoder, bounded by `take(limit + 1)` here"
    )]
    let decoder = flate2::read::MultiGzDecoder::new(gzipped);
    let read = decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Invalid(format!("invalid gzip body: {e}")))?;
    if read > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(out)
}

/// The `partial_success` of an export: how many spans, log records or data
/// points could not be used, and the first reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// Rejected items.
    pub rejected: i64,
    /// Why, for the sender.
    pub message: String,
}

/// Hands one export's samples to the pipeline and counts what extraction
/// made of it, as items of `signal`. A full queue refuses the whole export
/// (the sender retries it), so nothing is counted as accepted then.
pub fn hand_over(
    pipeline: &PipelineHandle,
    signal: Signal,
    samples: Vec<Sample>,
    report: ExtractReport,
) -> Result<Option<Partial>, IngestError> {
    if !samples.is_empty() {
        pipeline.try_ingest(samples)?;
    }
    let telemetry = pipeline.telemetry();
    telemetry.accepted(signal, report.samples + report.ignored);
    if report.truncated > 0 {
        telemetry.names_truncated(report.truncated);
    }
    Ok((report.rejected > 0).then(|| {
        let implausible = report.implausible.min(report.rejected);
        if implausible > 0 {
            telemetry.refused(
                RefusedReason::ImplausibleDuration,
                implausible,
                &report.message,
            );
        }
        if report.rejected > implausible {
            telemetry.refused(
                unusable(signal),
                report.rejected - implausible,
                &report.message,
            );
        }
        Partial {
            rejected: i64::try_from(report.rejected).unwrap_or(i64::MAX),
            message: report.message,
        }
    }))
}

/// The reason an item of `signal` that cannot be used is refused under.
const fn unusable(signal: Signal) -> RefusedReason {
    match signal {
        Signal::Traces => RefusedReason::InvalidSpan,
        Signal::Logs => RefusedReason::UnmappedLog,
        Signal::Metrics => RefusedReason::InvalidPoint,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_gzip_member_is_read_within_the_limit() {
        let mut body = gzip(b"first member, ");
        body.extend(gzip(b"second member"));
        assert_eq!(
            gunzip(&body, 1024).unwrap(),
            b"first member, second member".to_vec()
        );
        // The limit counts the members together.
        assert!(matches!(gunzip(&body, 20), Err(BodyError::TooLarge)));
        // A truncated second member is an error, not a silent half.
        let cut = &body[..body.len() - 4];
        assert!(matches!(gunzip(cut, 1024), Err(BodyError::Invalid(_))));
    }

    #[test]
    fn bytes_in_flight_are_bounded_and_given_back() {
        let telemetry = Arc::new(Telemetry::default());
        let config = ReceiverConfig {
            max_message_bytes: 1024,
            max_bytes_in_flight: 4096,
            ..ReceiverConfig::default()
        };
        let limits = Limits::new(&config, telemetry);
        let mut a = limits.in_flight.reserve(3000).unwrap();
        assert!(limits.in_flight.reserve(2000).is_none());
        assert!(!a.grow(2000));
        assert!(a.grow(1000));
        assert_eq!(limits.in_flight.held(), 4000);
        drop(a);
        assert_eq!(limits.in_flight.held(), 0);
        assert!(limits.in_flight.reserve(4096).is_some());
    }
}
