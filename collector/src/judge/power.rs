//! Power: how many requests a rule needs before "no regression" means
//! something.
//!
//! A rule passes only when, had the candidate been worse by the rule's own
//! firing effect, the samples in hand would have caught it with probability
//! at least `judge.pass_power`. Catching it takes both tests a rule runs: the
//! fixed-sample test on the window (at the rule's `alpha`) and the e-value
//! over the epoch (which must reach its threshold). So the requests needed
//! are the larger of two numbers, each found by a search over the candidate
//! side's count (the baseline's is what it is):
//! - the fixed-sample test's power at the firing effect, from the normal
//!   approximations of Noether (1987, rank test) and of the one-sided
//!   one- and two-sample binomial tests (Fleiss, "Statistical Methods for
//!   Rates and Proportions", 3rd ed., 4.2);
//! - the e-value the test would show on data exactly at the firing effect
//!   (its expected statistic), which must reach the threshold.
//!
//! Pure functions; no clock, no state.

use crate::judge::stats;

/// Largest count searched for: beyond it "needs more than this many" is
/// the honest answer.
const SEARCH_MAX: u64 = 1 << 24;

/// What a rule needs before it may pass, and whether it has it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Power {
    /// The effect the rule must be able to detect, in the rule's terms (a
    /// latency factor, a rate, calls per request): its firing threshold.
    pub effect: f64,
    /// Requests the candidate needs (at the baseline's present count).
    pub candidate_needed: u64,
    /// Requests the baseline needs (with the candidate's present count);
    /// 0 for rules without a baseline.
    pub baseline_needed: u64,
    /// Both sides have what they need.
    pub sufficient: bool,
}

/// The upper `power` quantile of the standard normal, z with P(Z > z) = 1 - p.
fn z_of(p: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal};
    Normal::standard().inverse_cdf(p.clamp(1e-12, 1.0 - 1e-12))
}

