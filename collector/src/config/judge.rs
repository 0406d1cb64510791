//! `judge`: how versions are judged (the rules, false-alarm control, alert
//! policy, fixed baselines), and the overrides one verdict may ask for.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, AggregateConfig, ConfigError};

/// Judging versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JudgeConfig {
    /// How often every endpoint is judged.
    #[serde(with = "humantime_serde")]
    pub evaluation_interval: Duration,
    /// Fixed baselines; elsewhere the baseline is chosen by traffic.
    pub baselines: Vec<BaselineConfig>,
    /// Absolute latency limit on a quantile.
    pub sla: SlaRule,
    /// Candidate quantile against the baseline's.
    pub relative: RelativeRule,
    /// Candidate timeout and error rate against the baseline's.
    pub errors: ErrorsRule,
    /// Candidate database calls per request against the baseline's.
    pub fanout: FanoutRule,
    /// False-alarm control over time.
    pub sequential: SequentialPolicy,
    /// Pending, firing, resolved.
    pub alerts: AlertPolicy,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            evaluation_interval: Duration::from_secs(1),
            baselines: Vec::new(),
            sla: SlaRule::default(),
            relative: RelativeRule::default(),
            errors: ErrorsRule::default(),
            fanout: FanoutRule::default(),
            sequential: SequentialPolicy::default(),
            alerts: AlertPolicy::default(),
        }
    }
}

/// The longest SLA limit a single verdict may ask for: beyond it the number
/// is a mistake (a unit error), not a limit.
pub const MAX_SLA_OVERRIDE: Duration = Duration::from_secs(86_400);

/// Thresholds one verdict may judge with instead of the configured ones: a
/// release gate's own SLA and its own minimum of requests. Applied to a copy
/// of [`JudgeConfig`] for that verdict only; the running judge and its
/// alerts never see them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JudgeOverrides {
    /// Replaces `judge.sla.limit`.
    pub sla_limit: Option<Duration>,
    /// Replaces the `min_samples` of every rule.
    pub min_samples: Option<u64>,
}

/// Why an override was refused; the caller names the parameter (its names
/// differ between gRPC fields and JSON query parameters).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OverrideError {
    /// The SLA limit is not a positive number of milliseconds up to a day.
    #[error("must be more than 0 and at most 1 day, got {0} ms")]
    SlaLimit(f64),
    /// `min_samples` of 0 would let an empty window pass.
    #[error("must be at least 1")]
    MinSamples,
}

impl JudgeOverrides {
    /// Checked overrides from raw values: an SLA limit in milliseconds and a
    /// sample minimum, each optional.
    pub fn new(sla_limit_ms: Option<f64>, min_samples: Option<u64>) -> Result<Self, OverrideError> {
        let sla_limit = match sla_limit_ms {
            None => None,
            Some(ms) => {
                let max_ms = MAX_SLA_OVERRIDE.as_secs_f64() * 1e3;
                if !(ms > 0.0 && ms <= max_ms) {
                    return Err(OverrideError::SlaLimit(ms));
                }
                Some(Duration::from_secs_f64(ms / 1e3))
            }
        };
        if min_samples == Some(0) {
            return Err(OverrideError::MinSamples);
        }
        Ok(Self {
            sla_limit,
            min_samples,
        })
    }

    /// Nothing overridden: the judge's own results (and alert states) apply.
    pub const fn is_empty(&self) -> bool {
        self.sla_limit.is_none() && self.min_samples.is_none()
    }

    /// `config` with the overrides applied.
    pub fn apply(&self, config: &JudgeConfig) -> JudgeConfig {
        let mut c = config.clone();
        if let Some(limit) = self.sla_limit {
            c.sla.limit = limit;
        }
        if let Some(n) = self.min_samples {
            c.sla.min_samples = n;
            c.relative.min_samples = n;
            c.errors.min_samples = n;
            c.fanout.min_samples = n;
        }
        c
    }
}

/// A fixed baseline version for a service, or one endpoint of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineConfig {
    /// `service.name`.
    pub service: String,
    /// Unset: every endpoint of the service.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The version every other version of that service is compared with.
    pub version: String,
}

/// The `sla` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlaRule {
    /// Off: no absolute limit.
    pub enabled: bool,
    /// The quantile held to the limit (0.95 = p95).
    pub quantile: f64,
    /// The lending incident's SLA was 150 ms.
    #[serde(with = "humantime_serde")]
    pub limit: Duration,
    /// Fewer requests than this are inconclusive.
    pub min_samples: u64,
    /// Significance of "more than (1 - quantile) of requests over the limit"
    /// (exact binomial test), so one slow request never fires.
    pub alpha: f64,
}

