//! `admin`: the admin HTTP port and the dashboard's history limits.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

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
        if self.history_series == 0 {
            return Err(invalid("admin.history_series", "must be at least 1"));
        }
        if self.history_regressions == 0 {
            return Err(invalid("admin.history_regressions", "must be at least 1"));
        }
        Ok(())
    }
}
