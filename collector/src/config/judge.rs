//! `judge`: how versions are judged (the rules, false-alarm control, alert
//! policy, fixed baselines), and the overrides one verdict may ask for.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{at_most, invalid, AggregateConfig, ConfigError, MAX_DURATION};
use crate::phase::Phase;

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
    /// The chance a rule must have had of catching its own firing effect
    /// before "clear" counts as a pass (0.9: 90%); with less traffic than
    /// that takes, the verdict is inconclusive.
    pub pass_power: f64,
    /// When a candidate becomes the baseline.
    pub promotion: PromotionPolicy,
    /// How a generative model's phases are judged, beside the request.
    pub phases: PhaseRules,
}

/// How a generative model's phases (`crate::extract::genai`) are judged:
/// each against the baseline's same phase by the `relative` rule (its
/// quantiles, factors, significance), with a smallest difference of its
/// own, and by the `sla` rule (its quantile and significance) where a
/// limit is set. The error and fanout rules judge the request only: a
/// phase's requests are the request's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhaseRules {
    /// Time in queue.
    pub queue: PhaseRule,
    /// Time to first token.
    pub first_token: PhaseRule,
    /// Time per output token.
    pub per_output_token: PhaseRule,
    /// What a request regression pages when its answers are longer but
    /// no slower per output token (a verbose model, not a slow one):
    /// `page` (its own severity stands) or `warn` (a warning at most).
    pub verbose: VerbosePolicy,
}

/// See [`PhaseRules::verbose`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerbosePolicy {
    /// The end to end is what users wait for: its severity stands.
    #[default]
    Page,
    /// Only a slower decode pages: a request regression explained by
    /// longer answers is a warning at most.
    Warn,
}

impl Default for PhaseRules {
    fn default() -> Self {
        Self {
            queue: PhaseRule::default(),
            first_token: PhaseRule::default(),
            per_output_token: PhaseRule {
                sla_limit: None,
                // Tokens take milliseconds: 20 ms more per token is a
                // model several times slower.
                min_difference: Duration::from_millis(1),
            },
            verbose: VerbosePolicy::Page,
        }
    }
}

impl PhaseRules {
    /// The rule of `phase`; `None` for the request (judged by the rules
    /// themselves).
    pub fn of(&self, phase: Phase) -> Option<&PhaseRule> {
        match phase {
            Phase::Request => None,
            Phase::Queue => Some(&self.queue),
            Phase::FirstToken => Some(&self.first_token),
            Phase::PerOutputToken => Some(&self.per_output_token),
        }
    }
}

/// How one phase is judged (see [`PhaseRules`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhaseRule {
    /// The `sla` rule's limit for this phase (its quantile, `judge.sla.quantile`);
    /// unset: no absolute limit.
    #[serde(with = "humantime_serde")]
    pub sla_limit: Option<Duration>,
    /// The `relative` rule's `min_difference` for this phase.
    #[serde(with = "humantime_serde")]
    pub min_difference: Duration,
}

impl Default for PhaseRule {
    fn default() -> Self {
        Self {
            sla_limit: None,
            min_difference: Duration::from_millis(20),
        }
    }
}

/// How a candidate becomes the baseline of an endpoint without an operator:
/// never by volume alone. Configured and pinned baselines are never
/// replaced this way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromotionPolicy {
    /// Off: only configuration and the API set baselines (besides the first
    /// version an endpoint ever showed).
    pub enabled: bool,
    /// The candidate must have passed (every rule, with power, and no alert
    /// pending or firing) for this long without a break.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// And carried at least this share of the endpoint's requests over its
    /// candidate window.
    pub min_share: f64,
}

impl Default for PromotionPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            after: Duration::from_secs(600),
            min_share: 0.5,
        }
    }
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
            pass_power: 0.9,
            promotion: PromotionPolicy::default(),
            phases: PhaseRules::default(),
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
    /// Severity `warning` (the SLA at risk): the quantile over this fraction
    /// of `limit`, significantly. 1: no warning before the breach.
    pub warning_fraction: f64,
}

