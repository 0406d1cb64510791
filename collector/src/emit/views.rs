//! Views: what the query API, the gate, the edge filter and the dashboard
//! ask of the state, as plain data.
//!
//! Pure functions of the aggregator and the judge, run by the pipeline task
//! when asked (see [`crate::pipeline::PipelineHandle::ask`]); the gRPC
//! service and the JSON routes map their answers to `modelgate.v1`
//! ([`crate::query::api`]). Nothing here changes state or knows a wire format.

use crate::aggregate::Aggregator;
use crate::extract::{EndpointKey, Outcome};
use crate::judge::{
    AlertKey, AlertMachine, AlertState, BaselineSource, Condition, Judge, Judgement, RuleResult,
    Severity, Verdict, ALL_ENDPOINTS,
};
use crate::phase::Phase;

/// An empty filter matches everything.
fn matches(filter: &str, value: &str) -> bool {
    filter.is_empty() || filter == value
}

/// One version's figures over what the judge looks at: its candidate
/// window, stretched back (up to the baseline horizon) until it holds the
/// rules' minimum sample.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionStats {
    /// The version.
    pub version: String,
    /// Requests in the (stretched) window.
    pub count: u64,
    /// Mean latency, ms (0 without requests).
    pub mean_ms: f64,
    /// Quantiles, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Share of timeouts.
    pub timeout_rate: f64,
    /// Share of other errors.
    pub error_rate: f64,
    /// Database calls per request.
    pub db_calls_per_request: f64,
    /// The endpoint's baseline.
    pub is_baseline: bool,
    /// Its first and latest request (event time), unix ms.
    pub first_seen_ms: u64,
    /// See `first_seen_ms`.
    pub last_seen_ms: u64,
}

/// One endpoint's versions.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointVersions {
    /// The endpoint.
    pub key: EndpointKey,
    /// Its baseline and how it was chosen.
    pub baseline: Option<(String, BaselineSource)>,
    /// Why the baseline is not trusted, when it is not.
    pub distrust: Option<String>,
    /// Every version, by name.
    pub versions: Vec<VersionStats>,
}

