//! `sla`: the candidate's quantile against an absolute limit.

use std::borrow::Cow;
use std::cell::OnceCell;

use super::{
    decide, fmt_e, pct, pooled, power_words, ratio, settle, too_few_result, verdict_words,
    Candidate, Evidence, Level, Rule, RuleResult, Sequential, Severity, Test, Unit,
};
use crate::config::SlaRule;
use crate::judge::power::{self, Power};
use crate::judge::stats;

/// `sla`: the candidate's quantile over an absolute limit, on its window
/// (all endpoints' requests together, for a version). Critical: over the
/// limit; warning: over `warning_fraction` of it (the SLA at risk). An
/// exact binomial test on the window must find more than `1 - quantile` of
/// requests over the level's limit, and the epoch's e-value for that must
/// reach the threshold: one slow request among few never fires. Needs no
/// baseline.
pub fn sla(rule: &SlaRule, seq: &Sequential, candidates: &[Candidate<'_>]) -> RuleResult {
    let w = match candidates {
        [one] => Cow::Borrowed(one.window),
        many => Cow::Owned(pooled(many.iter().map(|c| c.window))),
    };
    let pooled_epoch = OnceCell::new();
    let epoch_of = || match candidates {
        [one] => one.epoch.get(),
        many => pooled_epoch.get_or_init(|| pooled(many.iter().map(|c| c.epoch.get()))),
    };
    let n = w.count();
    let limit = rule.limit.as_secs_f64() * 1e3;
    let limits = [limit * rule.warning_fraction, limit];
    let value = w.latency.quantile(rule.quantile).unwrap_or(0.0);
    let mut evidence = Evidence {
        candidate_count: n,
        quantile: rule.quantile,
        candidate_value: value,
        threshold: limit,
        ratio: ratio(value, limit),
        difference: value - limit,
        e_threshold: seq.e_threshold,
        ..Evidence::new(Unit::Ms, Test::Binomial)
    };
    let q = pct(rule.quantile);
    if n < rule.min_samples {
        return too_few_result(Rule::Sla, evidence, None, rule.min_samples);
    }
    let null_rate = 1.0 - rule.quantile;
    // Latencies read from histogram buckets are known to within the
    // resolution r: a reported v is a real latency in [v / (1 + r),
    // v / (1 - r)]. Only what is over a limit for certain counts over it,
    // and only what is under it for certain clears it; a coarse bucket
    // across the limit decides nothing (0 for spans and log records).
    let r = w.resolution.clamp(0.0, 0.99);
    let over = |l: f64| l * (1.0 + r);
    // The quantile is over a level's limit exactly when more than
    // (1 - quantile) of requests are: the binomial test asks that.
    let levels = limits.map(|l| {
        if value > over(l) {
            Level::Above
        } else if value <= l * (1.0 - r) {
            Level::Below
        } else {
            Level::Between
        }
    });
    let mut tested = [(1.0, 1.0, 0_u64); 2];
    let conditions = decide(levels, |severity| {
        let l = over(limits[severity.index()]);
        let above = w.latency.count_above(l);
        let epoch = epoch_of();
        let p = stats::binomial_at_least(above, n, null_rate);
        let e = stats::bernoulli_e_value(epoch.latency.count_above(l), epoch.count(), null_rate);
        tested[severity.index()] = (p, e, above);
        p <= rule.alpha && e >= seq.e_threshold
    });
    // Report the most severe level that was tested.
    let shown = Severity::ALL
        .into_iter()
        .rev()
        .find(|s| levels[s.index()] == Level::Above);
    let Some(shown) = shown else {
        if levels.contains(&Level::Between) {
            evidence.detail = format!(
                "not yet conclusive: {q} {value:.1} ms, read from histogram buckets known within {:.1}%, may be on either side of the {limit:.0} ms limit{}",
                r * 100.0,
                if limits[0] < limit {
                    format!(" or its {:.0} ms warning level", limits[0])
                } else {
                    String::new()
                }
            );
            return RuleResult {
                rule: Rule::Sla,
                conditions,
                evidence,
            };
        }
        let power = clear_power(rule, seq, n);
        evidence.detail = format!(
            "{q} {value:.1} ms within the {limit:.0} ms limit{}",
            power_words(&power, false)
        );
        evidence.power = Some(power);
        return RuleResult {
            rule: Rule::Sla,
            conditions,
            evidence,
        };
    };
    let (p, e, above) = tested[shown.index()];
    let l = limits[shown.index()];
    evidence.p_value = p;
    evidence.e_value = e;
    evidence.candidate_events = above;
    let what = if shown == Severity::Critical {
        format!("over the {limit:.0} ms limit")
    } else {
        format!(
            "over {:.0}% of the {limit:.0} ms limit ({l:.0} ms): the SLA is at risk",
            rule.warning_fraction * 100.0
        )
    };
    evidence.detail = format!(
        "{}{q} {value:.1} ms {what}: {above} of {n} requests above {:.0} ms (binomial p={p:.2e}, {})",
        verdict_words(&conditions),
        over(l),
        fmt_e(e, seq.e_threshold)
    );
    RuleResult {
        rule: Rule::Sla,
        conditions,
        evidence,
    }
}

/// What passing `sla` needs: the smallest breach worth catching is twice
/// the share over the limit that the quantile allows (10% over it, for
/// p95), seen by the binomial test and its e-value.
fn clear_power(rule: &SlaRule, seq: &Sequential, n: u64) -> Power {
    let null_rate = 1.0 - rule.quantile;
    let effect = (2.0 * null_rate).min(1.0);
    let bar = seq.bar(rule.alpha, seq.e_threshold);
    Power {
        effect,
        ..settle(power::one_rate(null_rate, effect, &bar), None, n, 0)
    }
}
