//! `emit`: where the findings go besides the admin port (OTLP push, the
//! Prometheus histogram's buckets).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{at_most, invalid, ConfigError};

/// Where the findings go besides the admin port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmitConfig {
    /// OTLP/gRPC endpoint for metrics push, e.g. `http://127.0.0.1:4317`;
    /// unset: no push (Prometheus scrape only).
    pub otlp_endpoint: Option<String>,
    /// How often metrics are pushed.
    #[serde(with = "humantime_serde")]
    pub otlp_interval: Duration,
    /// Upper bounds of the Prometheus latency histogram buckets, in
    /// milliseconds, ascending (OTLP uses an exponential histogram).
    pub histogram_buckets_ms: Vec<f64>,
}

impl Default for EmitConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_interval: Duration::from_secs(10),
            histogram_buckets_ms: vec![
                5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0, 750.0, 1000.0, 2500.0,
                5000.0, 10000.0,
            ],
        }
    }
}

impl EmitConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let buckets = &self.histogram_buckets_ms;
        if buckets.is_empty()
            || buckets.iter().any(|b| !(b.is_finite() && *b > 0.0))
            || buckets.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(invalid(
                "emit.histogram_buckets_ms",
                "must be positive, finite and strictly ascending",
            ));
        }
        if self.otlp_interval < Duration::from_millis(100) {
            return Err(invalid("emit.otlp_interval", "must be at least 100ms"));
        }
        at_most(
            "emit.otlp_interval",
            self.otlp_interval,
            Duration::from_secs(86_400),
        )?;
        if buckets.len() > 64 {
            return Err(invalid(
                "emit.histogram_buckets_ms",
                format!("must list at most 64 bounds, got {}", buckets.len()),
            ));
        }
        Ok(())
    }
}
