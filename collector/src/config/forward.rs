//! `forward`: passing everything received on, unchanged, to the next OTLP hop.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{at_most, invalid, ConfigError, MAX_DURATION};

/// Most `forward.queue_items`: the queue is a channel of that many slots.
pub const MAX_FORWARD_QUEUE: usize = 1_000_000;

/// How forwarded export requests travel to the downstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardProtocol {
    /// OTLP/gRPC (`TraceService/Export`, `LogsService/Export`).
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies (`/v1/traces`, `/v1/logs`).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Forwarding what was received, unchanged, to a downstream OTLP endpoint,
/// so modelgate can sit anywhere in a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// Downstream base URL, `http://host:port`; unset: nothing is forwarded.
    pub endpoint: Option<String>,
    /// OTLP/gRPC or OTLP/HTTP (`grpc` or `http/protobuf`).
    pub protocol: ForwardProtocol,
    /// Export requests waiting for the downstream (one more may be in
    /// flight); when full, senders get the retryable `UNAVAILABLE` / `503`
    /// instead of their data being dropped here.
    pub queue_items: usize,
    /// First wait before a retry; doubles up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest wait between two retries (unless the downstream asks for more).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// An export request still undelivered this long after its first attempt
    /// is dropped (and counted), so a dead downstream cannot pin the queue.
    #[serde(with = "humantime_serde")]
    pub max_elapsed: Duration,
    /// Deadline of one export call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// On shutdown, how long the queue may take to drain; what is left then
    /// is counted as dropped.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        // The retry figures are the OpenTelemetry Collector exporters'.
        Self {
            endpoint: None,
            protocol: ForwardProtocol::Grpc,
            queue_items: 1000,
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl ForwardConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.endpoint {
            let uri: Result<axum::http::Uri, _> = endpoint.parse();
            match uri {
                Ok(uri)
                    if uri.scheme_str() == Some("http")
                        && uri.host().is_some_and(|h| !h.is_empty())
                        && uri.path_and_query().is_none_or(|p| p.as_str() == "/") => {}
                _ => {
                    return Err(invalid(
                        "forward.endpoint",
                        format!("must be http://host:port, got {endpoint:?}"),
                    ))
                }
            }
        }
        if !(1..=MAX_FORWARD_QUEUE).contains(&self.queue_items) {
            return Err(invalid(
                "forward.queue_items",
                format!(
                    "must be between 1 and {MAX_FORWARD_QUEUE}, got {}",
                    self.queue_items
                ),
            ));
        }
        for (key, value) in [
            ("forward.initial_backoff", self.initial_backoff),
            ("forward.max_backoff", self.max_backoff),
            ("forward.max_elapsed", self.max_elapsed),
            ("forward.timeout", self.timeout),
            ("forward.drain_timeout", self.drain_timeout),
        ] {
            at_most(key, value, MAX_DURATION)?;
        }
        for (key, d) in [
            ("forward.initial_backoff", self.initial_backoff),
            ("forward.timeout", self.timeout),
        ] {
            if d < Duration::from_millis(1) {
                return Err(invalid(key, "must be at least 1ms"));
            }
        }
        if self.max_backoff < self.initial_backoff {
            return Err(invalid(
                "forward.max_backoff",
                "must be at least forward.initial_backoff",
            ));
        }
        if self.max_elapsed < self.initial_backoff {
            return Err(invalid(
                "forward.max_elapsed",
                "must be at least forward.initial_backoff",
            ));
        }
        Ok(())
    }
}
