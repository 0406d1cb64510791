//! `errors`: the candidate's timeout and error rate against its baseline's,
//! or against an absolute ceiling.

use super::{
    decide, fmt_e, power_words, rate_upper, ratio, settle, too_few_result, totals, verdict_words,
    Candidate, Condition, Conditions, Evidence, Level, Pair, Rule, RuleResult, Sequential, Test,
    Unit,
};
use crate::aggregate::WindowSummary;
use crate::config::ErrorsRule;
use crate::extract::Outcome;
use crate::judge::power::{self, Power};
use crate::judge::stats;

/// `errors`: the candidate's timeout+error rate over the baseline's by at
/// least the level's margin (`warning_margin`, `margin`) on its window,
/// Fisher's exact test (Cochran-Mantel-Haenszel across endpoints) and the
/// epoch's e-value against the baseline's rate (bounded above). Without a
/// baseline (the baseline itself, or none to trust), the rate against the
/// absolute `ceiling`. Figures are rates; the sentence speaks in percentage
/// points.
pub fn errors(
    rule: &ErrorsRule,
    seq: &Sequential,
    candidates: &[Candidate<'_>],
    compared: Option<(&str, &[Pair<'_>])>,
) -> RuleResult {
    let Some((version, pairs)) = compared else {
        return ceiling(rule, seq, candidates);
    };
    let (nc, nb) = totals(pairs, WindowSummary::count);
    let (fc, fb) = totals(pairs, WindowSummary::failures);
    let rc = fc as f64 / nc.max(1) as f64;
    let rb = fb as f64 / nb.max(1) as f64;
    let mut evidence = Evidence {
        candidate_count: nc,
        baseline_count: nb,
        candidate_value: rc,
        baseline_value: rb,
        threshold: rb + rule.margin,
        // A baseline with no failures is floored at one in its sample, so
        // the ratio says "at least this many times worse", not infinity.
        ratio: ratio(rc, rb.max(1.0 / nb.max(1) as f64)),
        difference: rc - rb,
        e_threshold: seq.e_threshold,
        candidate_events: fc,
        baseline_events: fb,
        ..Evidence::new(Unit::Rate, Test::Fisher)
    };
    if nc < rule.min_samples || nb < rule.min_samples {
        return too_few_result(Rule::Errors, evidence, Some(nb), rule.min_samples);
    }
    let margins = [rule.warning_margin, rule.margin];
    let levels = margins.map(|m| Level::of(rc - rb, m, m * seq.clear_fraction));
    let rates = format!(
        "timeouts+errors {:.1}% ({fc} of {nc}) vs {:.1}% ({fb} of {nb}) on {version} ({:+.1} points)",
        rc * 100.0,
        rb * 100.0,
        (rc - rb) * 100.0
    );
    if levels.iter().all(|l| *l == Level::Below) {
        let power = margin_power(rule, seq, (fc, nc), (fb, nb));
        evidence.detail = format!("{rates}{}", power_words(&power, true));
        evidence.power = Some(power);
        return RuleResult {
            rule: Rule::Errors,
            conditions: Conditions::all(Condition::Clear),
            evidence,
        };
    }
    let (p_value, e_value) = rate_tests(pairs);
    evidence.p_value = p_value;
    evidence.e_value = e_value;
    let significant = p_value <= rule.alpha && e_value >= seq.e_threshold;
    let conditions = decide(levels, |_| significant);
    let timeouts: u64 = pairs
        .iter()
        .map(|p| p.candidate.window.outcomes[Outcome::Timeout.index()])
        .sum();
    let test = if pairs.len() == 1 { "Fisher" } else { "CMH" };
    evidence.detail = format!(
        "{}{rates}, {timeouts} timeouts; {test} p={p_value:.2e}, {}",
        verdict_words(&conditions),
        fmt_e(e_value, seq.e_threshold)
    );
    RuleResult {
        rule: Rule::Errors,
        conditions,
        evidence,
    }
}

/// What passing the margin needs: the two-rate test's power against the
/// baseline's rate plus `margin`, for failures and requests `(f, n)` of
/// each side.
fn margin_power(rule: &ErrorsRule, seq: &Sequential, c: (u64, u64), b: (u64, u64)) -> Power {
    let ((_, nc), (fb, nb)) = (c, b);
    let rb = fb as f64 / nb.max(1) as f64;
    let bar = seq.bar(rule.alpha, seq.e_threshold);
    let p1 = (rb + rule.margin).min(1.0);
    let candidate = power::two_rates(rb, p1, nb, rate_upper(fb, nb), &bar);
    // A baseline of `m` requests at the rate seen: its bound is that of
    // `rb * m` failures in `m`.
    let baseline_needed = power::baseline_for(nc, |m| {
        let failures = (rb * m as f64).round() as u64;
        power::two_rates(rb, p1, m, rate_upper(failures, m), &bar)
    });
    Power {
        effect: rule.margin,
        ..settle(candidate, Some(baseline_needed), nc, nb)
    }
}

/// The candidate's failure rate above the baseline's: (p on the windows,
/// e over the epochs). One endpoint: Fisher's exact test; several:
/// Cochran-Mantel-Haenszel, and the product of the endpoints' e-values.
fn rate_tests(pairs: &[Pair<'_>]) -> (f64, f64) {
    let p_value = match pairs {
        [one] => stats::rate_greater(
            one.candidate.window.failures(),
            one.candidate.window.count(),
            one.baseline.failures(),
            one.baseline.count(),
        ),
        many => stats::cmh_greater(
            &many
                .iter()
                .map(|p| {
                    (
                        p.candidate.window.failures(),
                        p.candidate.window.count(),
                        p.baseline.failures(),
                        p.baseline.count(),
                    )
                })
                .collect::<Vec<_>>(),
        ),
    };
    let e_value = pairs
        .iter()
        .map(|p| {
            let epoch = p.candidate.epoch.get();
            let null = rate_upper(p.baseline.failures(), p.baseline.count());
            stats::bernoulli_e_value(epoch.failures(), epoch.count(), null)
        })
        .product::<f64>()
        .min(f64::MAX);
    (p_value, e_value)
}

/// `errors` without a baseline: the rate over the absolute ceiling
/// (critical), with the exact binomial test and its e-value.
fn ceiling(rule: &ErrorsRule, seq: &Sequential, candidates: &[Candidate<'_>]) -> RuleResult {
    let nc: u64 = candidates.iter().map(|c| c.window.count()).sum();
    let fc: u64 = candidates.iter().map(|c| c.window.failures()).sum();
    let rc = fc as f64 / nc.max(1) as f64;
    let mut evidence = Evidence {
        candidate_count: nc,
        candidate_value: rc,
        threshold: rule.ceiling,
        ratio: ratio(rc, rule.ceiling),
        difference: rc - rule.ceiling,
        e_threshold: seq.e_threshold,
        candidate_events: fc,
        ..Evidence::new(Unit::Rate, Test::Binomial)
    };
    if nc < rule.min_samples {
        return too_few_result(Rule::Errors, evidence, None, rule.min_samples);
    }
    let level = Level::of(rc, rule.ceiling, rule.ceiling * seq.clear_fraction);
    // The ceiling is a single, critical level; a warning is the same call.
    let levels = [level, level];
    let mut tested = (1.0, 1.0);
    let conditions = decide(levels, |_| {
        let epoch_failures: u64 = candidates.iter().map(|c| c.epoch.get().failures()).sum();
        let epoch_n: u64 = candidates.iter().map(|c| c.epoch.get().count()).sum();
        tested = (
            stats::binomial_at_least(fc, nc, rule.ceiling),
            stats::bernoulli_e_value(epoch_failures, epoch_n, rule.ceiling),
        );
        tested.0 <= rule.alpha && tested.1 >= seq.e_threshold
    });
    (evidence.p_value, evidence.e_value) = tested;
    let rate = format!(
        "timeouts+errors {:.1}% ({fc} of {nc}) against the {:.1}% ceiling ({:+.1} points)",
        rc * 100.0,
        rule.ceiling * 100.0,
        (rc - rule.ceiling) * 100.0
    );
    evidence.detail = if level == Level::Below {
        // As for `sla`: a rate well over the ceiling (twice it, or half
        // way to every request failing) must have been visible.
        let bar = seq.bar(rule.alpha, seq.e_threshold);
        let effect = (2.0 * rule.ceiling).min((1.0 + rule.ceiling) / 2.0);
        let power = Power {
            effect,
            ..settle(power::one_rate(rule.ceiling, effect, &bar), None, nc, 0)
        };
        evidence.power = Some(power);
        format!("{rate}{}", power_words(&power, false))
    } else {
        format!(
            "{}{rate}; binomial p={:.2e}, {}",
            verdict_words(&conditions),
            evidence.p_value,
            fmt_e(evidence.e_value, seq.e_threshold)
        )
    };
    RuleResult {
        rule: Rule::Errors,
        conditions,
        evidence,
    }
}