impl Default for SlaRule {
    fn default() -> Self {
        Self {
            enabled: true,
            quantile: 0.95,
            limit: Duration::from_millis(150),
            min_samples: 3,
            alpha: 0.01,
        }
    }
}

/// The `relative` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelativeRule {
    /// Off: no comparison of latency with the baseline.
    pub enabled: bool,
    /// The quantile compared.
    pub quantile: f64,
    /// Candidate over baseline on that quantile, at least.
    pub factor: f64,
    /// And slower by at least this much, so a 2x shift of a 1 ms endpoint
    /// does not page.
    #[serde(with = "humantime_serde")]
    pub min_difference: Duration,
    /// Requests needed on each side.
    pub min_samples: u64,
    /// Significance of the rank test (candidate slower than baseline).
    pub alpha: f64,
}

impl Default for RelativeRule {
    fn default() -> Self {
        Self {
            enabled: true,
            quantile: 0.95,
            factor: 1.5,
            min_difference: Duration::from_millis(20),
            min_samples: 10,
            alpha: 0.01,
        }
    }
}

/// The `errors` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErrorsRule {
    /// Off: error and timeout rates are not compared.
    pub enabled: bool,
    /// Candidate's timeout+error rate above the baseline's by at least this
    /// (absolute, 0.05 = 5 percentage points).
    pub margin: f64,
    /// Requests needed on each side.
    pub min_samples: u64,
    /// Significance of the rate difference (Fisher's exact test, one-sided).
    pub alpha: f64,
}

impl Default for ErrorsRule {
    fn default() -> Self {
        Self {
            enabled: true,
            margin: 0.05,
            min_samples: 10,
            alpha: 0.01,
        }
    }
}

/// The `fanout` rule (the e-commerce incident: a deployment that multiplied
/// database queries per request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FanoutRule {
    /// Off: database calls are counted but not judged.
    pub enabled: bool,
    /// Candidate calls per request over the baseline's by this factor.
    pub factor: f64,
    /// And by at least this many calls per request.
    pub min_difference: f64,
    /// Requests needed on each side.
    pub min_samples: u64,
    /// Significance of the rate difference (exact conditional test of two
    /// Poisson rates).
    pub alpha: f64,
}

impl Default for FanoutRule {
    fn default() -> Self {
        Self {
            enabled: true,
            factor: 2.0,
            min_difference: 1.0,
            min_samples: 10,
            alpha: 0.01,
        }
    }
}

/// False-alarm control of a judge that looks every second, forever.
///
/// Each rule keeps an e-value (an always-valid measure of evidence) over an
/// epoch that starts when the candidate is first seen and restarts every
/// `epoch`. By Ville's inequality a rule fires falsely within one epoch with
/// probability at most its share of `alerts_per_series_hour * epoch / 1h`, so
/// over any stretch of time false alerts stay under `alerts_per_series_hour`
/// per judged series. The fixed-sample test of each rule (`alpha`) must
/// agree as well, which keeps small samples exact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SequentialPolicy {
    /// False alerts allowed per series and hour, over all rules.
    pub alerts_per_series_hour: f64,
    /// How long evidence accumulates before it restarts; at most
    /// `aggregate.baseline_horizon`.
    #[serde(with = "humantime_serde")]
    pub epoch: Duration,
    /// Scale of the effects the rank test's mixture expects: P(C > B) - 1/2
    /// around this size (0.1: a candidate slower in 60% of pairs).
    pub rank_effect_scale: f64,
}

impl Default for SequentialPolicy {
    fn default() -> Self {
        Self {
            alerts_per_series_hour: 0.01,
            epoch: Duration::from_secs(1800),
            rank_effect_scale: 0.1,
        }
    }
}

/// How conditions become alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertPolicy {
    /// A condition must hold this long before it fires (pending until then).
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
    /// A firing alert resolves only after its condition has been clear this
    /// long, so a flapping series does not page twice.
    #[serde(with = "humantime_serde")]
    pub resolve_hold: Duration,
    /// Hysteresis: a firing alert clears only when its effect falls below
    /// this fraction of the firing threshold (0.8: a 1.5x rule clears under
    /// 1.4x).
    pub clear_fraction: f64,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        Self {
            hold: Duration::from_secs(2),
            resolve_hold: Duration::from_secs(60),
            clear_fraction: 0.8,
        }
    }
}