/// Every version of every endpoint of `service` (all when empty) and
/// `endpoint` (all when empty), by service and endpoint.
pub fn versions(
    agg: &Aggregator,
    judge: &Judge,
    service: &str,
    endpoint: &str,
    now_ms: u64,
) -> Vec<EndpointVersions> {
    let mut out: Vec<EndpointVersions> = agg
        .endpoints()
        .filter(|(k, _)| matches(service, &k.service) && matches(endpoint, &k.endpoint))
        .map(|(key, versions)| {
            let baseline = judge.baseline_of(key);
            let name = baseline.map(|(b, _)| b).unwrap_or_default();
            EndpointVersions {
                key: key.clone(),
                distrust: baseline.and_then(|(b, _)| distrust(judge, key, b)),
                baseline: baseline.map(|(b, s)| (b.to_owned(), s)),
                versions: versions
                    .iter()
                    .map(|(version, series)| {
                        // What the judge compares: the baseline's window is
                        // its own (see `Judge::baseline_window`).
                        let w = if version == name {
                            judge.baseline_window(agg, series, now_ms)
                        } else {
                            agg.recent(series, now_ms, judge.min_requests())
                        };
                        let q = |q| w.latency.quantile(q).unwrap_or(0.0);
                        VersionStats {
                            version: version.clone(),
                            count: w.count(),
                            mean_ms: w.latency.mean().unwrap_or(0.0),
                            p50_ms: q(0.5),
                            p95_ms: q(0.95),
                            p99_ms: q(0.99),
                            timeout_rate: w.rate(Outcome::Timeout),
                            error_rate: w.rate(Outcome::Error),
                            db_calls_per_request: w.db_calls_per_request(),
                            is_baseline: version == name,
                            first_seen_ms: series.first_seen_ms,
                            last_seen_ms: series.last_seen_ms,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Why `baseline` is not trusted on `endpoint`: its own absolute rules
/// breach critically.
fn distrust(judge: &Judge, endpoint: &EndpointKey, baseline: &str) -> Option<String> {
    judge
        .judgements()
        .find(|(k, j)| {
            k.endpoint == *endpoint
                && k.candidate == baseline
                && k.baseline.is_empty()
                && j.quiet_since_ms.is_none()
                && j.result.conditions.at(Severity::Critical) == Condition::Breach
        })
        .map(|(k, j)| {
            format!(
                "it breaches {} itself: {}",
                k.rule, j.result.evidence.detail
            )
        })
}

/// One alert at one severity, as the API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionView {
    /// Which alert.
    pub key: AlertKey,
    /// Which severity of it.
    pub severity: Severity,
    /// Its state.
    pub alert: AlertMachine,
    /// The latest result.
    pub result: RuleResult,
    /// Acknowledged while pending or firing.
    pub acknowledged: bool,
}

impl RegressionView {
    /// The view of `judgement`'s alert of `severity`.
    pub fn of(key: &AlertKey, judgement: &Judgement, severity: Severity, judge: &Judge) -> Self {
        Self {
            key: key.clone(),
            severity,
            alert: judgement.alert(severity).clone(),
            result: judgement.result.clone(),
            acknowledged: judge.is_acknowledged(key),
        }
    }
}

/// A regression verdict held for a candidate without traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldView {
    /// `service.name`.
    pub service: String,
    /// The candidate.
    pub candidate: String,
    /// The worst severity it regressed at.
    pub severity: Severity,
    /// Its last request, unix ms.
    pub last_traffic_ms: u64,
}

/// What `ListRegressions` answers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Regressions {
    /// Firing alerts, at or over the severity asked for.
    pub firing: Vec<RegressionView>,
    /// Held regression verdicts of quiet candidates.
    pub held: Vec<HeldView>,
}

/// Firing alerts of `service` (all when empty) at `min_severity` or worse,
/// and the regression verdicts held for quiet candidates.
pub fn regressions(judge: &Judge, service: &str, min_severity: Severity) -> Regressions {
    let mut out = Regressions::default();
    for (key, judgement) in judge.judgements() {
        if !matches(service, &key.endpoint.service) {
            continue;
        }
        for severity in Severity::ALL.into_iter().filter(|s| *s >= min_severity) {
            if judgement.alert(severity).state == AlertState::Firing {
                out.firing
                    .push(RegressionView::of(key, judgement, severity, judge));
            }
        }
        if let (Some(last), Verdict::Regression(severity)) =
            (judgement.quiet_since_ms, judgement.verdict())
        {
            if severity < min_severity {
                continue;
            }
            let held = out
                .held
                .iter_mut()
                .find(|h| h.service == key.endpoint.service && h.candidate == key.candidate);
            match held {
                Some(h) => {
                    h.severity = h.severity.max(severity);
                    h.last_traffic_ms = h.last_traffic_ms.max(last);
                }
                None => out.held.push(HeldView {
                    service: key.endpoint.service.clone(),
                    candidate: key.candidate.clone(),
                    severity,
                    last_traffic_ms: last,
                }),
            }
        }
    }
    out.firing.sort_by(|a, b| {
        (&a.key.endpoint, &a.key.candidate, a.key.rule, a.severity).cmp(&(
            &b.key.endpoint,
            &b.key.candidate,
            b.key.rule,
            b.severity,
        ))
    });
    out.held
        .sort_by(|a, b| (&a.service, &a.candidate).cmp(&(&b.service, &b.candidate)));
    out
}

/// One rule's judgement in a verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleView {
    /// The result.
    pub result: RuleResult,
    /// What it says: pass, inconclusive, or a regression at a severity
    /// (a firing alert is a regression even while the latest evaluation is
    /// marginal).
    pub verdict: Verdict,
    /// The alert state at the verdict's severity (critical unless a
    /// warning-level regression); inactive when judged on the spot.
    pub state: AlertState,
}

/// A verdict on one endpoint, or version-wide.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeVerdict {
    /// The endpoint, or [`ALL_ENDPOINTS`].
    pub endpoint: String,
    /// The whole request, or one phase of it.
    pub phase: Phase,
    /// What it was compared with (empty: nothing).
    pub baseline: String,
    /// How the baseline was chosen (per endpoint).
    pub baseline_source: Option<BaselineSource>,
    /// The worst of its rules.
    pub verdict: Verdict,
    /// Its rules, in rule order.
    pub rules: Vec<RuleView>,
}

/// The verdict on one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictView {
    /// `service.name`.
    pub service: String,
    /// The candidate.
    pub candidate: String,
    /// See `modelgate.v1.Verdict.outcome`.
    pub verdict: Verdict,
    /// Per endpoint and phase (a phase across endpoints is one of them,
    /// endpoint [`ALL_ENDPOINTS`]).
    pub endpoints: Vec<ScopeVerdict>,
    /// The whole request across its endpoints, when it serves two or more.
    pub version_wide: Option<ScopeVerdict>,
    /// Endpoints whose own verdict is a regression.
    pub endpoints_regressed: u32,
    /// Endpoints judged.
    pub endpoints_judged: u32,
    /// One sentence.
    pub summary: String,
    /// The candidate has had no traffic lately: the verdict is its last.
    pub held: bool,
    /// Its last request, unix ms (0 when unknown).
    pub last_traffic_ms: u64,
}

/// What a verdict is asked for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VerdictQuery {
    /// `service.name`.
    pub service: String,
    /// The version under test.
    pub candidate: String,
    /// Only this endpoint (empty: all).
    pub endpoint: String,
    /// Compare with this version instead of each endpoint's baseline.
    pub baseline: String,
}

