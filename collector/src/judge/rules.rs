//! The rules: one candidate window (and a baseline) -> a [`RuleResult`].
//!
//! Pure functions. Each rule answers with a [`Condition`] and the
//! [`Evidence`] that decided it. Too little traffic is `Inconclusive`, never
//! a pass; an effect between the firing and the clearing threshold is
//! `Marginal`, which keeps an alert in whatever state it is (hysteresis).
//!
//! Every rule needs three things to breach: an effect large enough to matter
//! (on the candidate window), a fixed-sample test on the window (exact on
//! small samples), and an e-value over the candidate's evidence epoch that
//! reaches the rule's threshold (see `config::SequentialPolicy`), which is
//! what keeps false alarms rare although the judge looks every second.

use std::cell::OnceCell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::aggregate::WindowSummary;
use crate::config::{ErrorsRule, FanoutRule, RelativeRule, SlaRule};
use crate::extract::Outcome;
use crate::judge::stats;

/// Which rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Rule {
    /// Candidate quantile over an absolute limit.
    Sla,
    /// Candidate quantile over the baseline's by a factor, significant.
    Relative,
    /// Candidate timeout+error rate over the baseline's by a margin, significant.
    Errors,
    /// Candidate database calls per request over the baseline's by a factor.
    Fanout,
}

impl Rule {
    /// The `rule` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::Sla => "sla",
            Rule::Relative => "relative",
            Rule::Errors => "errors",
            Rule::Fanout => "fanout",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule concluded at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Fixed-sample significance on the window; 1 when no test applies.
    pub p_value: f64,
    /// Evidence accumulated over the epoch (always valid); 1 when none.
    pub e_value: f64,
    /// The e-value needed to fire.
    pub e_threshold: f64,
    /// Which test decided: "binomial", "rank", "tail", "fisher", "poisson".
    #[serde(deserialize_with = "static_name")]
    pub test: StaticName,
    /// Events behind the rate: requests over the limit (sla), beyond
    /// `factor` x the baseline's quantile (relative), failures (errors),
    /// database calls (fanout); candidate side.
    pub candidate_events: u64,
    /// The same on the baseline side.
    pub baseline_events: u64,
    /// Hodges-Lehmann shift of the candidate over the baseline, ms, with its
    /// 95% interval (latency rules with a baseline).
    pub shift: Option<stats::Shift>,
    /// "ms", "rate" or "calls".
    #[serde(deserialize_with = "static_name")]
    pub unit: StaticName,
    /// One sentence.
    pub detail: String,
}

/// A name fixed at build time. An alias so that serde does not take the
/// field for one borrowed from the input (which would tie reading a
/// snapshot to a `'static` buffer); [`static_name`] reads it back.
type StaticName = &'static str;

/// Every fixed name a snapshot holds: [`Evidence::test`] and
/// [`Evidence::unit`] values, rule and alert state names.
const STATIC_NAMES: [&str; 16] = [
    "binomial", "rank", "tail", "fisher", "poisson", "ms", "rate", "calls", "sla", "relative",
    "errors", "fanout", "inactive", "pending", "firing", "resolved",
];

/// Reads a test or unit name back (from a snapshot) as the `'static` name
/// the rules use; a name this build does not know reads as `"unknown"`
/// rather than leaking a string or refusing the whole snapshot.
pub(crate) fn static_name<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let name = String::deserialize(d)?;
    Ok(STATIC_NAMES
        .iter()
        .find(|n| **n == name)
        .copied()
        .unwrap_or("unknown"))
}

impl Evidence {
    fn new(rule_unit: &'static str, test: &'static str) -> Self {
        Self {
            candidate_count: 0,
            baseline_count: 0,
            quantile: 0.0,
            candidate_value: 0.0,
            baseline_value: 0.0,
            threshold: 0.0,
            ratio: 1.0,
            p_value: 1.0,
            e_value: 1.0,
            e_threshold: 1.0,
            test,
            candidate_events: 0,
            baseline_events: 0,
            shift: None,
            unit: rule_unit,
            detail: String::new(),
        }
    }
}

