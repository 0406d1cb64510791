//! The rules: a candidate's windows (and its baseline's) -> a [`RuleResult`].
//!
//! Pure functions. A rule looks at one or more strata: one per endpoint the
//! candidate is judged on (one stratum: the endpoint's own judgement; all of
//! a service's: its version-wide judgement, [`Scope::Version`]). Each rule
//! measures an effect, decides per [`Severity`] through one shared
//! skeleton (`decide`) and answers with a [`Condition`] per severity and
//! the [`Evidence`] that decided it:
//! - too few requests: `Inconclusive`, never a pass;
//! - the effect under the level's clearing threshold: `Clear`;
//! - over the firing threshold and significant: `Breach`;
//! - anything between: `Marginal`, which keeps an alert where it is
//!   (hysteresis).
//!
//! Significant means two tests agree: a fixed-sample test on the candidate
//! window (exact on small samples) at the rule's `alpha`, and an e-value
//! over the candidate's evidence epoch that reaches the rule's threshold
//! (see `config::SequentialPolicy`): what keeps false alarms rare although
//! the judge looks every second. Several strata combine with stratified
//! tests (van Elteren, Cochran-Mantel-Haenszel, sums of binomials) and the
//! product of the strata's e-values (independent requests). A clear rule
//! also says whether it had the power to see its firing effect
//! ([`super::power`]): only then is it a pass ([`RuleResult::outcome`]).

use std::cell::OnceCell;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::aggregate::WindowSummary;
use crate::judge::power::{Bar, Power};
use crate::judge::stats;

mod errors;
mod fanout;
mod relative;
mod sla;

pub use errors::errors;
pub use fanout::fanout;
pub use relative::relative;
pub use sla::sla;

/// Which rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// Candidate quantile over an absolute limit.
    Sla,
    /// Candidate latency over the baseline's, anywhere in the distribution.
    Relative,
    /// Candidate timeout+error rate over the baseline's by a margin, or over
    /// an absolute ceiling.
    Errors,
    /// Candidate database calls per request over the baseline's by a factor.
    Fanout,
}

impl Rule {
    /// Every rule, in the order results are listed.
    pub const ALL: [Rule; 4] = [Rule::Sla, Rule::Relative, Rule::Errors, Rule::Fanout];

    /// The `rule` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::Sla => "sla",
            Rule::Relative => "relative",
            Rule::Errors => "errors",
            Rule::Fanout => "fanout",
        }
    }

    /// The rule called `name`.
    pub fn named(name: &str) -> Option<Rule> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Compares a candidate with a baseline (rather than with a limit).
    pub const fn comparative(self) -> bool {
        !matches!(self, Rule::Sla)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a regression is: what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Significant and at least the rule's warning threshold (1.2x by
    /// default), or the SLA at risk: look at it.
    Warning,
    /// The rule's firing threshold (1.5x, the SLA breached, errors up by 5
    /// points): page, roll back. The edge filter and the gate act on it.
    Critical,
}

impl Severity {
    /// Both, mildest first.
    pub const ALL: [Severity; 2] = [Severity::Warning, Severity::Critical];

    /// The `severity` attribute value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Index into per-severity arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;

    /// `warning` or `critical`, as the API and the metrics spell them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown severity {s:?}: expected warning or critical"))
    }
}

/// What a rule concluded at one severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// The statistical test that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Test {
    /// Exact binomial test of a share against a rate.
    Binomial,
    /// Mann-Whitney rank test (van Elteren across endpoints).
    Rank,
    /// Share of requests beyond a multiple of the baseline's quantile.
    Tail,
    /// Fisher's exact test of two rates (Cochran-Mantel-Haenszel across
    /// endpoints).
    Fisher,
    /// Exact conditional test of two Poisson rates.
    Poisson,
}

impl Test {
    /// Its name in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Test::Binomial => "binomial",
            Test::Rank => "rank",
            Test::Tail => "tail",
            Test::Fisher => "fisher",
            Test::Poisson => "poisson",
        }
    }
}

