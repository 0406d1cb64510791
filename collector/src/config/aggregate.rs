//! `aggregate`: how samples are kept (window, horizon, slots, caps).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{at_most, invalid, ConfigError, MAX_DURATION};

/// Most `aggregate.max_series` (and `max_pending_traces`): ten million
/// series is some 20 GB of sketches.
pub const MAX_SERIES: usize = 10_000_000;

/// Keeping latency per series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateConfig {
    /// The candidate window: how much recent traffic a version is judged on.
    /// A version with fewer requests in it than the rules' `min_samples` is
    /// judged on a longer stretch, up to `baseline_horizon`, so a low-traffic
    /// endpoint waits for evidence instead of never having enough. Kept in
    /// steps of a fifth of it once older than the current step, so it
    /// reaches back to the start of its oldest step (5 to 6 minutes of
    /// traffic at the default 5 minutes).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How far back the baseline's traffic is kept and the baseline chosen;
    /// at least `window`. Data older than the window is kept in steps of a
    /// third of it (30 to 40 minutes at the default 30).
    #[serde(with = "humantime_serde")]
    pub baseline_horizon: Duration,
    /// Width of one window slot: samples leave the window a slot at a time.
    #[serde(with = "humantime_serde")]
    pub slot: Duration,
    /// A sample counts at its own time (span end, log record time); one
    /// older than this when it arrives is left out of the judgement and
    /// counted (`modelgate.samples.dropped{reason="late"}`). It lets a
    /// Collector's retry queue or a replayed log land where it belongs.
    /// Capped at `baseline_horizon`: older data is not judged anyway.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// A sample whose time is further ahead of this collector's clock than
    /// this is left out and counted (`reason="future"`): a sender's clock
    /// gone wrong must not fill windows that have not begun.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// Hard cap on series. At the cap a new series takes the place of the
    /// nearly empty ones (see `evict_below`) that idled longest; when every
    /// series is established, samples of further series go to one overflow
    /// series marked `otel.metric.overflow=true`, and are counted.
    pub max_series: usize,
    /// The share of `max_series` one service may hold (0.5: half), so one
    /// sender's junk endpoints cannot take every other service's room; a
    /// service at its share makes room among its own series first.
    pub service_share: f64,
    /// A series with fewer requests than this over the baseline horizon is
    /// nearly empty: under the cap it may be evicted (least requests first,
    /// then the one idle longest) to make room for a new series. A series
    /// with at least this many is established and never evicted, so a
    /// flood of one-request series can neither starve it nor keep a real
    /// incident's series from being made.
    pub evict_below: u64,
    /// A series with no sample for this long is forgotten, so memory follows
    /// live traffic; at least `baseline_horizon`.
    #[serde(with = "humantime_serde")]
    pub series_idle_timeout: Duration,
    /// Traces whose database calls wait for their request span; beyond this,
    /// such calls are dropped and counted.
    pub max_pending_traces: usize,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            baseline_horizon: Duration::from_secs(1800),
            slot: Duration::from_secs(10),
            allowed_lateness: Duration::from_secs(1800),
            max_future: Duration::from_secs(60),
            max_series: 100_000,
            service_share: 0.5,
            evict_below: 10,
            series_idle_timeout: Duration::from_secs(1800),
            max_pending_traces: 100_000,
        }
    }
}

impl AggregateConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        // Slots are whole milliseconds (the aggregator keys them by
        // `now_ms / slot_ms`); a shorter one would also divide by zero below.
        if self.slot < Duration::from_millis(1) {
            return Err(invalid("aggregate.slot", "must be at least 1ms"));
        }
        if self.window < self.slot {
            return Err(invalid(
                "aggregate.window",
                "must be at least aggregate.slot",
            ));
        }
        if self.baseline_horizon < self.window {
            return Err(invalid(
                "aggregate.baseline_horizon",
                "must be at least aggregate.window",
            ));
        }
        if self.baseline_horizon.as_millis() / self.slot.as_millis() > 10_000 {
            return Err(invalid(
                "aggregate.slot",
                "too small for aggregate.baseline_horizon (more than 10000 slots)",
            ));
        }
        if self.series_idle_timeout < self.baseline_horizon {
            return Err(invalid(
                "aggregate.series_idle_timeout",
                "must be at least aggregate.baseline_horizon",
            ));
        }
        if !(1..=MAX_SERIES).contains(&self.max_series) {
            return Err(invalid(
                "aggregate.max_series",
                format!(
                    "must be between 1 and {MAX_SERIES}, got {}",
                    self.max_series
                ),
            ));
        }
        if !(self.service_share > 0.0 && self.service_share <= 1.0) {
            return Err(invalid(
                "aggregate.service_share",
                format!("must be in (0, 1], got {}", self.service_share),
            ));
        }
        if !(1..=1_000_000).contains(&self.evict_below) {
            return Err(invalid(
                "aggregate.evict_below",
                format!("must be between 1 and 1000000, got {}", self.evict_below),
            ));
        }
        if !(1..=MAX_SERIES).contains(&self.max_pending_traces) {
            return Err(invalid(
                "aggregate.max_pending_traces",
                format!(
                    "must be between 1 and {MAX_SERIES}, got {}",
                    self.max_pending_traces
                ),
            ));
        }
        for (key, value) in [
            ("aggregate.baseline_horizon", self.baseline_horizon),
            ("aggregate.allowed_lateness", self.allowed_lateness),
            ("aggregate.max_future", self.max_future),
            ("aggregate.series_idle_timeout", self.series_idle_timeout),
        ] {
            at_most(key, value, MAX_DURATION)?;
        }
        Ok(())
    }
}