/// One rule's judgement of one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleResult {
    /// The rule.
    pub rule: Rule,
    /// Its conclusion.
    pub condition: Condition,
    /// Why.
    pub evidence: Evidence,
}

/// What a rule sees of the candidate: its recent window (effect sizes, the
/// fixed-sample test) and everything since its epoch began (the e-value).
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The candidate window.
    pub window: &'a WindowSummary,
    /// Since the start of the current evidence epoch, summarized only when a
    /// test needs it.
    pub epoch: &'a Epoch<'a>,
}

/// The candidate's evidence epoch: merged from its slots on first use, since
/// most evaluations end before any test needs it.
pub struct Epoch<'a> {
    summary: OnceCell<WindowSummary>,
    make: Box<dyn Fn() -> WindowSummary + 'a>,
}

impl<'a> Epoch<'a> {
    /// An epoch summarized by `make` when first needed.
    pub fn lazy(make: impl Fn() -> WindowSummary + 'a) -> Self {
        Self {
            summary: OnceCell::new(),
            make: Box::new(make),
        }
    }

    /// An epoch already summarized.
    pub fn of(summary: WindowSummary) -> Self {
        Self {
            summary: OnceCell::from(summary),
            make: Box::new(WindowSummary::default),
        }
    }

    /// The summary.
    pub fn get(&self) -> &WindowSummary {
        self.summary.get_or_init(|| (self.make)())
    }
}

impl fmt::Debug for Epoch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Epoch")
            .field("summary", &self.summary.get())
            .finish_non_exhaustive()
    }
}

/// The baseline a candidate is compared with: its horizon.
#[derive(Debug, Clone, Copy)]
pub struct Baseline<'a> {
    /// Its version.
    pub version: &'a str,
    /// Its traffic over the baseline horizon.
    pub horizon: &'a WindowSummary,
}

/// Sequential thresholds shared by the rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sequential {
    /// E-value a rule's evidence must reach (1 / its alpha per epoch).
    pub e_threshold: f64,
    /// Prior scale of the rank test's mixture.
    pub rank_effect_scale: f64,
    /// Hysteresis: fraction of the firing threshold under which it clears.
    pub clear_fraction: f64,
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

/// An upper confidence bound for a rate estimated as `k / n`: the estimate
/// plus two standard errors plus one event, so that the baseline's own
/// sampling noise (and a baseline with no events yet) cannot masquerade as
/// the candidate's excess.
fn rate_upper(k: u64, n: u64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let p = k as f64 / n as f64;
    (p + 2.0 * (p * (1.0 - p) / n as f64).sqrt() + 1.0 / n as f64).min(1.0)
}

fn inconclusive(
    rule: Rule,
    mut evidence: Evidence,
    nc: u64,
    nb: Option<u64>,
    min: u64,
) -> RuleResult {
    evidence.detail = match nb {
        Some(nb) => format!(
            "inconclusive: {nc} candidate and {nb} baseline requests, {min} needed on each side"
        ),
        None => format!("inconclusive: {nc} requests, {min} needed"),
    };
    RuleResult {
        rule,
        condition: Condition::Inconclusive,
        evidence,
    }
}

fn fmt_e(e: f64, threshold: f64) -> String {
    if e >= 1e300 {
        format!("e>1e300 (fires at {threshold:.0})")
    } else {
        format!("e={e:.3e} (fires at {threshold:.0})")
    }
}

