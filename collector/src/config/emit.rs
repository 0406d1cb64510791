//! `emit`: where the findings go besides the admin port (OTLP push), and
//! what the Prometheus exposition holds (the histogram's buckets, the
//! outcome split, the verdict state set).

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
    /// How much of each series `/metrics` shows: the scrape's size is
    /// series x what is shown of each (see the README's "Prometheus size").
    pub prometheus: PrometheusConfig,
}

/// Whether the latency histogram of `/metrics` is split by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeSplit {
    /// One histogram per outcome a series has seen (`outcome="ok"`,
    /// `"error"`, `"timeout"`): error and timeout rates in PromQL, at up
    /// to three times the lines.
    #[default]
    Split,
    /// One histogram per series over every outcome, with no `outcome`
    /// attribute (the judge still tells outcomes apart).
    Merged,
}

/// Which lines of the `modelgate_regression_verdict` state set are shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictSet {
    /// Only the current verdict's line, valued 1: a third of the lines;
    /// `modelgate_regression_verdict{verdict="regression"} == 1` still
    /// selects what it selected, `... == 0` no longer exists.
    #[default]
    Current,
    /// The whole OpenMetrics state set: a line per verdict (pass,
    /// regression, inconclusive), 1 for the current one, 0 for the others.
    All,
}

/// What `/metrics` shows of each series (OTLP push is not affected).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrometheusConfig {
    /// `split` (default): a latency histogram per outcome; `merged`: one
    /// per series.
    pub outcomes: OutcomeSplit,
    /// `current` (default): one `modelgate_regression_verdict` line per
    /// judged rule; `all`: the three-line state set.
    pub verdicts: VerdictSet,
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
            prometheus: PrometheusConfig::default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn prometheus_trimming_is_read_and_a_bad_value_names_its_key() {
        let config: Config = serde_yaml_ng::from_str(
            "emit:\n  prometheus:\n    outcomes: merged\n    verdicts: all\n",
        )
        .unwrap();
        assert_eq!(
            config.emit.prometheus,
            PrometheusConfig {
                outcomes: OutcomeSplit::Merged,
                verdicts: VerdictSet::All,
            }
        );
        assert_eq!(
            Config::default().emit.prometheus,
            PrometheusConfig {
                outcomes: OutcomeSplit::Split,
                verdicts: VerdictSet::Current,
            }
        );
        let path = std::env::temp_dir().join(format!(
            "modelgate-prometheus-config-{}.yaml",
            std::process::id()
        ));
        std::fs::write(&path, "emit:\n  prometheus:\n    verdicts: some\n").unwrap();
        let error = Config::load(Some(&path)).unwrap_err().to_string();
        let _ = std::fs::remove_file(&path);
        assert!(
            error.contains("emit.prometheus.verdicts") && error.contains("some"),
            "{error}"
        );
    }
}
