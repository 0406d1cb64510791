//! `receiver`: where OTLP arrives and how much of it is accepted.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// The OTLP receivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiverConfig {
    /// OTLP/gRPC listen address; also serves the `modelgate.v1.Query` API.
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP listen address (`/v1/traces`, `/v1/logs`; protobuf or JSON).
    pub http_listen: SocketAddr,
    /// Largest accepted export request after decompression, in bytes; larger
    /// ones get `RESOURCE_EXHAUSTED` (and are counted), as OTLP says.
    pub max_message_bytes: usize,
    /// Export batches waiting for the aggregator; when full, exporters get the
    /// retryable `UNAVAILABLE` instead of their data being dropped.
    pub queue_batches: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 4317)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 4318)),
            max_message_bytes: 4 * 1024 * 1024,
            queue_batches: 1024,
        }
    }
}

impl ReceiverConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_message_bytes < 1024 {
            return Err(invalid(
                "receiver.max_message_bytes",
                "must be at least 1024",
            ));
        }
        if self.queue_batches == 0 {
            return Err(invalid("receiver.queue_batches", "must be at least 1"));
        }
        Ok(())
    }
}