/// `sla`: the candidate's quantile over an absolute limit. The window's
/// quantile must exceed the limit, an exact binomial test on the window must
/// find more than `1 - quantile` of requests over it, and the epoch's
/// e-value for that must reach the threshold: one slow request among few
/// never fires. Needs no baseline. The tests run only when the quantile is
/// over the limit: a judge of 100,000 series spends nothing on healthy ones.
pub fn sla(rule: &SlaRule, seq: &Sequential, candidate: Candidate<'_>) -> RuleResult {
    let w = candidate.window;
    let n = w.count();
    let limit_ms = rule.limit.as_secs_f64() * 1e3;
    let value = w.latency.quantile(rule.quantile).unwrap_or(0.0);
    let mut evidence = Evidence {
        candidate_count: n,
        quantile: rule.quantile,
        candidate_value: value,
        threshold: limit_ms,
        ratio: ratio(value, limit_ms),
        e_threshold: seq.e_threshold,
        ..Evidence::new("ms", "binomial")
    };
    if n < rule.min_samples {
        return inconclusive(Rule::Sla, evidence, n, None, rule.min_samples);
    }
    let q = pct(rule.quantile);
    if value <= limit_ms {
        evidence.detail = format!("{q} {value:.1} ms within the {limit_ms:.0} ms limit");
        return RuleResult {
            rule: Rule::Sla,
            condition: Condition::Clear,
            evidence,
        };
    }
    let above = w.latency.count_above(limit_ms);
    let null_rate = 1.0 - rule.quantile;
    let p_value = stats::binomial_at_least(above, n, null_rate);
    let epoch = candidate.epoch.get();
    let e_value = stats::bernoulli_e_value(
        epoch.latency.count_above(limit_ms),
        epoch.count(),
        null_rate,
    );
    evidence.p_value = p_value;
    evidence.e_value = e_value;
    evidence.candidate_events = above;
    let (condition, detail) = if p_value <= rule.alpha && e_value >= seq.e_threshold {
        (
            Condition::Breach,
            format!("{q} {value:.1} ms over the {limit_ms:.0} ms limit: {above} of {n} requests above it (binomial p={p_value:.2e}, {})", fmt_e(e_value, seq.e_threshold)),
        )
    } else {
        (
            Condition::Marginal,
            format!("{q} {value:.1} ms over the {limit_ms:.0} ms limit, not yet conclusive: {above} of {n} above it (p={p_value:.2e}, {})", fmt_e(e_value, seq.e_threshold)),
        )
    };
    evidence.detail = detail;
    RuleResult {
        rule: Rule::Sla,
        condition,
        evidence,
    }
}

