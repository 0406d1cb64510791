//! The rules: one candidate window (and a baseline) -> a [`RuleResult`].
//!
//! Pure functions. Each rule answers with a [`Condition`] and the
//! [`Evidence`] that decided it. Too little traffic is `Inconclusive`, never
//! a pass; an effect between the firing and the clearing threshold is
//! `Marginal`, which keeps an alert in whatever state it is (hysteresis).

use std::fmt;

use crate::aggregate::WindowSummary;
use crate::config::{ErrorsRule, RelativeRule, SlaRule};
use crate::judge::stats;

/// Which rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// Candidate quantile over an absolute limit.
    Sla,
    /// Candidate quantile over the baseline's by a factor, significant.
    Relative,
    /// Candidate timeout+error rate over the baseline's by a margin, significant.
    Errors,
}

impl Rule {
    /// The `rule` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::Sla => "sla",
            Rule::Relative => "relative",
            Rule::Errors => "errors",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule concluded at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Over the threshold and significant.
    Breach,
    /// Neither breach nor clear: keeps the alert's state.
    Marginal,
    /// Under the clearing threshold.
    Clear,
    /// Too little traffic to say.
    Inconclusive,
}

/// What decided a result (mirrors `modelgate.v1.Evidence`).
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// Requests of the candidate in its window.
    pub candidate_count: u64,
    /// Requests of the baseline over its horizon (0 for sla).
    pub baseline_count: u64,
    /// Quantile compared; 0 for rate rules.
    pub quantile: f64,
    /// Candidate figure in `unit`.
    pub candidate_value: f64,
    /// Baseline figure in `unit` (0 for sla).
    pub baseline_value: f64,
    /// The limit, in `unit`.
    pub threshold: f64,
    /// Candidate over baseline (sla: over the limit).
    pub ratio: f64,
    /// Significance; 1 when no test applies.
    pub p_value: f64,
    /// "ms" or "rate".
    pub unit: &'static str,
    /// One sentence.
    pub detail: String,
}

/// One rule's judgement of one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleResult {
    /// The rule.
    pub rule: Rule,
    /// Its conclusion.
    pub condition: Condition,
    /// Why.
    pub evidence: Evidence,
}

/// Ratios are exported as gauges; keep them finite.
const MAX_RATIO: f64 = 1e6;

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b).min(MAX_RATIO)
    } else if a > 0.0 {
        MAX_RATIO
    } else {
        1.0
    }
}

fn pct(q: f64) -> String {
    format!("p{}", (q * 100.0 * 10.0).round() / 10.0)
}

/// `sla`: the candidate's quantile over an absolute limit, with an exact
/// binomial test that more than `1 - quantile` of requests exceed the limit
/// (so one slow request among few never fires). Needs no baseline.
pub fn sla(rule: &SlaRule, candidate: &WindowSummary) -> RuleResult {
    let n = candidate.count();
    let limit_ms = rule.limit.as_secs_f64() * 1e3;
    let value = candidate.latency.quantile(rule.quantile).unwrap_or(0.0);
    let above = candidate.latency.count_above(limit_ms);
    let p_value = stats::binomial_at_least(above, n, 1.0 - rule.quantile);
    let q = pct(rule.quantile);
    let (condition, detail) = if n < rule.min_samples {
        (
            Condition::Inconclusive,
            format!("{n} requests, {} needed", rule.min_samples),
        )
    } else if value > limit_ms && p_value <= rule.alpha {
        (
            Condition::Breach,
            format!("{q} {value:.1} ms over the {limit_ms:.0} ms limit: {above} of {n} requests above it (binomial p={p_value:.2e})"),
        )
    } else if value <= limit_ms {
        (
            Condition::Clear,
            format!("{q} {value:.1} ms within the {limit_ms:.0} ms limit"),
        )
    } else {
        (
            Condition::Marginal,
            format!("{q} {value:.1} ms over the {limit_ms:.0} ms limit but not significant: {above} of {n} above it (p={p_value:.2e})"),
        )
    };
    RuleResult {
        rule: Rule::Sla,
        condition,
        evidence: Evidence {
            candidate_count: n,
            baseline_count: 0,
            quantile: rule.quantile,
            candidate_value: value,
            baseline_value: 0.0,
            threshold: limit_ms,
            ratio: ratio(value, limit_ms),
            p_value,
            unit: "ms",
            detail,
        },
    }
}