impl Default for SlaRule {
    fn default() -> Self {
        Self {
            enabled: true,
            quantile: 0.95,
            limit: Duration::from_millis(150),
            min_samples: 3,
            alpha: 0.01,
            warning_fraction: 0.8,
        }
    }
}

/// The `relative` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelativeRule {
    /// Off: no comparison of latency with the baseline.
    pub enabled: bool,
    /// The quantiles compared (ascending, at most 8): a slowdown anywhere in
    /// the distribution counts, in its middle (a cache that stopped hitting)
    /// as much as in its tail. A quantile counts only where both sides have
    /// at least five requests beyond it.
    pub quantiles: Vec<f64>,
    /// Severity `critical`: the candidate over the baseline by this factor
    /// on one of the quantiles, at least.
    pub factor: f64,
    /// Severity `warning`: by this factor (at most `factor`).
    pub warning_factor: f64,
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
            quantiles: vec![0.5, 0.75, 0.9, 0.95, 0.99],
            factor: 1.5,
            warning_factor: 1.2,
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
    /// Severity `critical`: the candidate's timeout+error rate above the
    /// baseline's by at least this (absolute, 0.05 = 5 percentage points).
    pub margin: f64,
    /// Severity `warning`: by at least this (at most `margin`).
    pub warning_margin: f64,
    /// A version judged without a baseline (the baseline itself, or one with
    /// no trusted baseline) is critical above this rate, significantly; a
    /// baseline above it is reported and not trusted as a comparison.
    pub ceiling: f64,
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
            warning_margin: 0.02,
            ceiling: 0.2,
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
    /// Severity `critical`: candidate calls per request over the baseline's
    /// by this factor.
    pub factor: f64,
    /// Severity `warning`: by this factor (at most `factor`).
    pub warning_factor: f64,
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
            warning_factor: 1.5,
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
    /// A candidate with no request for this long (rolled back, drained) has
    /// its alerts resolved, reason `no_traffic`; its last verdict stays
    /// queryable (a regression stays a regression until a new passing
    /// verdict or an operator says otherwise).
    #[serde(with = "humantime_serde")]
    pub no_traffic_resolve: Duration,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        Self {
            hold: Duration::from_secs(2),
            resolve_hold: Duration::from_secs(60),
            clear_fraction: 0.8,
            no_traffic_resolve: Duration::from_secs(180),
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
        // Judging less often than the window slides would judge windows
        // nobody sees (and a year's interval would never judge at all).
        at_most(
            "judge.evaluation_interval",
            self.evaluation_interval,
            aggregate.window.min(Duration::from_secs(3600)),
        )
        .map_err(|_| {
            invalid(
                "judge.evaluation_interval",
                "must be at most aggregate.window (and at most 1h)",
            )
        })?;
        at_most("judge.sla.limit", self.sla.limit, MAX_SLA_OVERRIDE)?;
        at_most(
            "judge.relative.min_difference",
            self.relative.min_difference,
            MAX_SLA_OVERRIDE,
        )?;
        for (key, value) in [
            ("judge.alerts.hold", self.alerts.hold),
            ("judge.alerts.resolve_hold", self.alerts.resolve_hold),
            (
                "judge.alerts.no_traffic_resolve",
                self.alerts.no_traffic_resolve,
            ),
            ("judge.promotion.after", self.promotion.after),
        ] {
            at_most(key, value, MAX_DURATION)?;
        }
        self.sla.validate()?;
        self.relative.validate()?;
        self.errors.validate()?;
        self.fanout.validate()?;
        for phase in Phase::ALL {
            let Some(rule) = self.phases.of(phase) else {
                continue;
            };
            let key = |field: &str| format!("judge.phases.{phase}.{field}");
            if let Some(limit) = rule.sla_limit {
                if limit.is_zero() {
                    return Err(invalid(&key("sla_limit"), "must be more than 0s"));
                }
                at_most(&key("sla_limit"), limit, MAX_SLA_OVERRIDE)?;
            }
            at_most(
                &key("min_difference"),
                rule.min_difference,
                MAX_SLA_OVERRIDE,
            )?;
        }
        self.sequential.validate(aggregate)?;
        if !(self.pass_power > 0.5 && self.pass_power < 1.0) {
            return Err(invalid(
                "judge.pass_power",
                format!(
                    "must be between 0.5 and 1 (exclusive), got {}",
                    self.pass_power
                ),
            ));
        }
        let promotion = &self.promotion;
        if !(promotion.min_share > 0.0 && promotion.min_share <= 1.0) {
            return Err(invalid("judge.promotion.min_share", "must be in (0, 1]"));
        }
        if promotion.after < Duration::from_secs(1) {
            return Err(invalid("judge.promotion.after", "must be at least 1s"));
        }
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
        if !(self.warning_fraction > 0.0 && self.warning_fraction <= 1.0) {
            return Err(invalid("judge.sla.warning_fraction", "must be in (0, 1]"));
        }
        check_min_samples("judge.sla.min_samples", self.min_samples)?;
        if self.limit.is_zero() {
            return Err(invalid("judge.sla.limit", "must be more than 0s"));
        }
        Ok(())
    }
}