/// `relative`: the candidate's quantile over the baseline's by `factor` and
/// by at least `min_difference` (effect sizes, on the window), with evidence
/// from either of two tests on the epoch, each at half the rule's budget: a
/// Mann-Whitney rank test (shifts of the whole distribution) or the share of
/// candidate requests beyond `factor` times the baseline's quantile against
/// the baseline's own share there (shifts of the tail).
/// The tests run only when the effect is not clearly absent.
pub fn relative(
    rule: &RelativeRule,
    seq: &Sequential,
    candidate: Candidate<'_>,
    baseline: Baseline<'_>,
) -> RuleResult {
    let (w, b) = (candidate.window, baseline.horizon);
    let (nc, nb) = (w.count(), b.count());
    let qc = w.latency.quantile(rule.quantile).unwrap_or(0.0);
    let qb = b.latency.quantile(rule.quantile).unwrap_or(0.0);
    let r = ratio(qc, qb);
    let diff = qc - qb;
    let min_diff = rule.min_difference.as_secs_f64() * 1e3;
    let e_needed = 2.0 * seq.e_threshold;
    let mut evidence = Evidence {
        candidate_count: nc,
        baseline_count: nb,
        quantile: rule.quantile,
        candidate_value: qc,
        baseline_value: qb,
        threshold: qb * rule.factor,
        ratio: r,
        e_threshold: e_needed,
        ..Evidence::new("ms", "rank")
    };
    if nc < rule.min_samples || nb < rule.min_samples {
        return inconclusive(Rule::Relative, evidence, nc, Some(nb), rule.min_samples);
    }
    let q = pct(rule.quantile);
    let version = baseline.version;
    let clear_factor = 1.0 + (rule.factor - 1.0) * seq.clear_fraction;
    if r < clear_factor || diff < min_diff * seq.clear_fraction {
        evidence.detail = format!("{q} {qc:.1} ms vs {qb:.1} ms on {version} ({r:.2}x)");
        return RuleResult {
            rule: Rule::Relative,
            condition: Condition::Clear,
            evidence,
        };
    }
    let epoch = candidate.epoch.get();
    // Whole-distribution shift: the rank test.
    let rank_p = stats::mann_whitney_greater(&w.latency, &b.latency).map_or(1.0, |t| t.p_value);
    let rank_e = stats::mann_whitney_greater(&epoch.latency, &b.latency).map_or(1.0, |t| {
        stats::rank_e_value(&t, epoch.count(), nb, seq.rank_effect_scale)
    });
    // Tail shift: requests beyond the rule's own limit (factor x the
    // baseline's quantile), against the baseline's rate there (upper bound).
    let tail_limit = (qb * rule.factor).max(qb + min_diff);
    let tail_base = b.latency.count_above(tail_limit);
    let tail_null = rate_upper(tail_base, nb);
    let tail_k = w.latency.count_above(tail_limit);
    let tail_p = stats::binomial_at_least(tail_k, nc, tail_null);
    let tail_e = stats::bernoulli_e_value(
        epoch.latency.count_above(tail_limit),
        epoch.count(),
        tail_null,
    );
    let rank_decides = rank_p <= rule.alpha && rank_e >= e_needed;
    let tail_decides = tail_p <= rule.alpha && tail_e >= e_needed;
    let (test, p_value, e_value) = if rank_decides || (!tail_decides && rank_e >= tail_e) {
        ("rank", rank_p, rank_e)
    } else {
        ("tail", tail_p, tail_e)
    };
    evidence.test = test;
    evidence.p_value = p_value;
    evidence.e_value = e_value;
    evidence.candidate_events = tail_k;
    evidence.baseline_events = tail_base;
    evidence.shift = stats::hodges_lehmann(&w.latency, &b.latency, 0.95);
    let shift = evidence.shift.map_or(String::new(), |s| {
        format!(
            ", shift {:+.1} ms [{:+.1}, {:+.1}]",
            s.estimate, s.low, s.high
        )
    });
    let (condition, detail) = if r >= rule.factor
        && diff >= min_diff
        && (rank_decides || tail_decides)
    {
        (
            Condition::Breach,
            format!("{q} {qc:.1} ms vs {qb:.1} ms on {version} ({r:.2}x, limit {:.2}x){shift}; {test} test p={p_value:.2e}, {}; {tail_k} of {nc} beyond {tail_limit:.1} ms ({tail_base} of {nb} on {version})", rule.factor, fmt_e(e_value, e_needed)),
        )
    } else {
        (
            Condition::Marginal,
            format!("{q} {qc:.1} ms vs {qb:.1} ms on {version} ({r:.2}x){shift}, not yet conclusive: {test} test p={p_value:.2e}, {}", fmt_e(e_value, e_needed)),
        )
    };
    evidence.detail = detail;
    RuleResult {
        rule: Rule::Relative,
        condition,
        evidence,
    }
}