/// `relative`: the candidate's quantile over the baseline's by `factor` and by
/// at least `min_difference`, with a one-sided Mann-Whitney rank test.
pub fn relative(
    rule: &RelativeRule,
    clear_fraction: f64,
    candidate: &WindowSummary,
    baseline: &WindowSummary,
    baseline_version: &str,
) -> RuleResult {
    let (nc, nb) = (candidate.count(), baseline.count());
    let qc = candidate.latency.quantile(rule.quantile).unwrap_or(0.0);
    let qb = baseline.latency.quantile(rule.quantile).unwrap_or(0.0);
    let r = ratio(qc, qb);
    let diff = qc - qb;
    let min_diff = rule.min_difference.as_secs_f64() * 1e3;
    let p_value = stats::mann_whitney_greater(&candidate.latency, &baseline.latency)
        .map_or(1.0, |t| t.p_value);
    let q = pct(rule.quantile);
    let clear_factor = 1.0 + (rule.factor - 1.0) * clear_fraction;
    let (condition, detail) = if nc < rule.min_samples || nb < rule.min_samples {
        (
            Condition::Inconclusive,
            format!(
                "{nc} candidate and {nb} baseline requests, {} needed on each side",
                rule.min_samples
            ),
        )
    } else if r >= rule.factor && diff >= min_diff && p_value <= rule.alpha {
        (
            Condition::Breach,
            format!("{q} {qc:.1} ms vs {qb:.1} ms on {baseline_version} ({r:.2}x, limit {:.2}x), rank test p={p_value:.2e}", rule.factor),
        )
    } else if r < clear_factor || diff < min_diff * clear_fraction {
        (
            Condition::Clear,
            format!("{q} {qc:.1} ms vs {qb:.1} ms on {baseline_version} ({r:.2}x)"),
        )
    } else {
        (
            Condition::Marginal,
            format!("{q} {qc:.1} ms vs {qb:.1} ms on {baseline_version} ({r:.2}x), rank test p={p_value:.2e}: not conclusive"),
        )
    };
    RuleResult {
        rule: Rule::Relative,
        condition,
        evidence: Evidence {
            candidate_count: nc,
            baseline_count: nb,
            quantile: rule.quantile,
            candidate_value: qc,
            baseline_value: qb,
            threshold: qb * rule.factor,
            ratio: r,
            p_value,
            unit: "ms",
            detail,
        },
    }
}

