//! `relative`: the candidate slower than its baseline anywhere in the
//! distribution.

use std::fmt::Write as _;

use super::{
    decide, fmt_e, pct, power_words, rate_upper, ratio, settle, too_few_result, totals,
    verdict_words, Condition, Conditions, Evidence, Level, Pair, Rule, RuleResult, Sequential,
    Severity, Test, Unit,
};
use crate::aggregate::{Sketch, WindowSummary};
use crate::config::RelativeRule;
use crate::judge::power::{self, Power};
use crate::judge::stats;

/// The quantiles `relative` compares, each with both sides' values.
#[derive(Debug, Clone, Copy)]
struct Moved {
    q: f64,
    candidate: f64,
    baseline: f64,
}

impl Moved {
    fn ratio(&self) -> f64 {
        ratio(self.candidate, self.baseline)
    }
}

/// Per quantile, the candidate's and the baseline's value over `pairs`: on
/// one endpoint the two distributions' quantiles; across endpoints, the
/// geometric mean of the endpoints' ratios weighted by candidate requests,
/// applied to the weighted mean baseline value (so a change in the mix of
/// endpoints is not taken for a slowdown).
fn quantiles(rule: &RelativeRule, pairs: &[Pair<'_>]) -> Vec<Moved> {
    let mut out = Vec::with_capacity(rule.quantiles.len());
    for &q in &rule.quantiles {
        let (mut log_ratio, mut base, mut weight) = (0.0, 0.0, 0.0);
        for p in pairs {
            let (c, b) = (
                p.candidate.window.latency.quantile(q),
                p.baseline.latency.quantile(q),
            );
            if let (Some(c), Some(b)) = (c, b) {
                let w = p.candidate.window.count() as f64;
                log_ratio += w * ratio(c.max(1e-9), b.max(1e-9)).ln();
                base += w * b;
                weight += w;
            }
        }
        if weight > 0.0 {
            let baseline = base / weight;
            out.push(Moved {
                q,
                candidate: baseline * (log_ratio / weight).exp(),
                baseline,
            });
        }
    }
    out
}

/// A quantile's estimate is trusted for the effect when both sides hold
/// enough requests beyond it: five expected on each side.
fn estimable(q: f64, nc: u64, nb: u64) -> bool {
    let tail = 1.0 - q;
    q <= 0.5 || (nc as f64 * tail >= 5.0 && nb as f64 * tail >= 5.0)
}

/// `relative`: the candidate slower than the baseline anywhere in the
/// distribution. The effect is the largest ratio over `quantiles` (p50 to
/// p99, each only where both sides have enough requests beyond it) that is
/// also slower by `min_difference`; a level breaches when it reaches the
/// level's factor (`warning_factor`, `factor`) and either of two tests
/// says so, each at half the rule's e-value budget: the rank test (a shift
/// of the whole distribution or of its middle), or the share of candidate
/// requests beyond the level's factor times the baseline's quantile against
/// the baseline's own share there (a shift of the tail, or of a share of
/// requests), Bonferroni over quantiles and levels.
pub fn relative(
    rule: &RelativeRule,
    seq: &Sequential,
    baseline: &str,
    pairs: &[Pair<'_>],
) -> RuleResult {
    let (nc, nb) = totals(pairs, WindowSummary::count);
    let mut evidence = Evidence {
        candidate_count: nc,
        baseline_count: nb,
        ..Evidence::new(Unit::Ms, Test::Rank)
    };
    if nc < rule.min_samples || nb < rule.min_samples {
        return too_few_result(Rule::Relative, evidence, Some(nb), rule.min_samples);
    }
    let min_diff = rule.min_difference.as_secs_f64() * 1e3;
    let moved: Vec<Moved> = quantiles(rule, pairs)
        .into_iter()
        .filter(|m| estimable(m.q, nc, nb))
        .collect();
    let factors = [rule.warning_factor, rule.factor];
    let clear = factors.map(|f| 1.0 + (f - 1.0) * seq.clear_fraction);
    let level_at = |m: &Moved, s: Severity| {
        Level::of(m.ratio(), factors[s.index()], clear[s.index()]).and(Level::of(
            m.candidate - m.baseline,
            min_diff,
            min_diff * seq.clear_fraction,
        ))
    };
    let level = |s: Severity| {
        moved
            .iter()
            .map(|m| level_at(m, s))
            .max_by_key(|l| *l as u8)
            .unwrap_or(Level::Below)
    };
    let levels = [level(Severity::Warning), level(Severity::Critical)];
    effect_sizes(&mut evidence, rule, pairs, &moved);
    if levels.iter().all(|l| *l == Level::Below) {
        let power = relative_power(rule, seq, pairs, nc, nb);
        evidence.detail = format!(
            "{}{}",
            moved_words(&moved, baseline, None),
            power_words(&power, true)
        );
        evidence.power = Some(power);
        return RuleResult {
            rule: Rule::Relative,
            conditions: Conditions::all(Condition::Clear),
            evidence,
        };
    }
    let tests = RelativeTests::run(rule, seq, pairs, &moved, &factors, &levels);
    let conditions = decide(levels, |s| tests.decides(s));
    let shown = conditions.breached().unwrap_or(Severity::Warning);
    let (test, p_value, e_value, e_needed) = tests.headline(shown);
    evidence.test = test;
    evidence.p_value = p_value;
    evidence.e_value = e_value;
    evidence.e_threshold = e_needed;
    (evidence.candidate_events, evidence.baseline_events) = tests.tail_counts;
    if let [one] = pairs {
        evidence.shift =
            stats::hodges_lehmann(&one.candidate.window.latency, &one.baseline.latency, 0.95);
    }
    let shift = evidence.shift.map_or(String::new(), |s| {
        format!(
            ", shift {:+.1} ms [{:+.1}, {:+.1}]",
            s.estimate, s.low, s.high
        )
    });
    let share = evidence.share_beyond_p95.map_or(String::new(), |s| {
        format!(", {:.1}% of requests beyond {baseline}'s p95", s * 100.0)
    });
    evidence.detail = format!(
        "{}{}{shift}{share}; {} test p={p_value:.2e}, {}",
        verdict_words(&conditions),
        moved_words(&moved, baseline, Some((rule.warning_factor, rule.factor))),
        test.as_str(),
        fmt_e(e_value, e_needed)
    );
    RuleResult {
        rule: Rule::Relative,
        conditions,
        evidence,
    }
}

/// The effect sizes users read: the quantile that moved most (its values,
/// ratio and difference) and the share of candidate requests beyond the
/// baseline's p95.
fn effect_sizes(evidence: &mut Evidence, rule: &RelativeRule, pairs: &[Pair<'_>], moved: &[Moved]) {
    let headline = moved
        .iter()
        .copied()
        .max_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    if let Some(m) = headline {
        evidence.quantile = m.q;
        evidence.candidate_value = m.candidate;
        evidence.baseline_value = m.baseline;
        evidence.ratio = m.ratio();
        evidence.difference = m.candidate - m.baseline;
        evidence.threshold = m.baseline * rule.factor;
    }
    let beyond: u64 = pairs
        .iter()
        .map(|p| {
            p.baseline
                .latency
                .quantile(0.95)
                .map_or(0, |b| p.candidate.window.latency.count_above(b))
        })
        .sum();
    evidence.share_beyond_p95 = Some(beyond as f64 / evidence.candidate_count.max(1) as f64);
}

/// "p50 250.0 ms vs 100.0 ms (2.50x), p95 ... on v1.2": the quantiles, the
/// ones that moved first.
fn moved_words(moved: &[Moved], baseline: &str, limits: Option<(f64, f64)>) -> String {
    let mut sorted: Vec<&Moved> = moved.iter().collect();
    sorted.sort_by(|a, b| b.ratio().total_cmp(&a.ratio()));
    let mut out = String::new();
    for (i, m) in sorted.iter().take(3).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(
            out,
            "{} {:.1} ms vs {:.1} ms ({:.2}x)",
            pct(m.q),
            m.candidate,
            m.baseline,
            m.ratio()
        );
    }
    let _ = write!(out, " on {baseline}");
    if let Some((warning, critical)) = limits {
        let _ = write!(
            out,
            " (warning at {warning:.2}x, critical at {critical:.2}x)"
        );
    }
    out
}

/// The tests of `relative`, run once for both severities.
struct RelativeTests {
    rank: (f64, f64),
    /// Per severity, the best tail test: (p, e) at the quantile that
    /// decides, or that comes closest.
    tail: [(f64, f64); 2],
    tail_counts: (u64, u64),
    rank_needed: f64,
    tail_needed: f64,
    alpha: f64,
}

impl RelativeTests {
    fn run(
        rule: &RelativeRule,
        seq: &Sequential,
        pairs: &[Pair<'_>],
        moved: &[Moved],
        factors: &[f64; 2],
        levels: &[Level; 2],
    ) -> Self {
        let min_diff = rule.min_difference.as_secs_f64() * 1e3;
        // Half the budget for each test; the tail's half is split again
        // over the quantiles and the two levels it may be asked at.
        let rank_needed = 2.0 * seq.e_threshold;
        let tail_needed = rank_needed * (2 * moved.len().max(1)) as f64;
        let rank = rank_test(pairs, seq.rank_effect_scale);
        let mut tail = [(1.0, 1.0); 2];
        let mut tail_counts = (0, 0);
        for s in Severity::ALL {
            if levels[s.index()] == Level::Below {
                continue;
            }
            for m in moved {
                let limit_of = |b: &Sketch| {
                    let bq = b.quantile(m.q).unwrap_or(0.0);
                    (bq * factors[s.index()]).max(bq + min_diff)
                };
                let t = tail_test(pairs, limit_of);
                let best = &mut tail[s.index()];
                let decides = |p: f64, e: f64| p <= rule.alpha && e >= tail_needed;
                let better = match (decides(t.p, t.e), decides(best.0, best.1)) {
                    (true, false) => true,
                    (false, true) => false,
                    _ => t.e > best.1,
                };
                if better {
                    *best = (t.p, t.e);
                    if s == Severity::Critical || tail_counts == (0, 0) {
                        tail_counts = (t.candidate, t.baseline);
                    }
                }
            }
        }
        Self {
            rank,
            tail,
            tail_counts,
            rank_needed,
            tail_needed,
            alpha: rule.alpha,
        }
    }

    fn rank_decides(&self) -> bool {
        self.rank.0 <= self.alpha && self.rank.1 >= self.rank_needed
    }

    fn tail_decides(&self, s: Severity) -> bool {
        let (p, e) = self.tail[s.index()];
        p <= self.alpha && e >= self.tail_needed
    }

    fn decides(&self, s: Severity) -> bool {
        self.rank_decides() || self.tail_decides(s)
    }

    /// (test, p, e, e needed) of the test to show for `s`.
    fn headline(&self, s: Severity) -> (Test, f64, f64, f64) {
        let tail = self.tail[s.index()];
        let tail_closer = tail.1 / self.tail_needed > self.rank.1 / self.rank_needed;
        if self.rank_decides() || (!self.tail_decides(s) && !tail_closer) {
            (Test::Rank, self.rank.0, self.rank.1, self.rank_needed)
        } else {
            (Test::Tail, tail.0, tail.1, self.tail_needed)
        }
    }
}

/// The rank test over `pairs`: (p on the windows, e over the epochs). One
/// endpoint: Mann-Whitney (exact on small samples); several: van Elteren,
/// and the product of the endpoints' e-values.
fn rank_test(pairs: &[Pair<'_>], tau: f64) -> (f64, f64) {
    let windows: Vec<stats::RankTest> = pairs
        .iter()
        .filter_map(|p| {
            stats::mann_whitney_greater(&p.candidate.window.latency, &p.baseline.latency)
        })
        .collect();
    let p = match windows.as_slice() {
        [] => 1.0,
        [one] => one.p_value,
        many => stats::van_elteren_greater(many),
    };
    let e = pairs
        .iter()
        .map(|pair| {
            let epoch = pair.candidate.epoch.get();
            stats::mann_whitney_greater(&epoch.latency, &pair.baseline.latency).map_or(1.0, |t| {
                stats::rank_e_value(&t, epoch.count(), pair.baseline.count(), tau)
            })
        })
        .product::<f64>()
        .min(f64::MAX);
    (p, e)
}

/// A tail test's answer.
struct Tail {
    p: f64,
    e: f64,
    candidate: u64,
    baseline: u64,
}

/// Candidate requests beyond `limit_of(baseline)` on each endpoint, against
/// the baseline's own share there (bounded above): exact binomial on one
/// endpoint, a sum of binomials on several; e-values multiply.
fn tail_test(pairs: &[Pair<'_>], limit_of: impl Fn(&Sketch) -> f64) -> Tail {
    let mut terms = Vec::with_capacity(pairs.len());
    let (mut e, mut cand, mut base) = (1.0_f64, 0, 0);
    for p in pairs {
        let limit = limit_of(&p.baseline.latency);
        let b = p.baseline.latency.count_above(limit);
        let null = rate_upper(b, p.baseline.count());
        let k = p.candidate.window.latency.count_above(limit);
        terms.push((k, p.candidate.window.count(), null));
        let epoch = p.candidate.epoch.get();
        e *= stats::bernoulli_e_value(epoch.latency.count_above(limit), epoch.count(), null);
        cand += k;
        base += b;
    }
    Tail {
        p: stats::binomials_at_least(&terms),
        e: e.min(f64::MAX),
        candidate: cand,
        baseline: base,
    }
}

/// What `relative` needs to pass: the rank test's power against a slowdown
/// of `factor` in every request, for the baselines' spread.
fn relative_power(
    rule: &RelativeRule,
    seq: &Sequential,
    pairs: &[Pair<'_>],
    nc: u64,
    nb: u64,
) -> Power {
    let mut baseline = Sketch::new();
    for p in pairs {
        baseline.merge(&p.baseline.latency);
    }
    let sigma = power::sigma_log(
        baseline.quantile(0.25).unwrap_or(0.0),
        baseline.quantile(0.75).unwrap_or(0.0),
    );
    let bar = seq.bar(rule.alpha, 2.0 * seq.e_threshold);
    let tau = seq.rank_effect_scale;
    let candidate = power::rank(rule.factor, sigma, nb, tau, &bar);
    // The baseline side: what it needs for the candidate's count (the
    // rank test is symmetric in the two sample sizes).
    let baseline_needed = power::rank(rule.factor, sigma, nc, tau, &bar);
    Power {
        effect: rule.factor,
        ..settle(candidate, Some(baseline_needed), nc, nb)
    }
}
