//! `receiver`: where OTLP arrives, how much of it is accepted, and the
//! connection and memory limits of every listener (the admin port's too).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{at_least, at_most, invalid, ConfigError};

/// Largest `receiver.max_message_bytes`: a gRPC message declares its length
/// in 32 bits, and one export of 256 MiB is far past any sender's batch.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Most `receiver.queue_batches`: the queue is a channel of that many slots.
pub const MAX_QUEUE_BATCHES: usize = 1_000_000;

/// The smallest `receiver.memory_limit`: below it the collector's own
/// working set (runtime, buffers, a few series) already sheds every export.
pub const MIN_MEMORY_LIMIT: u64 = 64 << 20;

/// The OTLP receivers and the limits every listener enforces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiverConfig {
    /// OTLP/gRPC listen address; also serves the `modelgate.v1.Query` API.
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP listen address (`/v1/traces`, `/v1/logs`; protobuf or JSON).
    pub http_listen: SocketAddr,
    /// Largest accepted export request after decompression, in bytes; larger
    /// ones get `RESOURCE_EXHAUSTED` (and are counted), as OTLP says. At
    /// most 256 MiB.
    pub max_message_bytes: usize,
    /// Export batches waiting for the aggregator; when full, exporters get the
    /// retryable `UNAVAILABLE` instead of their data being dropped.
    pub queue_batches: usize,
    /// Request bytes (as received, and inflated) all requests together may
    /// hold while they are read; a request that would go over gets the
    /// retryable `UNAVAILABLE` / `503`, so a flood of unfinished bodies
    /// cannot pin memory. At least twice `max_message_bytes` (one gzipped
    /// export and its inflated copy).
    pub max_bytes_in_flight: usize,
    /// The request line and headers (HTTP/1) must arrive within this; it is
    /// also the longest a kept-alive HTTP/1 connection waits for its next
    /// request.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// An export's body must have arrived whole within this after its
    /// headers; a slower one is answered `408` / `DEADLINE_EXCEEDED` and
    /// counted (`reason="timeout"`).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// A connection with no request in flight and no byte received for this
    /// long is closed (and counted), so idle connections do not pile up.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A write (an answer, a `/metrics` page) that makes no progress for this
    /// long closes its connection (and is counted): a client that stopped
    /// reading cannot pin the memory of what is sent to it.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Connections open at once over all three listeners. At the limit a new
    /// connection takes the place of the one idle longest; when none is
    /// idle it is refused (both counted and logged). Unset: three quarters
    /// of the process's open-file limit, so the collector never runs out of
    /// descriptors for its own files and its downstream.
    pub max_connections: Option<usize>,
    /// Requests one HTTP/2 (gRPC) connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Resident memory above which the receivers shed load: every export is
    /// answered with the retryable `UNAVAILABLE` / `503` (and counted,
    /// `reason="memory_limit"`) until the process is back under 90% of it,
    /// as the OpenTelemetry Collector's `memory_limiter` does. Unset: 80% of
    /// the cgroup's memory limit, or of the machine's memory. Linux only
    /// (read from `/proc/self/statm`); elsewhere nothing is shed.
    pub memory_limit: Option<u64>,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 4317)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 4318)),
            max_message_bytes: 4 * 1024 * 1024,
            queue_batches: 1024,
            max_bytes_in_flight: 64 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_connections: None,
            max_concurrent_streams: 100,
            memory_limit: None,
        }
    }
}

impl ReceiverConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1024..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return Err(invalid(
                "receiver.max_message_bytes",
                format!(
                    "must be between 1024 and {MAX_MESSAGE_BYTES} (256 MiB), got {}",
                    self.max_message_bytes
                ),
            ));
        }
        if !(1..=MAX_QUEUE_BATCHES).contains(&self.queue_batches) {
            return Err(invalid(
                "receiver.queue_batches",
                format!(
                    "must be between 1 and {MAX_QUEUE_BATCHES}, got {}",
                    self.queue_batches
                ),
            ));
        }
        let in_flight_most = 64 * MAX_MESSAGE_BYTES;
        if self.max_bytes_in_flight / 2 < self.max_message_bytes
            || self.max_bytes_in_flight > in_flight_most
        {
            return Err(invalid(
                "receiver.max_bytes_in_flight",
                format!(
                    "must be between twice receiver.max_message_bytes ({}) and {in_flight_most}, got {}",
                    self.max_message_bytes.saturating_mul(2),
                    self.max_bytes_in_flight
                ),
            ));
        }
        let hour = Duration::from_secs(3600);
        for (key, value, least) in [
            (
                "receiver.header_timeout",
                self.header_timeout,
                Duration::from_millis(100),
            ),
            (
                "receiver.body_timeout",
                self.body_timeout,
                Duration::from_millis(100),
            ),
            (
                "receiver.write_timeout",
                self.write_timeout,
                Duration::from_millis(100),
            ),
            (
                "receiver.idle_timeout",
                self.idle_timeout,
                Duration::from_secs(1),
            ),
        ] {
            at_least(key, value, least)?;
            at_most(key, value, hour)?;
        }
        if let Some(n) = self.max_connections {
            if !(3..=1_000_000).contains(&n) {
                return Err(invalid(
                    "receiver.max_connections",
                    format!("must be between 3 and 1000000 (or unset), got {n}"),
                ));
            }
        }
        if !(1..=10_000).contains(&self.max_concurrent_streams) {
            return Err(invalid(
                "receiver.max_concurrent_streams",
                format!(
                    "must be between 1 and 10000, got {}",
                    self.max_concurrent_streams
                ),
            ));
        }
        if self.memory_limit.is_some_and(|m| m < MIN_MEMORY_LIMIT) {
            return Err(invalid(
                "receiver.memory_limit",
                format!("must be at least {MIN_MEMORY_LIMIT} bytes (64 MiB), or unset"),
            ));
        }
        Ok(())
    }
}