/// `errors`: the candidate's timeout+error rate over the baseline's by at
/// least `margin`, with a one-sided exact test.
pub fn errors(
    rule: &ErrorsRule,
    clear_fraction: f64,
    candidate: &WindowSummary,
    baseline: &WindowSummary,
    baseline_version: &str,
) -> RuleResult {
    let (nc, nb) = (candidate.count(), baseline.count());
    let (fc, fb) = (candidate.failures(), baseline.failures());
    let rc = if nc > 0 { fc as f64 / nc as f64 } else { 0.0 };
    let rb = if nb > 0 { fb as f64 / nb as f64 } else { 0.0 };
    // A baseline with no failures is floored at one in its sample, so the
    // ratio says "at least this many times worse" rather than infinity.
    let r = ratio(rc, rb.max(1.0 / nb.max(1) as f64));
    let p_value = stats::rate_greater(fc, nc, fb, nb);
    let (condition, detail) = if nc < rule.min_samples || nb < rule.min_samples {
        (
            Condition::Inconclusive,
            format!(
                "{nc} candidate and {nb} baseline requests, {} needed on each side",
                rule.min_samples
            ),
        )
    } else if rc - rb >= rule.margin && p_value <= rule.alpha {
        (
            Condition::Breach,
            format!(
                "timeouts+errors {:.1}% ({fc} of {nc}: {} timeouts) vs {:.1}% on {baseline_version}, exact test p={p_value:.2e}",
                rc * 100.0,
                candidate.outcomes[crate::extract::Outcome::Timeout.index()],
                rb * 100.0
            ),
        )
    } else if rc - rb < rule.margin * clear_fraction {
        (
            Condition::Clear,
            format!(
                "timeouts+errors {:.1}% vs {:.1}% on {baseline_version}",
                rc * 100.0,
                rb * 100.0
            ),
        )
    } else {
        (
            Condition::Marginal,
            format!("timeouts+errors {:.1}% vs {:.1}% on {baseline_version}, p={p_value:.2e}: not conclusive", rc * 100.0, rb * 100.0),
        )
    };
    RuleResult {
        rule: Rule::Errors,
        condition,
        evidence: Evidence {
            candidate_count: nc,
            baseline_count: nb,
            quantile: 0.0,
            candidate_value: rc,
            baseline_value: rb,
            threshold: rb + rule.margin,
            ratio: r,
            p_value,
            unit: "rate",
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Sketch;
    use crate::extract::Outcome;

    fn summary(values: &[f64], timeouts: u64) -> WindowSummary {
        let mut latency = Sketch::new();
        for v in values {
            latency.record(*v);
        }
        let n = values.len() as u64;
        WindowSummary {
            latency,
            outcomes: [n - timeouts, 0, timeouts],
            db_calls: 0,
        }
    }

    fn v12(n: usize) -> WindowSummary {
        summary(
            &(0..n).map(|i| 90.0 + (i % 30) as f64).collect::<Vec<_>>(),
            0,
        )
    }

    #[test]
    fn sla_fires_on_three_slow_requests_not_on_one() {
        let rule = SlaRule::default();
        let three = sla(&rule, &summary(&[750.0, 820.0, 780.0], 3));
        assert_eq!(three.condition, Condition::Breach, "{three:?}");
        assert!(three.evidence.detail.contains("3 of 3"));
        let one_of_three = sla(&rule, &summary(&[100.0, 820.0, 95.0], 1));
        assert_ne!(
            one_of_three.condition,
            Condition::Breach,
            "{one_of_three:?}"
        );
        let two = sla(&rule, &summary(&[750.0, 820.0], 2));
        assert_eq!(two.condition, Condition::Inconclusive);
        // One slow request among many: p95 is fine.
        let mut values = vec![100.0; 99];
        values.push(5000.0);
        assert_eq!(sla(&rule, &summary(&values, 0)).condition, Condition::Clear);
    }

    #[test]
    fn relative_fires_on_the_lending_shift() {
        let rule = RelativeRule::default();
        let cand = summary(
            &[
                750.0, 820.0, 780.0, 700.0, 750.0, 760.0, 790.0, 710.0, 805.0, 730.0,
            ],
            8,
        );
        let r = relative(&rule, 0.8, &cand, &v12(200), "v1.2");
        assert_eq!(r.condition, Condition::Breach, "{r:?}");
        assert!(r.evidence.ratio > 6.0);
        assert!(r.evidence.p_value < 1e-6);
        let e = errors(&ErrorsRule::default(), 0.8, &cand, &v12(200), "v1.2");
        assert_eq!(e.condition, Condition::Breach, "{e:?}");
        assert!((e.evidence.candidate_value - 0.8).abs() < 1e-12);
    }

    #[test]
    fn same_distribution_does_not_breach() {
        let rule = RelativeRule::default();
        let r = relative(&rule, 0.8, &v12(300), &v12(300), "v1");
        assert_eq!(r.condition, Condition::Clear, "{r:?}");
        let e = errors(&ErrorsRule::default(), 0.8, &v12(300), &v12(300), "v1");
        assert_eq!(e.condition, Condition::Clear, "{e:?}");
    }

    #[test]
    fn too_little_traffic_is_inconclusive_never_a_pass() {
        let r = relative(&RelativeRule::default(), 0.8, &v12(5), &v12(300), "v1");
        assert_eq!(r.condition, Condition::Inconclusive);
        let e = errors(&ErrorsRule::default(), 0.8, &v12(300), &v12(3), "v1");
        assert_eq!(e.condition, Condition::Inconclusive);
    }

    #[test]
    fn big_ratio_on_a_tiny_endpoint_needs_the_minimum_difference() {
        let cand = summary(&[4.0; 50], 0);
        let base = summary(&[1.0; 50], 0);
        let r = relative(&RelativeRule::default(), 0.8, &cand, &base, "v1");
        assert_eq!(r.condition, Condition::Clear, "{r:?}");
    }

    #[test]
    fn between_thresholds_is_marginal() {
        // 1.45x: under the 1.5x firing factor, over the 1.4x clearing one.
        let cand = summary(&[145.0; 40], 0);
        let base = summary(&[100.0; 40], 0);
        let r = relative(&RelativeRule::default(), 0.8, &cand, &base, "v1");
        assert_eq!(r.condition, Condition::Marginal, "{r:?}");
        assert_eq!(Outcome::ALL.len(), 3);
    }
}