/// `errors`: the candidate's timeout+error rate over the baseline's by at
/// least `margin` (window), Fisher's exact test on the window, and the
/// epoch's e-value against the baseline's rate (upper bound).
pub fn errors(
    rule: &ErrorsRule,
    seq: &Sequential,
    candidate: Candidate<'_>,
    baseline: Baseline<'_>,
) -> RuleResult {
    let (w, b) = (candidate.window, baseline.horizon);
    let (nc, nb) = (w.count(), b.count());
    let (fc, fb) = (w.failures(), b.failures());
    let rc = if nc > 0 { fc as f64 / nc as f64 } else { 0.0 };
    let rb = if nb > 0 { fb as f64 / nb as f64 } else { 0.0 };
    // A baseline with no failures is floored at one in its sample, so the
    // ratio says "at least this many times worse" rather than infinity.
    let r = ratio(rc, rb.max(1.0 / nb.max(1) as f64));
    let mut evidence = Evidence {
        candidate_count: nc,
        baseline_count: nb,
        candidate_value: rc,
        baseline_value: rb,
        threshold: rb + rule.margin,
        ratio: r,
        e_threshold: seq.e_threshold,
        candidate_events: fc,
        baseline_events: fb,
        ..Evidence::new("rate", "fisher")
    };
    if nc < rule.min_samples || nb < rule.min_samples {
        return inconclusive(Rule::Errors, evidence, nc, Some(nb), rule.min_samples);
    }
    let version = baseline.version;
    if rc - rb < rule.margin * seq.clear_fraction {
        evidence.detail = format!(
            "timeouts+errors {:.1}% ({fc} of {nc}) vs {:.1}% ({fb} of {nb}) on {version}",
            rc * 100.0,
            rb * 100.0
        );
        return RuleResult {
            rule: Rule::Errors,
            condition: Condition::Clear,
            evidence,
        };
    }
    let epoch = candidate.epoch.get();
    let p_value = stats::rate_greater(fc, nc, fb, nb);
    let e_value = stats::bernoulli_e_value(epoch.failures(), epoch.count(), rate_upper(fb, nb));
    evidence.p_value = p_value;
    evidence.e_value = e_value;
    let timeouts = w.outcomes[Outcome::Timeout.index()];
    let (condition, detail) = if rc - rb >= rule.margin
        && p_value <= rule.alpha
        && e_value >= seq.e_threshold
    {
        (
            Condition::Breach,
            format!(
                "timeouts+errors {:.1}% ({fc} of {nc}: {timeouts} timeouts) vs {:.1}% ({fb} of {nb}) on {version}, Fisher p={p_value:.2e}, {}",
                rc * 100.0,
                rb * 100.0,
                fmt_e(e_value, seq.e_threshold)
            ),
        )
    } else {
        (
            Condition::Marginal,
            format!("timeouts+errors {:.1}% vs {:.1}% on {version}, not yet conclusive: p={p_value:.2e}, {}", rc * 100.0, rb * 100.0, fmt_e(e_value, seq.e_threshold)),
        )
    };
    evidence.detail = detail;
    RuleResult {
        rule: Rule::Errors,
        condition,
        evidence,
    }
}