/// The unit of a rule's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Milliseconds of latency.
    Ms,
    /// A share of requests (0 to 1).
    Rate,
    /// Database calls per request.
    Calls,
}

impl Unit {
    /// Its name in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::Rate => "rate",
            Unit::Calls => "calls",
        }
    }
}

/// What decided a result (mirrors `modelgate.v1.Evidence`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Requests of the candidate in its window.
    pub candidate_count: u64,
    /// Requests of the baseline over its horizon (0 for sla).
    pub baseline_count: u64,
    /// The quantile compared: for `relative`, the one that moved most; 0
    /// for the rate rules.
    pub quantile: f64,
    /// Candidate figure in `unit`.
    pub candidate_value: f64,
    /// Baseline figure in `unit` (0 for sla).
    pub baseline_value: f64,
    /// The critical (firing) threshold, in `unit`.
    pub threshold: f64,
    /// Candidate over baseline (sla: over the limit), capped.
    pub ratio: f64,
    /// Candidate minus baseline (sla: minus the limit), in `unit`: for
    /// `errors`, the rate difference (0.078 = 7.8 points).
    pub difference: f64,
    /// Fixed-sample significance on the window; 1 when no test applies.
    pub p_value: f64,
    /// Evidence accumulated over the epoch (always valid); 1 when none.
    pub e_value: f64,
    /// The e-value needed to fire.
    pub e_threshold: f64,
    /// Which test decided.
    pub test: Test,
    /// Events behind the rate: requests over the limit (sla), beyond the
    /// critical factor times the baseline's quantile (relative), failures
    /// (errors), database calls (fanout); candidate side.
    pub candidate_events: u64,
    /// The same on the baseline side.
    pub baseline_events: u64,
    /// Hodges-Lehmann shift of the candidate over the baseline, ms, with its
    /// 95% interval (`relative` on one endpoint).
    pub shift: Option<stats::Shift>,
    /// Share of candidate requests slower than the baseline's p95 (about
    /// 0.05 when nothing changed; `relative`).
    pub share_beyond_p95: Option<f64>,
    /// What passing needs, when the rule is clear.
    pub power: Option<Power>,
    /// Of the requests counted, those read from histogram buckets: no
    /// database calls known, latency known only to the bucket.
    pub binned: u64,
    /// The largest relative error of a latency read from a bucket (0 when
    /// none was; latency rules only).
    pub binned_error: f64,
    /// The unit of the figures.
    pub unit: Unit,
    /// One sentence.
    pub detail: String,
}

impl Evidence {
    fn new(unit: Unit, test: Test) -> Self {
        Self {
            candidate_count: 0,
            baseline_count: 0,
            quantile: 0.0,
            candidate_value: 0.0,
            baseline_value: 0.0,
            threshold: 0.0,
            ratio: 1.0,
            difference: 0.0,
            p_value: 1.0,
            e_value: 1.0,
            e_threshold: 1.0,
            test,
            candidate_events: 0,
            baseline_events: 0,
            shift: None,
            share_beyond_p95: None,
            power: None,
            binned: 0,
            binned_error: 0.0,
            unit,
            detail: String::new(),
        }
    }
}

/// The conditions of one evaluation, one per [`Severity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conditions(pub [Condition; 2]);

impl Conditions {
    /// The same condition at every severity.
    pub const fn all(condition: Condition) -> Self {
        Self([condition; 2])
    }

    /// The condition at `severity`.
    pub const fn at(&self, severity: Severity) -> Condition {
        self.0[severity.index()]
    }

    /// The most severe level breached.
    pub fn breached(&self) -> Option<Severity> {
        Severity::ALL
            .into_iter()
            .rev()
            .find(|s| self.at(*s) == Condition::Breach)
    }
}

/// What a rule says of a candidate, as a release process acts on it (the
/// API's `VerdictOutcome` with its severity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Clear, with the power to have seen the rule's firing effect.
    Pass,
    /// Too little traffic or power, or not yet significant.
    Inconclusive,
    /// Breached at a severity.
    Regression(Severity),
}