impl RelativeRule {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.quantiles.is_empty() || self.quantiles.len() > 8 {
            return Err(invalid(
                "judge.relative.quantiles",
                format!("must list 1 to 8 quantiles, got {}", self.quantiles.len()),
            ));
        }
        for q in &self.quantiles {
            check_quantile("judge.relative.quantiles", *q)?;
        }
        if self.quantiles.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid("judge.relative.quantiles", "must be ascending"));
        }
        check_alpha("judge.relative.alpha", self.alpha)?;
        check_factors("judge.relative", self.warning_factor, self.factor)?;
        check_min_samples("judge.relative.min_samples", self.min_samples)?;
        Ok(())
    }
}

impl ErrorsRule {
    fn validate(&self) -> Result<(), ConfigError> {
        check_alpha("judge.errors.alpha", self.alpha)?;
        check_min_samples("judge.errors.min_samples", self.min_samples)?;
        for (key, value) in [
            ("judge.errors.margin", self.margin),
            ("judge.errors.warning_margin", self.warning_margin),
            ("judge.errors.ceiling", self.ceiling),
        ] {
            if !(value > 0.0 && value < 1.0) {
                return Err(invalid(
                    key,
                    format!("must be between 0 and 1, got {value}"),
                ));
            }
        }
        if self.warning_margin > self.margin {
            return Err(invalid(
                "judge.errors.warning_margin",
                "must be at most judge.errors.margin",
            ));
        }
        Ok(())
    }
}

impl FanoutRule {
    fn validate(&self) -> Result<(), ConfigError> {
        check_alpha("judge.fanout.alpha", self.alpha)?;
        check_min_samples("judge.fanout.min_samples", self.min_samples)?;
        check_factors("judge.fanout", self.warning_factor, self.factor)?;
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

/// A rule's `warning_factor` and `factor`: above 1, finite, warning at
/// most critical.
fn check_factors(rule: &str, warning: f64, critical: f64) -> Result<(), ConfigError> {
    for (key, value) in [("factor", critical), ("warning_factor", warning)] {
        if !(value > 1.0 && value.is_finite()) {
            return Err(invalid(
                &format!("{rule}.{key}"),
                format!("must be a number above 1, got {value}"),
            ));
        }
    }
    if warning > critical {
        return Err(invalid(
            &format!("{rule}.warning_factor"),
            format!("must be at most {rule}.factor"),
        ));
    }
    Ok(())
}

fn check_min_samples(key: &str, n: u64) -> Result<(), ConfigError> {
    // More than a billion requests in one window would never be judged.
    if !(1..=1_000_000_000).contains(&n) {
        return Err(invalid(
            key,
            format!("must be between 1 and 1000000000, got {n}"),
        ));
    }
    Ok(())
}