/// The smallest `n` in `1..=SEARCH_MAX` with `ok(n)`, for `ok` monotone in
/// `n`; `None` when even the largest does not do.
fn smallest(ok: impl Fn(u64) -> bool) -> Option<u64> {
    if !ok(SEARCH_MAX) {
        return None;
    }
    let (mut lo, mut hi) = (0_u64, SEARCH_MAX);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// The baseline requests a two-sample test needs for `candidate_n`
/// candidate requests to be enough: the smallest `m` with
/// `candidate_needed(m) <= candidate_n` (more baseline requests never make
/// the candidate need more). `None` when no baseline size up to the
/// search's limit does.
pub fn baseline_for(
    candidate_n: u64,
    candidate_needed: impl Fn(u64) -> Option<u64>,
) -> Option<u64> {
    smallest(|m| candidate_needed(m).is_some_and(|n| n <= candidate_n))
}

/// The thresholds both tests must reach.
#[derive(Debug, Clone, Copy)]
pub struct Bar {
    /// The fixed-sample test's significance level.
    pub alpha: f64,
    /// The e-value needed.
    pub e_threshold: f64,
    /// The power wanted (`judge.pass_power`).
    pub power: f64,
}

impl Bar {
    /// z_alpha + z_beta: the standardised distance the effect must cover.
    fn z(&self) -> (f64, f64) {
        (z_of(1.0 - self.alpha), z_of(self.power))
    }
}

/// A one-sample rate test (`sla`, the error ceiling): the null rate `p0`
/// against the effect rate `p1` > `p0`. Requests needed on the one side.
pub fn one_rate(p0: f64, p1: f64, bar: &Bar) -> Option<u64> {
    // A NaN is no effect either.
    if p1.partial_cmp(&p0) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let (za, zb) = bar.z();
    let fixed = (za * (p0 * (1.0 - p0)).sqrt() + zb * (p1 * (1.0 - p1)).sqrt()) / (p1 - p0);
    let fixed = (fixed * fixed).ceil() as u64;
    let sequential = smallest(|n| {
        let k = (p1 * n as f64).floor() as u64;
        stats::bernoulli_e_value(k, n, p0) >= bar.e_threshold
    })?;
    Some(fixed.max(sequential).max(1))
}

/// A two-sample rate test (`errors` against the baseline): candidate rate
/// `p1` against the baseline's `p0`, with `baseline_n` baseline requests;
/// the e-value tests against `null`, the baseline's rate bounded above.
/// Candidate requests needed.
pub fn two_rates(p0: f64, p1: f64, baseline_n: u64, null: f64, bar: &Bar) -> Option<u64> {
    if p1.partial_cmp(&p0) != Some(std::cmp::Ordering::Greater) || baseline_n == 0 {
        return None;
    }
    let (za, zb) = bar.z();
    let m = baseline_n as f64;
    // Power of the pooled z-test with n candidate requests.
    let fixed = smallest(|n| {
        let n = n as f64;
        let pooled = (n * p1 + m * p0) / (n + m);
        let se0 = (pooled * (1.0 - pooled) * (1.0 / n + 1.0 / m)).sqrt();
        let se1 = (p1 * (1.0 - p1) / n + p0 * (1.0 - p0) / m).sqrt();
        p1 - p0 >= za * se0 + zb * se1
    })?;
    let sequential = smallest(|n| {
        let k = (p1 * n as f64).floor() as u64;
        stats::bernoulli_e_value(k, n, null) >= bar.e_threshold
    })?;
    Some(fixed.max(sequential))
}

/// The rank test against a candidate slower by `factor` in every request,
/// for a baseline whose log-latencies spread with standard deviation
/// `sigma_log`: P(C > B) = Phi(ln factor / (sigma_log sqrt 2)) under a
/// log-normal model. Candidate requests needed with `baseline_n` baseline
/// requests; `tau` is the rank e-value's mixture scale.
pub fn rank(factor: f64, sigma_log: f64, baseline_n: u64, tau: f64, bar: &Bar) -> Option<u64> {
    if factor.partial_cmp(&1.0) != Some(std::cmp::Ordering::Greater) || baseline_n == 0 {
        return None;
    }
    let sigma = sigma_log.max(0.01);
    let theta = 0.5 - stats::normal_sf(factor.ln() / (sigma * std::f64::consts::SQRT_2));
    let (za, zb) = bar.z();
    let m = baseline_n as f64;
    let sufficient = |n: u64| {
        let n = n as f64;
        // Variance of U / (n m) under the null (Noether): the fixed test
        // needs theta to clear z_alpha + z_beta standard errors.
        let variance = (n + m + 1.0) / (12.0 * n * m);
        let fixed = theta >= (za + zb) * variance.sqrt();
        fixed && stats::normal_mixture_e_value(theta, variance, tau) >= bar.e_threshold
    };
    smallest(sufficient)
}

/// The conditional test of two Poisson rates (`fanout`): a candidate whose
/// calls per request are `factor` times the baseline's `rate` (at least
/// `min_difference` more), with `baseline_n` baseline requests. Given all
/// calls, the candidate's share of them is binomial in its share of
/// requests under the null. Candidate requests needed.
pub fn calls(
    rate: f64,
    factor: f64,
    min_difference: f64,
    baseline_n: u64,
    bar: &Bar,
) -> Option<u64> {
    if baseline_n == 0 {
        return None;
    }
    let alternative = (rate * factor).max(rate + min_difference);
    let (za, zb) = bar.z();
    let m = baseline_n as f64;
    smallest(|n| {
        let n = n as f64;
        let share = n / (n + m);
        let (candidate, all) = (n * alternative, n * alternative + m * rate);
        let p1 = candidate / all;
        let fixed = (p1 - share) * all.sqrt()
            >= za * (share * (1.0 - share)).sqrt() + zb * (p1 * (1.0 - p1)).sqrt();
        let e = stats::bernoulli_e_value(candidate.floor() as u64, all.floor() as u64, share);
        fixed && e >= bar.e_threshold
    })
}

/// The spread of log-latency in a distribution with quartiles `p25` and
/// `p75` (ms): IQR / 1.349, the normal's, on the log scale.
pub fn sigma_log(p25: f64, p75: f64) -> f64 {
    if p25 > 0.0 && p75 > p25 {
        (p75 / p25).ln() / 1.349
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar() -> Bar {
        Bar {
            alpha: 0.01,
            e_threshold: 800.0,
            power: 0.9,
        }
    }

    #[test]
    fn one_rate_matches_the_textbook_and_needs_the_e_value_too() {
        // Fleiss 4.2: p0 = 0.05, p1 = 0.10, alpha 0.01 one-sided, power 0.9:
        // ((2.3263 * 0.2179 + 1.2816 * 0.3000) / 0.05)^2 = 317.9.
        let bar = Bar {
            e_threshold: 1.0,
            ..bar()
        };
        let fixed = one_rate(0.05, 0.10, &bar).unwrap();
        assert_eq!(fixed, 318);
        // The e-value of 800 needs more: the answer is the larger.
        let both = one_rate(0.05, 0.10, &super::tests::bar()).unwrap();
        assert!(both > fixed, "{both} vs {fixed}");
        assert!(
            stats::bernoulli_e_value((0.1 * both as f64) as u64, both, 0.05) >= 800.0,
            "{both}"
        );
        assert_eq!(one_rate(0.1, 0.05, &bar), None);
    }

    #[test]
    fn more_spread_or_a_smaller_shift_needs_more_requests() {
        let b = bar();
        let tight = rank(1.5, 0.2, 1000, 0.1, &b).unwrap();
        let wide = rank(1.5, 0.8, 1000, 0.1, &b).unwrap();
        let small = rank(1.2, 0.2, 1000, 0.1, &b).unwrap();
        assert!(tight < wide, "{tight} {wide}");
        assert!(tight < small, "{tight} {small}");
        // A big shift on a tight distribution needs a handful, not hundreds.
        assert!(tight < 60, "{tight}");
        // A tiny baseline can cap what any candidate count achieves.
        assert!(rank(1.2, 0.8, 3, 0.1, &b).is_none());
    }

    #[test]
    fn two_rates_needs_more_with_a_noisier_baseline() {
        let b = bar();
        let null =
            |m: u64| (0.01 + 2.0 * (0.01 * 0.99 / m as f64).sqrt() + 1.0 / m as f64).min(1.0);
        let big = two_rates(0.01, 0.06, 10_000, null(10_000), &b).unwrap();
        let small = two_rates(0.01, 0.06, 300, null(300), &b).unwrap();
        assert!(big < small, "{big} {small}");
    }

    #[test]
    fn the_baseline_needed_is_the_least_that_lets_the_candidate_count_suffice() {
        let b = bar();
        let null =
            |m: u64| (0.01 + 2.0 * (0.01 * 0.99 / m as f64).sqrt() + 1.0 / m as f64).min(1.0);
        let needed = |m: u64| two_rates(0.01, 0.06, m, null(m), &b);
        // A candidate with what a big baseline asks of it...
        let nc = needed(20_000).unwrap();
        let m = baseline_for(nc, needed).unwrap();
        // ...is enough from the least baseline that asks no more, and not
        // from one request fewer.
        assert!(needed(m).unwrap() <= nc);
        assert!(needed(m - 1).is_none_or(|n| n > nc), "{m}");
        assert!(m <= 20_000, "{m}");
        // A candidate short of what any baseline allows needs one that
        // does not exist.
        assert_eq!(baseline_for(1, needed), None);
    }

    #[test]
    fn sigma_from_quartiles() {
        // A log-normal with sigma 0.5: p75 / p25 = exp(2 * 0.6745 * 0.5).
        let ratio = (2.0_f64 * 0.674_49 * 0.5).exp();
        assert!((sigma_log(100.0, 100.0 * ratio) - 0.5).abs() < 1e-3);
        assert_eq!(sigma_log(0.0, 5.0), 0.0);
    }
}