/// One rule's judgement of one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleResult {
    /// The rule.
    pub rule: Rule,
    /// Its conclusion at each severity.
    pub conditions: Conditions,
    /// Why.
    pub evidence: Evidence,
}

impl RuleResult {
    /// Pass, inconclusive or regression: clear at every severity and
    /// powered is a pass; a breach is a regression at its severity.
    pub fn outcome(&self) -> Verdict {
        if let Some(severity) = self.conditions.breached() {
            return Verdict::Regression(severity);
        }
        let clear = Severity::ALL
            .iter()
            .all(|s| self.conditions.at(*s) == Condition::Clear);
        let powered = self.evidence.power.is_some_and(|p| p.sufficient);
        if clear && powered {
            Verdict::Pass
        } else {
            Verdict::Inconclusive
        }
    }

    /// A result that cannot judge, with `why` as its sentence.
    pub fn inconclusive(rule: Rule, unit: Unit, test: Test, why: String) -> Self {
        let mut evidence = Evidence::new(unit, test);
        evidence.detail = why;
        Self {
            rule,
            conditions: Conditions::all(Condition::Inconclusive),
            evidence,
        }
    }
}

/// What a rule sees of the candidate on one endpoint: its recent window
/// (effect sizes, the fixed-sample test) and everything since its epoch
/// began (the e-value).
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

/// One endpoint of a comparison: the candidate there and its baseline's
/// horizon.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    /// The candidate on this endpoint.
    pub candidate: Candidate<'a>,
    /// The baseline's traffic over the baseline horizon on this endpoint.
    pub baseline: &'a WindowSummary,
}

/// `figure` summed over `pairs`: (the candidates', the baselines').
pub(crate) fn totals(pairs: &[Pair<'_>], figure: impl Fn(&WindowSummary) -> u64) -> (u64, u64) {
    pairs.iter().fold((0, 0), |(c, b), p| {
        (c + figure(p.candidate.window), b + figure(p.baseline))
    })
}

/// What is judged: one endpoint, or a version across its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One endpoint.
    Endpoint,
    /// Every endpoint of the candidate in its service, pooled.
    Version,
}

/// The thresholds every rule shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sequential {
    /// E-value a rule's evidence must reach (1 / its alpha per epoch).
    pub e_threshold: f64,
    /// Prior scale of the rank test's mixture.
    pub rank_effect_scale: f64,
    /// Hysteresis: fraction of the firing threshold under which it clears.
    pub clear_fraction: f64,
    /// `judge.pass_power`: the chance a pass must have had of catching the
    /// firing effect.
    pub pass_power: f64,
}

impl Sequential {
    fn bar(&self, alpha: f64, e_threshold: f64) -> Bar {
        Bar {
            alpha,
            e_threshold,
            power: self.pass_power,
        }
    }
}

/// Ratios are exported as gauges; keep them finite.
const MAX_RATIO: f64 = 1e6;

pub(in crate::judge) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b).min(MAX_RATIO)
    } else if a > 0.0 {
        MAX_RATIO
    } else {
        1.0
    }
}

pub(in crate::judge) fn pct(q: f64) -> String {
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

fn fmt_e(e: f64, threshold: f64) -> String {
    if e >= 1e300 {
        format!("e>1e300 (fires at {threshold:.0})")
    } else {
        format!("e={e:.3e} (fires at {threshold:.0})")
    }
}

/// Where an effect stands against one severity's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// Under the clearing threshold.
    Below,
    /// Between clearing and firing.
    Between,
    /// At or over the firing threshold: a breach if significant.
    Above,
}

impl Level {
    /// `effect` against `fire` and `clear` (clear <= fire).
    fn of(effect: f64, fire: f64, clear: f64) -> Self {
        if effect >= fire {
            Level::Above
        } else if effect < clear {
            Level::Below
        } else {
            Level::Between
        }
    }