/// `fanout`: the candidate's database calls per request over the baseline's
/// by `factor` and `min_difference` (window), with the exact conditional test
/// of two Poisson rates (given all calls, the candidate's share is binomial
/// in its share of requests) on the window and its e-value on the epoch.
pub fn fanout(
    rule: &FanoutRule,
    seq: &Sequential,
    candidate: Candidate<'_>,
    baseline: Baseline<'_>,
) -> RuleResult {
    let (w, b) = (candidate.window, baseline.horizon);
    let (nc, nb) = (w.count(), b.count());
    let (cc, cb) = (w.db_calls, b.db_calls);
    let (dc, db) = (w.db_calls_per_request(), b.db_calls_per_request());
    let r = ratio(dc, db.max(1.0 / nb.max(1) as f64));
    let mut evidence = Evidence {
        candidate_count: nc,
        baseline_count: nb,
        candidate_value: dc,
        baseline_value: db,
        threshold: (db * rule.factor).max(db + rule.min_difference),
        ratio: r,
        e_threshold: seq.e_threshold,
        candidate_events: cc,
        baseline_events: cb,
        ..Evidence::new("calls", "poisson")
    };
    if nc < rule.min_samples || nb < rule.min_samples {
        return inconclusive(Rule::Fanout, evidence, nc, Some(nb), rule.min_samples);
    }
    let version = baseline.version;
    let counts = format!("{dc:.1} database calls per request ({cc} calls / {nc} requests) vs {db:.1} ({cb} / {nb}) on {version}");
    let clear_factor = 1.0 + (rule.factor - 1.0) * seq.clear_fraction;
    if r < clear_factor || dc - db < rule.min_difference * seq.clear_fraction {
        evidence.detail = counts;
        return RuleResult {
            rule: Rule::Fanout,
            condition: Condition::Clear,
            evidence,
        };
    }
    let share = |n: u64| n as f64 / (n + nb).max(1) as f64;
    let epoch = candidate.epoch.get();
    let p_value = stats::binomial_at_least(cc, cc + cb, share(nc));
    let e_value =
        stats::bernoulli_e_value(epoch.db_calls, epoch.db_calls + cb, share(epoch.count()));
    evidence.p_value = p_value;
    evidence.e_value = e_value;
    let (condition, detail) = if r >= rule.factor
        && dc - db >= rule.min_difference
        && p_value <= rule.alpha
        && e_value >= seq.e_threshold
    {
        (
            Condition::Breach,
            format!("{counts} ({r:.1}x, limit {:.1}x): the candidate queries the database more, exact test p={p_value:.2e}, {}", rule.factor, fmt_e(e_value, seq.e_threshold)),
        )
    } else {
        (
            Condition::Marginal,
            format!(
                "{counts} ({r:.1}x), not yet conclusive: p={p_value:.2e}, {}",
                fmt_e(e_value, seq.e_threshold)
            ),
        )
    };
    evidence.detail = detail;
    RuleResult {
        rule: Rule::Fanout,
        condition,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Sketch;

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

    /// The default thresholds: 0.01 false alerts per series-hour over four
    /// rules and a 30-minute epoch: 1 / (0.0025 * 0.5) = 800.
    fn seq() -> Sequential {
        Sequential {
            e_threshold: 800.0,
            rank_effect_scale: 0.1,
            clear_fraction: 0.8,
        }
    }

    fn cand(w: &WindowSummary) -> Candidate<'_> {
        // One batch: the epoch is the window. Leaked so the epoch lives as
        // long as the window it describes (a few bytes per test).
        let epoch: &Epoch<'_> = Box::leak(Box::new(Epoch::of(w.clone())));
        Candidate { window: w, epoch }
    }

    fn base(h: &WindowSummary) -> Baseline<'_> {
        Baseline {
            version: "v1.2",
            horizon: h,
        }
    }

    fn v12(n: usize) -> WindowSummary {
        summary(
            &(0..n).map(|i| 90.0 + (i % 30) as f64).collect::<Vec<_>>(),
            0,
        )
    }

    const V13: [f64; 10] = [
        750.0, 820.0, 780.0, 700.0, 750.0, 760.0, 790.0, 710.0, 805.0, 730.0,
    ];

    #[test]
    fn sla_fires_on_the_third_slow_request_not_before() {
        let rule = SlaRule::default();
        for n in 1..=3 {
            let r = sla(&rule, &seq(), cand(&summary(&V13[..n], n as u64)));
            let want = if n < 3 {
                Condition::Inconclusive
            } else {
                Condition::Breach
            };
            assert_eq!(r.condition, want, "{n}: {r:?}");
        }
        let r = sla(&rule, &seq(), cand(&summary(&V13[..3], 3)));
        assert!(r.evidence.detail.contains("3 of 3"));
        assert!((r.evidence.e_value - 2105.25).abs() < 1e-6);
        // One slow request among three is not enough, nor among many.
        let one = sla(&rule, &seq(), cand(&summary(&[100.0, 820.0, 95.0], 1)));
        assert_ne!(one.condition, Condition::Breach, "{one:?}");
        let mut values = vec![100.0; 99];
        values.push(5000.0);
        assert_eq!(
            sla(&rule, &seq(), cand(&summary(&values, 0))).condition,
            Condition::Clear
        );
    }

    #[test]
    fn relative_and_errors_fire_on_the_tenth_lending_request_not_the_ninth() {
        let baseline = v12(200);
        for (n, want) in [(9, Condition::Inconclusive), (10, Condition::Breach)] {
            let cand_w = summary(&V13[..n], (n as u64 * 8) / 10);
            let r = relative(
                &RelativeRule::default(),
                &seq(),
                cand(&cand_w),
                base(&baseline),
            );
            assert_eq!(r.condition, want, "{n}: {r:?}");
            let e = errors(
                &ErrorsRule::default(),
                &seq(),
                cand(&cand_w),
                base(&baseline),
            );
            assert_eq!(e.condition, want, "{n}: {e:?}");
        }
        let cand_w = summary(&V13, 8);
        let r = relative(
            &RelativeRule::default(),
            &seq(),
            cand(&cand_w),
            base(&baseline),
        );
        assert!(r.evidence.ratio > 6.0);
        let shift = r.evidence.shift.unwrap();
        assert!(shift.low > 550.0 && shift.high < 750.0, "{shift:?}");
        assert!(r.evidence.e_value >= r.evidence.e_threshold);
        let e = errors(
            &ErrorsRule::default(),
            &seq(),
            cand(&cand_w),
            base(&baseline),
        );
        assert!((e.evidence.candidate_value - 0.8).abs() < 1e-12);
        assert_eq!(
            (e.evidence.candidate_events, e.evidence.baseline_events),
            (8, 0)
        );
    }

    #[test]
    fn same_distribution_does_not_breach() {
        let r = relative(
            &RelativeRule::default(),
            &seq(),
            cand(&v12(300)),
            base(&v12(300)),
        );
        assert_eq!(r.condition, Condition::Clear, "{r:?}");
        let e = errors(
            &ErrorsRule::default(),
            &seq(),
            cand(&v12(300)),
            base(&v12(300)),
        );
        assert_eq!(e.condition, Condition::Clear, "{e:?}");
        let f = fanout(
            &FanoutRule::default(),
            &seq(),
            cand(&v12(300)),
            base(&v12(300)),
        );
        assert_eq!(f.condition, Condition::Clear, "{f:?}");
    }

    #[test]
    fn too_little_traffic_is_inconclusive_never_a_pass() {
        let r = relative(
            &RelativeRule::default(),
            &seq(),
            cand(&v12(5)),
            base(&v12(300)),
        );
        assert_eq!(r.condition, Condition::Inconclusive);
        assert!(r.evidence.detail.starts_with("inconclusive"));
        let e = errors(
            &ErrorsRule::default(),
            &seq(),
            cand(&v12(300)),
            base(&v12(3)),
        );
        assert_eq!(e.condition, Condition::Inconclusive);
    }

    #[test]
    fn big_ratio_on_a_tiny_endpoint_needs_the_minimum_difference() {
        let c = summary(&[4.0; 50], 0);
        let b = summary(&[1.0; 50], 0);
        let r = relative(&RelativeRule::default(), &seq(), cand(&c), base(&b));
        assert_eq!(r.condition, Condition::Clear, "{r:?}");
    }

    #[test]
    fn between_thresholds_is_marginal() {
        // 1.45x: under the 1.5x firing factor, over the 1.4x clearing one.
        let c = summary(&[145.0; 40], 0);
        let b = summary(&[100.0; 40], 0);
        let r = relative(&RelativeRule::default(), &seq(), cand(&c), base(&b));
        assert_eq!(r.condition, Condition::Marginal, "{r:?}");
    }

    #[test]
    fn a_tail_only_shift_is_caught_by_the_tail_test() {
        // Same median; the slowest 12% of the candidate are 1.6x slower. The
        // rank test barely moves; requests beyond 1.5x the baseline's p95 go
        // from none to one in ten.
        let b: Vec<f64> = (0..2000).map(|i| 50.0 + f64::from(i % 100)).collect();
        let c: Vec<f64> = (0..300)
            .map(|i| {
                let v = 50.0 + f64::from(i % 100);
                if i % 100 >= 88 {
                    v * 1.6
                } else {
                    v
                }
            })
            .collect();
        let (c, b) = (summary(&c, 0), summary(&b, 0));
        let r = relative(&RelativeRule::default(), &seq(), cand(&c), base(&b));
        assert_eq!(r.condition, Condition::Breach, "{r:?}");
        assert_eq!(r.evidence.test, "tail");
    }

    #[test]
    fn fanout_fires_on_many_more_database_calls_and_names_the_counts() {
        let mut c = v12(300);
        c.db_calls = 3_600;
        let mut b = v12(1_000);
        b.db_calls = 2_000;
        let f = fanout(&FanoutRule::default(), &seq(), cand(&c), base(&b));
        assert_eq!(f.condition, Condition::Breach, "{f:?}");
        assert!(
            f.evidence.detail.contains("3600 calls / 300 requests"),
            "{}",
            f.evidence.detail
        );
        assert!(
            f.evidence.detail.contains("2000 / 1000"),
            "{}",
            f.evidence.detail
        );
        assert_eq!(
            (f.evidence.candidate_events, f.evidence.baseline_events),
            (3_600, 2_000)
        );
        // A patched version back at two calls per request is clear.
        let mut patched = v12(300);
        patched.db_calls = 610;
        let f = fanout(&FanoutRule::default(), &seq(), cand(&patched), base(&b));
        assert_eq!(f.condition, Condition::Clear, "{f:?}");
    }

    /// Properties of the `relative` rule over random log-normal latencies
    /// (median 20 ms to 500 ms, sigma 0.1 to 1): no false alarm between two
    /// draws of one distribution, and no miss of a 3x slowdown once both
    /// sides have a few hundred requests. The runner's seed is fixed so a
    /// run is reproducible; each case draws its own data from `seed`.
    mod properties {
        use super::*;
        use proptest::prelude::*;
        use proptest::test_runner::RngSeed;
        use rand::{rngs::StdRng, SeedableRng};
        use rand_distr::{Distribution, LogNormal};

        fn draw(rng: &mut StdRng, median_ms: f64, sigma: f64, n: usize, scale: f64) -> Vec<f64> {
            let dist = LogNormal::new(median_ms.ln(), sigma).unwrap();
            (0..n).map(|_| dist.sample(rng) * scale).collect()
        }

        fn judge(candidate: &[f64], baseline: &[f64]) -> RuleResult {
            let (c, b) = (summary(candidate, 0), summary(baseline, 0));
            let epoch = Epoch::of(c.clone());
            relative(
                &RelativeRule::default(),
                &seq(),
                Candidate {
                    window: &c,
                    epoch: &epoch,
                },
                base(&b),
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 200,
                rng_seed: RngSeed::Fixed(0x6d6f_6465_6c67_6174),
                ..ProptestConfig::default()
            })]

            #[test]
            fn one_distribution_never_breaches(
                seed in any::<u64>(),
                median_ms in 20.0f64..500.0,
                sigma in 0.1f64..1.0,
                nc in 10usize..400,
                nb in 10usize..1000,
            ) {
                let mut rng = StdRng::seed_from_u64(seed);
                let baseline = draw(&mut rng, median_ms, sigma, nb, 1.0);
                let candidate = draw(&mut rng, median_ms, sigma, nc, 1.0);
                let r = judge(&candidate, &baseline);
                prop_assert_ne!(r.condition, Condition::Breach, "{:?}", r);
            }

            #[test]
            fn three_times_slower_always_breaches(
                seed in any::<u64>(),
                median_ms in 20.0f64..500.0,
                sigma in 0.1f64..1.0,
                nc in 200usize..400,
                nb in 300usize..1000,
            ) {
                let mut rng = StdRng::seed_from_u64(seed);
                let baseline = draw(&mut rng, median_ms, sigma, nb, 1.0);
                let candidate = draw(&mut rng, median_ms, sigma, nc, 3.0);
                let r = judge(&candidate, &baseline);
                prop_assert_eq!(r.condition, Condition::Breach, "{:?}", r);
            }
        }
    }
}
