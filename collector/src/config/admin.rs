//! `admin`: the admin HTTP port and the dashboard's history limits.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{at_most, invalid, ConfigError};

/// The admin HTTP port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address of the dashboard (`/`), /metrics, /api/v1/*, /healthz
    /// and /readyz.
    pub listen: SocketAddr,
    /// Points kept per series for the dashboard's charts, one per
    /// `judge.evaluation_interval` (360 at 1s: the last six minutes), so a
    /// page opened late still shows how a version got where it is. Memory is
    /// about 60 bytes per point and series.
    pub history_points: usize,
    /// Series (service, endpoint, version) whose history is kept; series
    /// beyond it are left out of the charts and counted, so 100,000 series
    /// cannot turn the history into gigabytes.
    pub history_series: usize,
    /// Resolved regressions remembered, newest first, with the evidence they
    /// fired on.
    pub history_regressions: usize,
    /// How long one encoding of `/metrics` is served to every scraper: the
    /// page is encoded once per interval and shared, so thirty scrapers
    /// (or thirty stalled ones) cost one page of memory, not thirty.
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
    /// The largest `/metrics` page: latency histograms of further series
    /// are left out (counted in `modelgate_metrics_omitted_total`); the
    /// regression and self-telemetry families always stay.
    pub metrics_max_bytes: usize,
}

/// Most points per series `admin.history_points` may ask for.
pub const MAX_HISTORY_POINTS: usize = 100_000;

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            history_points: 360,
            history_series: 1000,
            history_regressions: 100,
            metrics_interval: Duration::from_secs(1),
            metrics_max_bytes: 256 << 20,
        }
    }
}

impl AdminConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(2..=MAX_HISTORY_POINTS).contains(&self.history_points) {
            return Err(invalid(
                "admin.history_points",
                format!(
                    "must be between 2 and {MAX_HISTORY_POINTS} (a chart needs two points), got {}",
                    self.history_points
                ),
            ));
        }
        if !(1..=1_000_000).contains(&self.history_series) {
            return Err(invalid(
                "admin.history_series",
                format!("must be between 1 and 1000000, got {}", self.history_series),
            ));
        }
        if !(1..=100_000).contains(&self.history_regressions) {
            return Err(invalid(
                "admin.history_regressions",
                format!(
                    "must be between 1 and 100000, got {}",
                    self.history_regressions
                ),
            ));
        }
        at_most(
            "admin.metrics_interval",
            self.metrics_interval,
            Duration::from_secs(300),
        )?;
        if !((64 << 10)..=(4 << 30)).contains(&self.metrics_max_bytes) {
            return Err(invalid(
                "admin.metrics_max_bytes",
                format!(
                    "must be between 64 KiB and 4 GiB, got {} bytes",
                    self.metrics_max_bytes
                ),
            ));
        }
        Ok(())
    }
}