    /// The stricter of two criteria that must both hold.
    fn and(self, other: Level) -> Level {
        match (self, other) {
            (Level::Below, _) | (_, Level::Below) => Level::Below,
            (Level::Above, Level::Above) => Level::Above,
            _ => Level::Between,
        }
    }
}

/// The decision skeleton every rule shares: per severity, an effect
/// `Above` its firing threshold is a breach when `significant` says so,
/// `Below` its clearing one is clear, anything else marginal. The tests
/// behind `significant` run only for levels that could breach.
fn decide(levels: [Level; 2], mut significant: impl FnMut(Severity) -> bool) -> Conditions {
    let mut out = [Condition::Clear; 2];
    for severity in Severity::ALL {
        out[severity.index()] = match levels[severity.index()] {
            Level::Below => Condition::Clear,
            Level::Between => Condition::Marginal,
            Level::Above if significant(severity) => Condition::Breach,
            Level::Above => Condition::Marginal,
        };
    }
    Conditions(out)
}

/// The sentence's opening for a result: which severity breached, or that it
/// is not yet conclusive.
fn verdict_words(conditions: &Conditions) -> &'static str {
    match conditions.breached() {
        Some(Severity::Critical) => "",
        Some(Severity::Warning) => "warning: ",
        None => "not yet conclusive: ",
    }
}

/// A rule's answer when either side has fewer than `min` requests.
fn too_few_result(rule: Rule, mut evidence: Evidence, nb: Option<u64>, min: u64) -> RuleResult {
    evidence.detail = too_few(evidence.candidate_count, nb, min);
    RuleResult {
        rule,
        conditions: Conditions::all(Condition::Inconclusive),
        evidence,
    }
}

fn too_few(nc: u64, nb: Option<u64>, min: u64) -> String {
    match nb {
        Some(nb) => format!(
            "inconclusive: {nc} candidate and {nb} baseline requests, {min} needed on each side"
        ),
        None => format!("inconclusive: {nc} requests, {min} needed"),
    }
}

/// The power sentence of a clear result.
fn power_words(p: &Power, baseline: bool) -> String {
    if p.sufficient {
        String::new()
    } else if baseline {
        format!(
            "; too little traffic to pass: {} candidate and {} baseline requests needed to see the firing effect",
            p.candidate_needed, p.baseline_needed
        )
    } else {
        format!(
            "; too little traffic to pass: {} requests needed to see the firing effect",
            p.candidate_needed
        )
    }
}

/// States in a latency result's evidence how many of its requests were
/// read from histogram buckets, and how precise their latencies are.
pub(super) fn state_resolution(result: &mut RuleResult, windows: &[&WindowSummary]) {
    let binned: u64 = windows.iter().map(|w| w.binned).sum();
    if binned == 0 || result.evidence.unit != Unit::Ms {
        return;
    }
    let resolution = windows.iter().map(|w| w.resolution).fold(0.0, f64::max);
    let all: u64 = windows.iter().map(|w| w.count()).sum();
    let e = &mut result.evidence;
    e.binned = binned;
    e.binned_error = resolution;
    let _ = write!(
        e.detail,
        "; {binned} of {all} requests read from histogram buckets, their latencies known within {:.1}%",
        resolution * 100.0
    );
}

/// Summaries merged into one.
fn pooled<'s>(summaries: impl Iterator<Item = &'s WindowSummary>) -> WindowSummary {
    let mut out = WindowSummary::default();
    for s in summaries {
        out.merge(s);
    }
    out
}

/// A power search's answer for the candidate (and, with `baseline`, the
/// baseline's side): what is needed and whether the counts in hand do.
fn settle(candidate: Option<u64>, baseline: Option<Option<u64>>, nc: u64, nb: u64) -> Power {
    let c = candidate.unwrap_or(u64::MAX);
    let b = baseline.map_or(0, |b| b.unwrap_or(u64::MAX));
    Power {
        effect: 0.0,
        candidate_needed: c,
        baseline_needed: b,
        sufficient: nc >= c && nb >= b,
    }
}

#[cfg(test)]
mod tests;
