//! `snapshot`: saving the state to disk so a restart does not forget an
//! incident.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{at_most, invalid, ConfigError};

/// Snapshots of the collector's state (series windows, baselines, alert
/// states), so a restart in the middle of an incident keeps the alert firing
/// and the baseline known. See `crate::snapshot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Directory holding the snapshot file (`modelgate.snapshot`); created
    /// if missing. Unset (the default): no snapshots, every start is empty,
    /// as before snapshots existed; a data directory is a deployment
    /// decision (a volume that outlives the process), not something to
    /// guess.
    pub dir: Option<PathBuf>,
    /// How often the state is written while running (also once at a
    /// graceful shutdown). A crash loses at most this much of history;
    /// writing more often costs a serialization pass over the state, in
    /// slices between the pipeline task's batches. A tick that finds the
    /// previous snapshot still being taken or written is skipped.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The largest snapshot file read at start; a larger one is refused by
    /// its size before a byte of it is read (and moved aside), so a stray
    /// 3 GiB file cannot take the memory of the start.
    pub max_bytes: u64,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            dir: None,
            interval: Duration::from_secs(5),
            max_bytes: 2 << 30,
        }
    }
}

/// Shortest `snapshot.interval`: a write per 100 ms is already far more
/// than a restart needs.
pub const MIN_SNAPSHOT_INTERVAL: Duration = Duration::from_millis(100);

impl SnapshotConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(invalid(
                "snapshot.dir",
                "must name a directory (leave it unset to disable snapshots)",
            ));
        }
        at_most(
            "snapshot.interval",
            self.interval,
            Duration::from_secs(86_400),
        )?;
        if !((1 << 20)..=(64 << 30)).contains(&self.max_bytes) {
            return Err(invalid(
                "snapshot.max_bytes",
                format!(
                    "must be between 1 MiB and 64 GiB, got {} bytes",
                    self.max_bytes
                ),
            ));
        }
        if self.interval < MIN_SNAPSHOT_INTERVAL {
            return Err(invalid(
                "snapshot.interval",
                format!(
                    "must be at least {}, got {}",
                    humantime::format_duration(MIN_SNAPSHOT_INTERVAL),
                    humantime::format_duration(self.interval)
                ),
            ));
        }
        Ok(())
    }
}
