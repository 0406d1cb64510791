//! `fanout`: the candidate's database calls per request against its
//! baseline's (the e-commerce incident).

use super::{
    decide, fmt_e, power_words, ratio, settle, too_few_result, totals, verdict_words, Condition,
    Conditions, Evidence, Level, Pair, Rule, RuleResult, Sequential, Test, Unit,
};
use crate::aggregate::WindowSummary;
use crate::config::FanoutRule;
use crate::judge::power::{self, Power};
use crate::judge::stats;

/// `fanout`: the candidate's database calls per request over the
/// baseline's by the level's factor (`warning_factor`, `factor`) and by
/// `min_difference`, with the exact conditional test of two Poisson rates
/// (given all calls, the candidate's share is binomial in its share of
/// requests; summed across endpoints) on the window and its e-value on the
/// epoch.
pub fn fanout(
    rule: &FanoutRule,
    seq: &Sequential,
    baseline: &str,
    pairs: &[Pair<'_>],
) -> RuleResult {
    let (nc, nb) = totals(pairs, WindowSummary::count);
    let (cc, cb) = totals(pairs, |s| s.db_calls);
    let dc = cc as f64 / nc.max(1) as f64;
    let db = cb as f64 / nb.max(1) as f64;
    let r = ratio(dc, db.max(1.0 / nb.max(1) as f64));
    let mut evidence = Evidence {
        candidate_count: nc,
        baseline_count: nb,
        candidate_value: dc,
        baseline_value: db,
        threshold: (db * rule.factor).max(db + rule.min_difference),
        ratio: r,
        difference: dc - db,
        e_threshold: seq.e_threshold,
        candidate_events: cc,
        baseline_events: cb,
        ..Evidence::new(Unit::Calls, Test::Poisson)
    };
    // A histogram's requests carry no database calls: counting them as
    // requests with none would dilute the candidate's (or baseline's) rate.
    let binned: u64 = pairs
        .iter()
        .map(|p| p.candidate.window.binned + p.baseline.binned)
        .sum();
    if binned > 0 {
        evidence.binned = binned;
        evidence.detail = format!(
            "inconclusive: {binned} of the {} requests compared were read from histogram buckets, which carry no database calls",
            nc + nb
        );
        return RuleResult {
            rule: Rule::Fanout,
            conditions: Conditions::all(Condition::Inconclusive),
            evidence,
        };
    }
    if nc < rule.min_samples || nb < rule.min_samples {
        return too_few_result(Rule::Fanout, evidence, Some(nb), rule.min_samples);
    }
    let counts = format!("{dc:.1} database calls per request ({cc} calls / {nc} requests) vs {db:.1} ({cb} / {nb}) on {baseline}");
    let factors = [rule.warning_factor, rule.factor];
    let levels = factors.map(|f| {
        Level::of(r, f, 1.0 + (f - 1.0) * seq.clear_fraction).and(Level::of(
            dc - db,
            rule.min_difference,
            rule.min_difference * seq.clear_fraction,
        ))
    });
    if levels.iter().all(|l| *l == Level::Below) {
        let bar = seq.bar(rule.alpha, seq.e_threshold);
        let needed = |n: u64| power::calls(db, rule.factor, rule.min_difference, n, &bar);
        let power = Power {
            effect: rule.factor,
            ..settle(needed(nb), Some(power::baseline_for(nc, needed)), nc, nb)
        };
        evidence.detail = format!("{counts}{}", power_words(&power, true));
        evidence.power = Some(power);
        return RuleResult {
            rule: Rule::Fanout,
            conditions: Conditions::all(Condition::Clear),
            evidence,
        };
    }
    let share = |n: u64, m: u64| n as f64 / (n + m).max(1) as f64;
    let terms: Vec<(u64, u64, f64)> = pairs
        .iter()
        .map(|p| {
            let (cc, cb) = (p.candidate.window.db_calls, p.baseline.db_calls);
            (
                cc,
                cc + cb,
                share(p.candidate.window.count(), p.baseline.count()),
            )
        })
        .collect();
    let p_value = stats::binomials_at_least(&terms);
    let e_value = pairs
        .iter()
        .map(|p| {
            let epoch = p.candidate.epoch.get();
            stats::bernoulli_e_value(
                epoch.db_calls,
                epoch.db_calls + p.baseline.db_calls,
                share(epoch.count(), p.baseline.count()),
            )
        })
        .product::<f64>()
        .min(f64::MAX);
    evidence.p_value = p_value;
    evidence.e_value = e_value;
    let significant = p_value <= rule.alpha && e_value >= seq.e_threshold;
    let conditions = decide(levels, |_| significant);
    evidence.detail = format!(
        "{}{counts} ({r:.1}x, warning at {:.1}x, critical at {:.1}x): the candidate queries the database more, exact test p={p_value:.2e}, {}",
        verdict_words(&conditions),
        rule.warning_factor,
        rule.factor,
        fmt_e(e_value, seq.e_threshold)
    );
    RuleResult {
        rule: Rule::Fanout,
        conditions,
        evidence,
    }
}