impl JudgeConfig {
    /// Checks the section; the epoch is bounded by `aggregate`'s window and
    /// horizon.
    pub(super) fn validate(&self, aggregate: &AggregateConfig) -> Result<(), ConfigError> {
        if self.evaluation_interval < Duration::from_millis(10) {
            return Err(invalid(
                "judge.evaluation_interval",
                "must be at least 10ms",
            ));
        }
        self.sla.validate()?;
        self.relative.validate()?;
        self.errors.validate()?;
        self.fanout.validate()?;
        self.sequential.validate(aggregate)?;
        if !(self.alerts.clear_fraction > 0.0 && self.alerts.clear_fraction <= 1.0) {
            return Err(invalid("judge.alerts.clear_fraction", "must be in (0, 1]"));
        }
        for (i, b) in self.baselines.iter().enumerate() {
            if b.service.is_empty() || b.version.is_empty() {
                return Err(invalid(
                    &format!("judge.baselines[{i}]"),
                    "service and version must not be empty",
                ));
            }
        }
        Ok(())
    }
}

impl SlaRule {
    fn validate(&self) -> Result<(), ConfigError> {
        check_quantile("judge.sla.quantile", self.quantile)?;
        check_alpha("judge.sla.alpha", self.alpha)?;
        check_min_samples("judge.sla.min_samples", self.min_samples)?;
        if self.limit.is_zero() {
            return Err(invalid("judge.sla.limit", "must be more than 0s"));
        }
        Ok(())
    }
}

impl RelativeRule {
    fn validate(&self) -> Result<(), ConfigError> {
        check_quantile("judge.relative.quantile", self.quantile)?;
        check_alpha("judge.relative.alpha", self.alpha)?;
        check_min_samples("judge.relative.min_samples", self.min_samples)?;
        if !(self.factor > 1.0 && self.factor.is_finite()) {
            return Err(invalid("judge.relative.factor", "must be a number above 1"));
        }
        Ok(())
    }
}

impl ErrorsRule {
    fn validate(&self) -> Result<(), ConfigError> {
        check_alpha("judge.errors.alpha", self.alpha)?;
        check_min_samples("judge.errors.min_samples", self.min_samples)?;
        if !(self.margin > 0.0 && self.margin < 1.0) {
            return Err(invalid("judge.errors.margin", "must be between 0 and 1"));
        }
        Ok(())
    }
}

impl FanoutRule {
    fn validate(&self) -> Result<(), ConfigError> {
        check_alpha("judge.fanout.alpha", self.alpha)?;
        check_min_samples("judge.fanout.min_samples", self.min_samples)?;
        if !(self.factor > 1.0 && self.factor.is_finite()) {
            return Err(invalid("judge.fanout.factor", "must be a number above 1"));
        }
        if !(self.min_difference >= 0.0 && self.min_difference.is_finite()) {
            return Err(invalid("judge.fanout.min_difference", "must be 0 or more"));
        }
        Ok(())
    }
}

impl SequentialPolicy {
    fn validate(&self, aggregate: &AggregateConfig) -> Result<(), ConfigError> {
        if !(self.alerts_per_series_hour > 0.0 && self.alerts_per_series_hour < 1.0) {
            return Err(invalid(
                "judge.sequential.alerts_per_series_hour",
                "must be between 0 and 1",
            ));
        }
        if self.epoch < aggregate.window || self.epoch > aggregate.baseline_horizon {
            return Err(invalid(
                "judge.sequential.epoch",
                "must be between aggregate.window and aggregate.baseline_horizon",
            ));
        }
        if !(self.rank_effect_scale > 0.0 && self.rank_effect_scale <= 0.5) {
            return Err(invalid(
                "judge.sequential.rank_effect_scale",
                "must be in (0, 0.5]",
            ));
        }
        Ok(())
    }
}

fn check_quantile(key: &str, q: f64) -> Result<(), ConfigError> {
    if q > 0.0 && q < 1.0 {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be between 0 and 1 (exclusive), got {q}"),
        ))
    }
}

fn check_alpha(key: &str, alpha: f64) -> Result<(), ConfigError> {
    if alpha > 0.0 && alpha < 0.5 {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be between 0 and 0.5, got {alpha}"),
        ))
    }
}

fn check_min_samples(key: &str, n: u64) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(())
}