/// Ordering of verdicts, worst last: pass, inconclusive, warning, critical.
fn rank(v: Verdict) -> u8 {
    match v {
        Verdict::Pass => 0,
        Verdict::Inconclusive => 1,
        Verdict::Regression(Severity::Warning) => 2,
        Verdict::Regression(Severity::Critical) => 3,
    }
}

fn worst(verdicts: impl Iterator<Item = Verdict>) -> Option<Verdict> {
    verdicts.max_by_key(|v| rank(*v))
}

/// A rule's verdict with the alerts' word added: a firing alert keeps it a
/// regression at its severity.
fn rule_view(result: &RuleResult, judgement: Option<&Judgement>) -> RuleView {
    let firing = judgement.and_then(Judgement::firing);
    let verdict = match (result.outcome(), firing) {
        (Verdict::Regression(s), Some(f)) => Verdict::Regression(s.max(f)),
        (_, Some(f)) => Verdict::Regression(f),
        (v, None) => v,
    };
    let severity = match verdict {
        Verdict::Regression(s) => s,
        _ => Severity::Critical,
    };
    RuleView {
        result: result.clone(),
        verdict,
        state: judgement.map_or(AlertState::Inactive, |j| j.alert(severity).state),
    }
}

/// The verdict on `query.candidate`. From the judge's own judgements
/// (with their alert states) unless `adhoc` (a judge with overridden
/// thresholds) or another baseline is asked for: then judged on the spot.
pub fn verdict(
    agg: &Aggregator,
    judge: &Judge,
    query: &VerdictQuery,
    adhoc: Option<&Judge>,
    now_ms: u64,
) -> VerdictView {
    let only = (!query.endpoint.is_empty()).then_some(query.endpoint.as_str());
    let on_the_spot = adhoc.is_some() || !query.baseline.is_empty();
    let rules_judge = adhoc.unwrap_or(judge);
    let judged: Vec<(AlertKey, RuleResult, Option<&Judgement>)> = if on_the_spot {
        let baseline = (!query.baseline.is_empty()).then_some(query.baseline.as_str());
        rules_judge
            .judge_candidate(
                agg,
                &query.service,
                &query.candidate,
                only,
                baseline,
                now_ms,
            )
            .into_iter()
            .map(|(k, r)| (k, r, None))
            .collect()
    } else {
        stored(agg, judge, query, only, now_ms)
    };
    let mut scopes: Vec<ScopeVerdict> = Vec::new();
    let mut last_traffic = 0;
    let mut held = !judged.is_empty();
    for (key, result, judgement) in &judged {
        let quiet = judgement.and_then(|j| j.quiet_since_ms);
        held &= quiet.is_some();
        last_traffic = last_traffic.max(quiet.unwrap_or(0));
        let at = match scopes
            .iter()
            .position(|s| s.endpoint == key.endpoint.endpoint && s.phase == key.endpoint.phase)
        {
            Some(at) => at,
            None => {
                scopes.push(ScopeVerdict {
                    endpoint: key.endpoint.endpoint.clone(),
                    phase: key.endpoint.phase,
                    baseline: key.baseline.clone(),
                    baseline_source: (!key.is_version_wide())
                        .then(|| judge.baseline_of(&key.endpoint).map(|(_, s)| s))
                        .flatten(),
                    verdict: Verdict::Pass,
                    rules: Vec::new(),
                });
                scopes.len() - 1
            }
        };
        scopes[at].rules.push(rule_view(result, *judgement));
    }
    for s in &mut scopes {
        s.rules.sort_by_key(|r| r.result.rule);
        s.verdict = worst(s.rules.iter().map(|r| r.verdict)).unwrap_or(Verdict::Inconclusive);
    }
    scopes.sort_by(|a, b| (a.phase, &a.endpoint).cmp(&(b.phase, &b.endpoint)));
    let version_wide = scopes
        .iter()
        .position(|s| s.endpoint == ALL_ENDPOINTS && s.phase.is_request())
        .map(|i| scopes.remove(i));
    summarize(query, scopes, version_wide, held, last_traffic)
}

/// The judge's own judgements of the candidate, with every endpoint it is
/// the baseline of shown as inconclusive for the comparative rules (there
/// is nothing to compare it with), never as a pass.
fn stored<'j>(
    agg: &Aggregator,
    judge: &'j Judge,
    query: &VerdictQuery,
    only: Option<&str>,
    now_ms: u64,
) -> Vec<(AlertKey, RuleResult, Option<&'j Judgement>)> {
    let mut out: Vec<(AlertKey, RuleResult, Option<&Judgement>)> = judge
        .judgements()
        .filter(|(k, _)| {
            k.endpoint.service == query.service
                && k.candidate == query.candidate
                && only.is_none_or(|e| e == k.endpoint.endpoint)
        })
        .map(|(k, j)| (k.clone(), j.result.clone(), Some(j)))
        .collect();
    // Endpoints where it is the baseline: on the spot, its comparative
    // rules (inconclusive: nothing to compare with) and the absolute ones
    // the judge keeps no judgement of (it keeps them from a first breach).
    let baseline_of: Vec<&EndpointKey> = agg
        .endpoints()
        .filter(|(k, v)| {
            k.service == query.service
                && only.is_none_or(|e| e == k.endpoint)
                && v.contains_key(&query.candidate)
                && judge.baseline(k) == Some(query.candidate.as_str())
        })
        .map(|(k, _)| k)
        .collect();
    for endpoint in baseline_of {
        for (key, result) in judge.judge_candidate(
            agg,
            &query.service,
            &query.candidate,
            Some(&endpoint.endpoint),
            None,
            now_ms,
        ) {
            if !out
                .iter()
                .any(|(k, ..)| k.endpoint == key.endpoint && k.rule == key.rule)
            {
                out.push((key, result, None));
            }
        }
    }
    out
}

/// The verdict from its scopes: a regression anywhere is one; else the
/// version-wide verdict (or the one endpoint's) decides.
fn summarize(
    query: &VerdictQuery,
    endpoints: Vec<ScopeVerdict>,
    version_wide: Option<ScopeVerdict>,
    held: bool,
    last_traffic_ms: u64,
) -> VerdictView {
    let regression = |s: &&ScopeVerdict| matches!(s.verdict, Verdict::Regression(_));
    // Endpoints are counted by their requests; a phase that regressed is
    // named apart (the model server, not an endpoint).
    let requests: Vec<&ScopeVerdict> = endpoints.iter().filter(|s| s.phase.is_request()).collect();
    let regressed: Vec<&ScopeVerdict> = requests.iter().copied().filter(regression).collect();
    let phases: std::collections::BTreeSet<Phase> = endpoints
        .iter()
        .filter(|s| !s.phase.is_request())
        .filter(regression)
        .map(|s| s.phase)
        .collect();
    let phases: Vec<&str> = phases.into_iter().map(Phase::words).collect();
    let all = endpoints.iter().chain(version_wide.iter());
    let verdict = match worst(all.map(|s| s.verdict)) {
        None => Verdict::Inconclusive,
        Some(Verdict::Regression(s)) => Verdict::Regression(s),
        Some(_) => match (&version_wide, endpoints.as_slice()) {
            (Some(v), _) => v.verdict,
            (None, [one]) => one.verdict,
            _ => Verdict::Inconclusive,
        },
    };
    let n = requests.len();
    let k = regressed.len();
    let whole = version_wide.as_ref().is_some_and(|v| regression(&v));
    let mut summary = match (verdict, &version_wide) {
        (_, _) if n == 0 => format!(
            "no traffic of {} on {} known to the collector",
            query.candidate, query.service
        ),
        (Verdict::Regression(_), Some(v)) if matches!(v.verdict, Verdict::Regression(_)) => {
            if k == n {
                format!("slower on {k} of {n} endpoints: the version, not an endpoint")
            } else if k == 0 {
                format!("regressed across its {n} endpoints together, none alone: the version")
            } else {
                format!("regressed on {k} of {n} endpoints and across them")
            }
        }
        (Verdict::Regression(_), _) if k == 0 && !whole && !phases.is_empty() => {
            format!("regressed in {}", phases.join(" and "))
        }
        (Verdict::Regression(_), _) => {
            let names: Vec<&str> = regressed.iter().map(|s| s.endpoint.as_str()).collect();
            format!("regressed on {k} of {n} endpoints ({})", names.join(", "))
        }
        (Verdict::Pass, _) => {
            format!("passed on {n} endpoint(s) with the power to see each rule's firing effect")
        }
        (Verdict::Inconclusive, _) => {
            "inconclusive: too little traffic, power or significance yet".to_owned()
        }
    };
    if (k > 0 || whole) && !phases.is_empty() {
        summary.push_str(&format!("; slower in {} too", phases.join(" and ")));
    }
    VerdictView {
        service: query.service.clone(),
        candidate: query.candidate.clone(),
        verdict,
        endpoints_regressed: k as u32,
        endpoints_judged: n as u32,
        endpoints,
        version_wide,
        summary,
        held,
        last_traffic_ms,
    }
}

/// A candidate's verdict on one endpoint (or version-wide), the worst over
/// its rules: what the dashboard sorts services by when nothing fires.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CandidateVerdict {
    /// `service.name`.
    pub service: String,
    /// The endpoint, or [`ALL_ENDPOINTS`] for the version-wide verdict.
    pub endpoint: String,
    /// Values of the configured extra dimensions.
    pub dims: Vec<String>,
    /// The version judged.
    pub candidate_version: String,
    /// `regression` (on any rule), else `inconclusive` (on any), else `pass`.
    pub verdict: &'static str,
}

/// Every candidate's verdict in `service` (every service when empty),
/// sorted by service, endpoint and candidate.
pub fn candidate_verdicts(judge: &Judge, service: &str) -> Vec<CandidateVerdict> {
    let mut worst: std::collections::BTreeMap<(&EndpointKey, &str), Verdict> =
        std::collections::BTreeMap::new();
    for (key, judgement) in judge.judgements() {
        if !matches(service, &key.endpoint.service) {
            continue;
        }
        let verdict = judgement.verdict();
        worst
            .entry((&key.endpoint, key.candidate.as_str()))
            // Pass < Inconclusive < Regression.
            .and_modify(|w| *w = (*w).max(verdict))
            .or_insert(verdict);
    }
    worst
        .into_iter()
        .map(|((endpoint, candidate), verdict)| CandidateVerdict {
            service: endpoint.service.clone(),
            endpoint: endpoint.endpoint.clone(),
            dims: endpoint.dims.clone(),
            candidate_version: candidate.to_owned(),
            verdict: super::verdict_of(verdict),
        })
        .collect()
}
