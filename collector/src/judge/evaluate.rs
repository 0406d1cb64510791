//! One evaluation: a service's endpoints and versions, judged.
//!
//! A service at a time ([`Judge::evaluate_service`]; [`Judge::evaluate`]
//! takes every service in turn): each endpoint's baseline is chosen and
//! held to the absolute rules, each candidate judged against it (an
//! endpoint's first-token bands together, band with band), then every
//! candidate serving two endpoints or more judged across them. What was
//! decided is then applied to the service's alerts: transitions, the
//! retirement of alerts whose subject is gone, and promotion. Nothing of
//! another service is read or written.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use hashbrown::{HashMap, HashSet};

use super::rules::{self, Candidate, Epoch, Pair, RuleResult, Verdict};
use super::{
    ack_key, version_order, AlertKey, Chosen, Judge, Judgement, KeyRef, OnService, ServiceState,
    ServiceTimes, Transition, ALL_ENDPOINTS,
};
use crate::aggregate::{Aggregator, Series, Versions, WindowSummary};
use crate::config::AlertPolicy;
use crate::config::VerbosePolicy;
use crate::extract::EndpointKey;
use crate::judge::{AckKey, Rule};
use crate::phase::Phase;

/// What one evaluation decided for one key.
enum Update {
    /// Judged on traffic (boxed: a result is some 200 bytes, a quiet key
    /// eight).
    Judged(Box<RuleResult>),
    /// No request since this time, for `no_traffic_resolve` or longer.
    Quiet(u64),
}

/// Every key one evaluation decided, with what it decided.
type Decided<'a> = Vec<(KeyRef<'a>, Update)>;

/// One version on one endpoint, as this evaluation sees it.
struct Seen<'a> {
    version: &'a str,
    series: &'a Series,
    window: WindowSummary,
    epoch: Epoch<'a>,
    /// No request for `no_traffic_resolve`.
    quiet: bool,
}

/// One endpoint, as this evaluation sees it.
struct Endpoint<'a> {
    key: &'a EndpointKey,
    baseline: Option<Cow<'a, str>>,
    /// The baseline's traffic ([`Judge::baseline_window`]).
    base: WindowSummary,
    /// Why the baseline cannot be compared with (it breaches the absolute
    /// rules itself, or has no traffic); `None` when it can.
    untrusted: Option<String>,
    versions: Vec<Seen<'a>>,
}

impl<'a> Endpoint<'a> {
    fn is_baseline(&self, version: &str) -> bool {
        self.baseline.as_deref() == Some(version)
    }

    fn seen(&self, version: &str) -> Option<&Seen<'a>> {
        self.versions.iter().find(|s| s.version == version)
    }
}

/// The rules applied to a candidate of `phase`: the absolute ones on
/// `candidates` (one per endpoint judged), the comparative ones on
/// `compared`'s pairs against its baseline, or inconclusive with
/// `compared`'s reason. A phase's results name it in their evidence.
pub(super) fn rules_for(
    judge: &Judge,
    phase: Phase,
    candidates: &[Candidate<'_>],
    compared: Result<(&str, Vec<Pair<'_>>), String>,
) -> Vec<RuleResult> {
    let set = &judge.rules[phase.index()];
    let c = &judge.config;
    let seq = &judge.sequential;
    let mut out = Vec::with_capacity(4);
    if set.sla.enabled {
        let mut result = rules::sla(&set.sla, seq, candidates);
        let windows: Vec<&WindowSummary> = candidates.iter().map(|c| c.window).collect();
        rules::state_resolution(&mut result, &windows);
        out.push(result);
    }
    let pairs = compared.as_ref().ok().map(|(b, p)| (*b, p.as_slice()));
    if set.errors {
        out.push(rules::errors(&c.errors, seq, candidates, pairs));
    }
    for (on, rule) in [
        (set.relative.enabled, Rule::Relative),
        (set.fanout, Rule::Fanout),
    ] {
        if !on {
            continue;
        }
        out.push(match (&compared, rule) {
            (Ok((b, p)), Rule::Relative) => {
                let mut result = rules::relative(&set.relative, seq, b, p);
                let windows: Vec<&WindowSummary> = p
                    .iter()
                    .flat_map(|p| [p.candidate.window, p.baseline])
                    .collect();
                rules::state_resolution(&mut result, &windows);
                result
            }
            (Ok((b, p)), _) => rules::fanout(&c.fanout, seq, b, p),
            (Err(why), _) => {
                let (unit, test) = match rule {
                    Rule::Relative => (rules::Unit::Ms, rules::Test::Rank),
                    _ => (rules::Unit::Calls, rules::Test::Poisson),
                };
                RuleResult::inconclusive(rule, unit, test, format!("inconclusive: {why}"))
            }
        });
    }
    if !phase.is_request() {
        for r in &mut out {
            r.evidence.detail = format!("{}: {}", phase.words(), r.evidence.detail);
        }
    }
    out
}

impl Judge {
    /// Judges every service at `now_ms` (those with series and those the
    /// judge holds state for), in name order, each as
    /// [`Judge::evaluate_service`]; returns the alerts that changed, in key
    /// order.
    pub fn evaluate(&mut self, agg: &Aggregator, now_ms: u64) -> Vec<Transition> {
        let mut services: BTreeSet<String> = agg
            .services_from(Bound::Unbounded)
            .map(str::to_owned)
            .collect();
        services.extend(self.services.keys().cloned());
        let mut transitions = Vec::new();
        for service in &services {
            transitions.extend(self.evaluate_service(agg, service, now_ms));
        }
        transitions
    }

    /// Judges `service` at `now_ms`: its endpoints and versions, its
    /// version-wide verdicts, its alerts (those whose subject is gone
    /// retire: a service with no series left loses them all) and
    /// promotions. Returns the alerts that changed, in key order. Reads
    /// and writes nothing of another service.
    pub fn evaluate_service(
        &mut self,
        agg: &Aggregator,
        service: &str,
        now_ms: u64,
    ) -> Vec<Transition> {
        // Taken out while judged, so the judge's settings stay readable;
        // its place stays (removing and inserting every judged service
        // leaves tombstones that make hashbrown rehash the whole map, a
        // pause of ingest at 50,000 services).
        let mut state = self
            .services
            .get_mut(service)
            .map(std::mem::take)
            .unwrap_or_default();
        let endpoints = agg.service_endpoints(service);
        let (decided, chosen) = self.decide(&state, agg, endpoints, now_ms);
        for (endpoint, version) in chosen {
            state.baselines.insert(
                endpoint,
                Chosen {
                    version,
                    promoted_ms: None,
                },
            );
        }
        // Endpoints the aggregator expired (or emptied, kept in place
        // while a snapshot holds positions).
        state
            .baselines
            .retain(|e, _| agg.versions(e).is_some_and(|v| !v.is_empty()));
        let (mut transitions, kept) = apply(&self.config.alerts, &mut state, &decided, now_ms);
        retire_unjudged(&mut state, &decided, kept, now_ms, &mut transitions);
        self.forget_acknowledgements(service, &state);
        self.promote(&mut state, agg, &decided, now_ms);
        transitions.sort_by(|a, b| (&a.key, a.severity).cmp(&(&b.key, b.severity)));
        if state.is_empty() {
            self.services.remove(service);
        } else if let Some(place) = self.services.get_mut(service) {
            *place = state;
        } else {
            self.services.insert(service.to_owned(), state);
        }
        transitions
    }

    /// The read-only half of an evaluation of one service (`endpoints`):
    /// what every key's rules say now, and the incumbent baselines that
    /// changed.
    fn decide<'a>(
        &self,
        state: &ServiceState,
        agg: &'a Aggregator,
        endpoints: Vec<(&'a EndpointKey, &'a Versions)>,
        now_ms: u64,
    ) -> (Decided<'a>, Vec<(EndpointKey, String)>) {
        let judged: HashSet<(&EndpointKey, &str)> = state
            .judgements
            .keys()
            .map(|k| (&k.endpoint, k.candidate.as_str()))
            .collect();
        let mut decided = Vec::with_capacity(state.judgements.len() + 16);
        let mut chosen = Vec::new();
        let times = service_times(&endpoints);
        let seen: Vec<Endpoint<'a>> = endpoints
            .into_iter()
            .map(|(key, versions)| self.see(state, agg, key, versions, &judged, &times, now_ms))
            .collect();
        // A version is judged across the service's endpoints one phase at
        // a time: the request before its phases.
        let mut seen = by_phase_and_subject(seen);
        self.band_together(&mut seen, agg, &times, now_ms);
        for e in &seen {
            if let Some(b) = &e.baseline {
                let fixed = self.fixed_baseline(e.key).is_some();
                let promoted = state
                    .baselines
                    .get(e.key)
                    .is_some_and(|c| c.promoted_ms.is_some() && c.version == **b);
                let known = state.baselines.get(e.key).map(|c| c.version.as_str());
                if !fixed && !promoted && known != Some(b) {
                    chosen.push((e.key.clone(), b.clone().into_owned()));
                }
            }
        }
        for strata in seen.chunk_by(|a, b| a.key.same_subject(b.key)) {
            self.judge_endpoint(state, strata, &mut decided);
        }
        for same_phase in seen.chunk_by(|a, b| a.key.phase == b.key.phase) {
            self.judge_versions(same_phase, &judged, now_ms, &mut decided);
        }
        self.explain_verbosity(&mut decided);
        (decided, chosen)
    }

    /// A request slower end to end whose time per output token is not
    /// (its per-token `relative` clear at every severity): the answers are
    /// longer, the model is not slower. Its evidence says so, and
    /// `judge.phases.verbose` decides whether it still pages.
    fn explain_verbosity(&self, decided: &mut Decided<'_>) {
        // The per-token verdicts by (endpoint, dimensions, candidate):
        // (cleared, ratio). Owned: only a generative service has any.
        let per_token: HashMap<(String, Vec<String>, String), (bool, f64)> = decided
            .iter()
            .filter(|(k, _)| k.endpoint.phase == Phase::PerOutputToken && k.rule == Rule::Relative)
            .filter_map(|(k, u)| match u {
                Update::Judged(r) => Some((
                    (
                        k.endpoint.endpoint.clone(),
                        k.endpoint.dims.clone(),
                        k.candidate.to_owned(),
                    ),
                    (
                        rules::Severity::ALL
                            .iter()
                            .all(|s| r.conditions.at(*s) == rules::Condition::Clear),
                        r.evidence.ratio,
                    ),
                )),
                Update::Quiet(_) => None,
            })
            .collect();
        if per_token.is_empty() {
            return;
        }
        for (k, u) in decided.iter_mut() {
            let Update::Judged(r) = u else { continue };
            if !k.endpoint.phase.is_request() || k.rule != Rule::Relative {
                continue;
            }
            if r.conditions.breached().is_none() {
                continue;
            }
            let found = per_token.get(&(
                k.endpoint.endpoint.clone(),
                k.endpoint.dims.clone(),
                k.candidate.to_owned(),
            ));
            let Some(&(true, token_ratio)) = found else {
                continue;
            };
            let longer = r.evidence.ratio / token_ratio.max(f64::MIN_POSITIVE);
            r.evidence.detail.push_str(&format!(
                "; per output token it is as fast ({token_ratio:.2}x): verbose, not slower, its answers about {longer:.1}x longer"
            ));
            if self.config.phases.verbose == VerbosePolicy::Warn {
                let critical = rules::Severity::Critical.index();
                if r.conditions.0[critical] == rules::Condition::Breach {
                    r.conditions.0[critical] = rules::Condition::Clear;
                }
            }
        }
    }

    /// One endpoint's versions: windows, epochs, the baseline and whether
    /// it can be trusted.
    #[allow(clippy::too_many_arguments, reason = "one endpoint's whole context")]
    fn see<'a>(
        &self,
        state: &ServiceState,
        agg: &'a Aggregator,
        key: &'a EndpointKey,
        versions: &'a Versions,
        judged: &HashSet<(&EndpointKey, &str)>,
        times: &ServiceTimes<'_>,
        now_ms: u64,
    ) -> Endpoint<'a> {
        let baseline = self.choose_baseline(state, agg, key, versions, times, now_ms);
        let base = baseline
            .as_deref()
            .and_then(|b| versions.get(b))
            .map(|s| self.baseline_window(agg, s, now_ms))
            .unwrap_or_default();
        let quiet_ms = self.config.alerts.no_traffic_resolve.as_millis() as u64;
        let epoch_ms = (self.config.sequential.epoch.as_millis() as u64).max(1);
        let mut seen = Vec::with_capacity(versions.len());
        for (version, series) in versions.iter() {
            let window = agg.recent(series, now_ms, self.min_requests);
            // A version with no recent traffic is judged only while it has
            // judgements: they hold its last verdict.
            if window.count() == 0 && !judged.contains(&(key, version.as_str())) {
                // A band's judgements are its endpoint's.
                let unbanded = key.input.map(|_| key.unbanded());
                if unbanded.is_none_or(|k| !judged.contains(&(&k, version.as_str()))) {
                    continue;
                }
            }
            let age = now_ms.saturating_sub(series.first_seen_ms);
            let epoch_start = series.first_seen_ms + age / epoch_ms * epoch_ms;
            seen.push(Seen {
                version,
                series,
                window,
                epoch: Epoch::lazy(move || agg.since(series, epoch_start, now_ms)),
                // Quiet when the version had no request on any endpoint of
                // its service: a rollback, not an endpoint with little traffic.
                quiet: times
                    .get(version.as_str())
                    .map_or(series.last_seen_ms, |t| t.last_ms)
                    .saturating_add(quiet_ms)
                    <= now_ms,
            });
        }
        let mut endpoint = Endpoint {
            key,
            baseline,
            base,
            untrusted: None,
            versions: seen,
        };
        endpoint.untrusted = self.distrust(std::slice::from_ref(&endpoint));
        endpoint
    }

    /// The input-size bands of one endpoint's first token
    /// ([`crate::phase::InputBand`]) are strata of one subject: they share
    /// one baseline (the one `choose_baseline` would pick over them all:
    /// the first on the service among their baselines; a band it has no
    /// traffic in is not compared) and one trust. `seen` is in
    /// [`by_phase_and_subject`] order.
    fn band_together<'a>(
        &self,
        seen: &mut [Endpoint<'a>],
        agg: &'a Aggregator,
        times: &ServiceTimes<'_>,
        now_ms: u64,
    ) {
        for strata in seen.chunk_by_mut(|a, b| a.key.same_subject(b.key)) {
            if strata.iter().all(|e| e.key.input.is_none()) {
                continue;
            }
            let first = |v: &str| times.get(v).map(|t| t.first_ms);
            let shared = strata
                .iter()
                .filter_map(|e| e.baseline.clone())
                .min_by(|a, b| first(a).cmp(&first(b)).then_with(|| version_order(a, b)));
            for e in strata.iter_mut() {
                if e.baseline != shared {
                    e.base = shared
                        .as_deref()
                        .and_then(|b| agg.versions(e.key)?.get(b))
                        .map(|s| self.baseline_window(agg, s, now_ms))
                        .unwrap_or_default();
                    e.baseline = shared.clone();
                }
            }
            let untrusted = self.distrust(strata);
            for e in strata.iter_mut() {
                e.untrusted = untrusted.clone();
            }
        }
    }

    /// Why the baseline of one endpoint (`strata`: its series, or its
    /// bands, sharing one baseline) cannot be compared with: no traffic
    /// over the horizon, or it breaches an absolute rule itself
    /// (critically).
    fn distrust(&self, strata: &[Endpoint<'_>]) -> Option<String> {
        let e = strata.first()?;
        let b = e.baseline.as_deref()?;
        if strata.iter().all(|e| e.base.count() == 0) {
            return Some(format!("baseline {b} has no traffic to compare with"));
        }
        let own: Vec<Candidate<'_>> = strata
            .iter()
            .filter_map(|e| e.seen(b))
            .map(candidate)
            .collect();
        if own.is_empty() {
            return None;
        }
        let own = rules_for(self, e.key.phase, &own, Err(String::new()));
        own.iter()
            .find(|r| r.conditions.at(rules::Severity::Critical) == rules::Condition::Breach)
            .map(|r| {
                format!(
                    "baseline {b} is not trusted: it breaches {} itself ({})",
                    r.rule, r.evidence.detail
                )
            })
    }

    /// Every version of one endpoint (`strata`: its series, or the bands
    /// of its first token, sharing one baseline): the baseline by the
    /// absolute rules, each candidate against the baseline, stratum with
    /// stratum. Judgements name the endpoint, never a band.
    fn judge_endpoint<'a>(
        &self,
        state: &ServiceState,
        strata: &[Endpoint<'a>],
        out: &mut Vec<(KeyRef<'a>, Update)>,
    ) {
        let Some(e) = strata.first() else {
            return;
        };
        let subject: Cow<'a, EndpointKey> = match strata {
            [one] if one.key.input.is_none() => Cow::Borrowed(one.key),
            _ => Cow::Owned(e.key.unbanded()),
        };
        let mut versions: Vec<&str> = Vec::with_capacity(e.versions.len());
        for s in strata.iter().flat_map(|e| &e.versions) {
            if !versions.contains(&s.version) {
                versions.push(s.version);
            }
        }
        for version in versions {
            let serving: Vec<(&Endpoint<'a>, &Seen<'a>)> = strata
                .iter()
                .filter_map(|e| Some((e, e.seen(version)?)))
                .collect();
            let is_baseline = e.is_baseline(version);
            let compared_with = match (&e.baseline, is_baseline) {
                (Some(b), false) => b.clone(),
                _ => Cow::Borrowed(""),
            };
            let key = |rule| KeyRef {
                endpoint: subject.clone(),
                candidate: version,
                baseline: compared_with.clone(),
                rule,
            };
            if serving.iter().all(|(_, s)| s.quiet) {
                let last = serving.iter().map(|(_, s)| s.series.last_seen_ms).max();
                for rule in Rule::ALL {
                    out.push((key(rule), Update::Quiet(last.unwrap_or_default())));
                }
                continue;
            }
            let cands: Vec<Candidate<'_>> = serving.iter().map(|(_, s)| candidate(s)).collect();
            let results = if is_baseline {
                // The baseline: absolute rules only.
                rules_for(self, e.key.phase, &cands, Err(String::new()))
                    .into_iter()
                    .filter(|r| !r.rule.comparative() || r.rule == Rule::Errors)
                    .collect()
            } else {
                let mut results = rules_for(self, e.key.phase, &cands, compared(&serving));
                within_bands(&mut results, &serving);
                results
            };
            for r in results {
                let key = key(r.rule);
                // A baseline's own absolute rules are judged from their
                // first breach on: until then they have no alert to hold
                // and nothing the API keeps (it judges them on the spot),
                // and a judgement a series would cost more than the series.
                if is_baseline
                    && r.conditions.breached().is_none()
                    && state.judgements.get(&key).is_none()
                {
                    continue;
                }
                out.push((key, Update::Judged(Box::new(r))));
            }
        }
    }

    /// Every candidate serving two endpoints or more of one service, across
    /// them: the absolute rules on all its requests, the comparative ones
    /// stratified by endpoint against each endpoint's baseline.
    fn judge_versions<'a>(
        &self,
        endpoints: &[Endpoint<'a>],
        judged: &HashSet<(&EndpointKey, &str)>,
        now_ms: u64,
        out: &mut Vec<(KeyRef<'a>, Update)>,
    ) {
        let Some(first) = endpoints.first() else {
            return;
        };
        let all = EndpointKey {
            service: first.key.service.clone(),
            endpoint: ALL_ENDPOINTS.to_owned(),
            dims: Vec::new(),
            phase: first.key.phase,
            input: None,
        };
        let mut candidates: BTreeMap<&str, Vec<(&Endpoint<'a>, &Seen<'a>)>> = BTreeMap::new();
        for e in endpoints {
            for seen in &e.versions {
                if !e.is_baseline(seen.version) {
                    candidates.entry(seen.version).or_default().push((e, seen));
                }
            }
        }
        for (version, serving) in candidates {
            let held = judged.contains(&(&all, version));
            let subjects = serving
                .chunk_by(|a, b| a.0.key.same_subject(b.0.key))
                .count();
            if subjects < 2 && !held {
                continue;
            }
            let baselines = common_baseline(&serving);
            let key = |rule| KeyRef {
                endpoint: Cow::Owned(all.clone()),
                candidate: version,
                baseline: Cow::Owned(baselines.clone()),
                rule,
            };
            let active: Vec<&(&Endpoint<'a>, &Seen<'a>)> =
                serving.iter().filter(|(_, s)| !s.quiet).collect();
            if active.is_empty() {
                let last = serving.iter().map(|(_, s)| s.series.last_seen_ms).max();
                for rule in Rule::ALL {
                    out.push((key(rule), Update::Quiet(last.unwrap_or(now_ms))));
                }
                continue;
            }
            let cands: Vec<Candidate<'_>> = active.iter().map(|(_, s)| candidate(s)).collect();
            let pairs: Vec<Pair<'_>> = active
                .iter()
                .filter(|(e, _)| {
                    e.untrusted.is_none() && e.baseline.is_some() && e.base.count() > 0
                })
                .map(|(e, s)| Pair {
                    candidate: candidate(s),
                    baseline: &e.base,
                })
                .collect();
            let compared = if pairs.is_empty() {
                Err(no_pairs_reason(&serving))
            } else {
                Ok((baselines.as_str(), pairs))
            };
            let mut results = rules_for(self, first.key.phase, &cands, compared);
            let strata: Vec<(&Endpoint<'a>, &Seen<'a>)> = active.iter().map(|x| **x).collect();
            within_bands(&mut results, &strata);
            for mut r in results {
                attribute(&mut r, &serving, self);
                out.push((key(r.rule), Update::Judged(Box::new(r))));
            }
        }
    }

    /// Acknowledgements of `service` hold while an alert they name is live.
    fn forget_acknowledgements(&mut self, service: &str, state: &ServiceState) {
        if !self.acknowledged.iter().any(|k| k.0 == service) {
            return;
        }
        let live: HashSet<AckKey> = state
            .judgements
            .iter()
            .filter(|(_, j)| j.is_live())
            .map(|(k, _)| ack_key(k))
            .collect();
        self.acknowledged
            .retain(|k| k.0 != service || live.contains(k));
    }

    /// Candidates that passed long enough with enough of their endpoint's
    /// traffic become its baseline (see `judge.promotion`).
    fn promote(
        &self,
        state: &mut ServiceState,
        agg: &Aggregator,
        decided: &[(KeyRef<'_>, Update)],
        now_ms: u64,
    ) {
        let policy = &self.config.promotion;
        if !policy.enabled {
            return;
        }
        // Per (endpoint, candidate): passing on every rule, no live alert,
        // and nothing version-wide against it.
        let mut clean: HashMap<(&EndpointKey, &str), bool> = HashMap::new();
        let mut blocked: HashSet<(&str, &str)> = HashSet::new();
        for (key, update) in decided {
            if key.baseline.is_empty() {
                continue;
            }
            let live = state.judgements.get(key).is_some_and(|j| j.is_live());
            let passing = matches!(update, Update::Judged(r) if r.outcome() == Verdict::Pass);
            // A version-wide judgement, or a phase's (a slower decode is
            // no better for a fast end to end), blocks the version's
            // promotion on the whole service.
            if key.endpoint.endpoint == ALL_ENDPOINTS || !key.endpoint.phase.is_request() {
                if live
                    || matches!(update, Update::Judged(r) if matches!(r.outcome(), Verdict::Regression(_)))
                {
                    blocked.insert((key.endpoint.service.as_str(), key.candidate));
                }
                continue;
            }
            let entry = clean
                .entry((key.endpoint.as_ref(), key.candidate))
                .or_insert(true);
            *entry &= passing && !live;
        }
        let after_ms = policy.after.as_millis() as u64;
        let mut promotions = Vec::new();
        let mut still = HashSet::new();
        for ((endpoint, candidate), ok) in clean {
            let ok = ok && !blocked.contains(&(endpoint.service.as_str(), candidate));
            if !ok || self.fixed_baseline(endpoint).is_some() {
                continue;
            }
            let since = *state
                .candidacy
                .entry((endpoint.clone(), candidate.to_owned()))
                .or_insert(now_ms);
            still.insert((endpoint.clone(), candidate.to_owned()));
            if now_ms.saturating_sub(since) >= after_ms
                && self.eligible(state, agg, endpoint, candidate, now_ms)
            {
                promotions.push((endpoint.clone(), candidate.to_owned()));
            }
        }
        state.candidacy.retain(|k, _| still.contains(k));
        for (endpoint, version) in promotions {
            tracing::info!(
                service = ?endpoint.service,
                endpoint = ?endpoint.endpoint,
                version,
                "baseline promoted: passed for judge.promotion.after with enough traffic"
            );
            state.candidacy.retain(|(e, _), _| *e != endpoint);
            state.baselines.insert(
                endpoint,
                Chosen {
                    version,
                    promoted_ms: Some(now_ms),
                },
            );
        }
    }

    /// The candidate carries `min_share` of the endpoint's window and is
    /// newer than the baseline.
    fn eligible(
        &self,
        state: &ServiceState,
        agg: &Aggregator,
        endpoint: &EndpointKey,
        candidate: &str,
        now_ms: u64,
    ) -> bool {
        let Some(versions) = agg.versions(endpoint) else {
            return false;
        };
        let Some(series) = versions.get(candidate) else {
            return false;
        };
        let total: u64 = versions
            .iter()
            .map(|(_, s)| agg.window(s, now_ms).count())
            .sum();
        let share = agg.window(series, now_ms).count() as f64 / total.max(1) as f64;
        let newer = self
            .baseline_in_state(Some(state), endpoint)
            .and_then(|(b, _)| versions.get(b))
            .is_none_or(|b| series.first_seen_ms > b.first_seen_ms);
        share >= self.config.promotion.min_share && newer
    }
}

/// Applies what was decided to `state`'s alerts: new judgements, each
/// severity's alert stepped; returns the transitions.
fn apply(
    policy: &AlertPolicy,
    state: &mut ServiceState,
    decided: &[(KeyRef<'_>, Update)],
    now_ms: u64,
) -> (Vec<Transition>, usize) {
    let mut transitions = Vec::new();
    let mut kept = 0;
    for (key, update) in decided {
        let judgement = match state.judgements.get_mut(key) {
            Some(j) => j,
            None => {
                let Update::Judged(result) = update else {
                    continue;
                };
                state
                    .judgements
                    .entry(key.to_key())
                    .or_insert_with(|| Box::new(Judgement::new(RuleResult::clone(result), now_ms)))
            }
        };
        kept += 1;
        let mut moved = Vec::new();
        match update {
            Update::Judged(result) => {
                judgement.result = RuleResult::clone(result);
                judgement.quiet_since_ms = None;
                for s in rules::Severity::ALL {
                    let condition = result.conditions.at(s);
                    if let Some(previous) =
                        judgement.alerts[s.index()].step(condition, now_ms, policy)
                    {
                        moved.push((s, previous));
                    }
                }
            }
            Update::Quiet(last_seen) => {
                judgement.quiet_since_ms = Some(*last_seen);
                for s in rules::Severity::ALL {
                    if let Some(previous) =
                        judgement.alerts[s.index()].quiet(*last_seen, now_ms, policy)
                    {
                        moved.push((s, previous));
                    }
                }
            }
        }
        for (severity, previous) in moved {
            transitions.push(Transition {
                key: key.to_key(),
                severity,
                previous,
                judgement: Judgement::clone(judgement),
            });
        }
    }
    (transitions, kept)
}

/// `kept` of the keys decided now are in the map, once each: a larger
/// map holds alerts whose subject is gone (series expired, baseline
/// changed). Firing ones resolve, then all go.
fn retire_unjudged(
    state: &mut ServiceState,
    decided: &[(KeyRef<'_>, Update)],
    kept: usize,
    now_ms: u64,
    transitions: &mut Vec<Transition>,
) {
    if state.judgements.len() <= kept {
        return;
    }
    let seen: HashSet<&KeyRef<'_>> = decided.iter().map(|(k, _)| k).collect();
    state.judgements.retain(|key, judgement| {
        if seen.contains(&KeyRef::of(key)) {
            return true;
        }
        for s in rules::Severity::ALL {
            if let Some(previous) = judgement.alerts[s.index()].retire(now_ms) {
                judgement.result.evidence.detail =
                    "no longer judged: the series expired or the baseline changed".into();
                transitions.push(Transition {
                    key: key.clone(),
                    severity: s,
                    previous,
                    judgement: Judgement::clone(judgement),
                });
            }
        }
        false
    });
}

/// A candidate's view for the rules.
fn candidate<'s>(seen: &'s Seen<'_>) -> Candidate<'s> {
    Candidate {
        window: &seen.window,
        epoch: &seen.epoch,
    }
}

/// What a candidate's comparative rules compare with on one endpoint
/// (`serving`: its series, or its bands, with the candidate's traffic in
/// each), or why they cannot. A band the baseline has no traffic in is
/// not compared.
fn compared<'a>(
    serving: &[(&'a Endpoint<'_>, &'a Seen<'_>)],
) -> Result<(&'a str, Vec<Pair<'a>>), String> {
    let Some((e, _)) = serving.first() else {
        return Err("the candidate has no traffic here".into());
    };
    match (&e.baseline, &e.untrusted) {
        (None, _) => Err("no baseline distinct from the candidate".into()),
        (Some(_), Some(why)) => Err(why.clone()),
        (Some(b), None) => {
            let pairs: Vec<Pair<'a>> = serving
                .iter()
                .filter(|(e, _)| e.base.count() > 0)
                .map(|(e, s)| Pair {
                    candidate: candidate(s),
                    baseline: &e.base,
                })
                .collect();
            if pairs.is_empty() {
                return Err(format!(
                    "baseline {b} has no traffic in the candidate's input-size bands"
                ));
            }
            Ok((b.as_ref(), pairs))
        }
    }
}

/// When `serving` holds input-size bands, `relative`'s evidence says it
/// compared band with band, and where the candidate moved most: the ratio
/// at the headline quantile in the worst band both sides have.
fn within_bands(results: &mut [RuleResult], serving: &[(&Endpoint<'_>, &Seen<'_>)]) {
    if serving.iter().all(|(e, _)| e.key.input.is_none()) {
        return;
    }
    for r in results.iter_mut().filter(|r| r.rule == Rule::Relative) {
        let q = r.evidence.quantile;
        let worst = serving
            .iter()
            .filter_map(|(e, s)| {
                let c = s.window.latency.quantile(q)?;
                let b = e.base.latency.quantile(q)?;
                Some((rules::ratio(c, b), e.key.input))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let words = match worst {
            Some((ratio, band)) => format!(
                "; compared within input-size bands: {ratio:.2}x at {} in {}",
                rules::pct(q),
                band.map_or("requests without an input size".into(), |b| format!(
                    "{b} input tokens"
                )),
            ),
            None => "; compared within input-size bands".into(),
        };
        r.evidence.detail.push_str(&words);
    }
}

/// The baseline a version-wide judgement names: the endpoints' one, or
/// the most common when they differ.
fn common_baseline(serving: &[(&Endpoint<'_>, &Seen<'_>)]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (e, _) in serving {
        if let Some(b) = e.baseline.as_deref() {
            *counts.entry(b).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(b, _)| b.to_owned())
        .unwrap_or_default()
}

fn no_pairs_reason(serving: &[(&Endpoint<'_>, &Seen<'_>)]) -> String {
    serving
        .iter()
        .find_map(|(e, _)| e.untrusted.clone())
        .unwrap_or_else(|| "no baseline distinct from the candidate on any endpoint".into())
}

/// The attribution the lending notes made by hand, appended to a
/// version-wide result: on how many of its endpoints the candidate breaches
/// the same rule on its own.
fn attribute(result: &mut RuleResult, serving: &[(&Endpoint<'_>, &Seen<'_>)], judge: &Judge) {
    let Some(severity) = result.conditions.breached() else {
        return;
    };
    let mut slower = Vec::new();
    let mut n = 0;
    // An endpoint's input-size bands are one endpoint.
    for strata in serving.chunk_by(|a, b| a.0.key.same_subject(b.0.key)) {
        n += 1;
        let cands: Vec<Candidate<'_>> = strata.iter().map(|(_, s)| candidate(s)).collect();
        let (e, _) = strata[0];
        let own = rules_for(judge, e.key.phase, &cands, compared(strata));
        let breached = own.iter().any(|r| {
            r.rule == result.rule && r.conditions.at(severity) == rules::Condition::Breach
        });
        if breached {
            slower.push(e.key.endpoint.as_str());
        }
    }
    let k = slower.len();
    let words = match k {
        0 => format!(
            "; no single endpoint has enough requests to say so alone, all {n} together do: the version"
        ),
        k if k == n => format!("; on {k} of {n} endpoints: the version, not an endpoint"),
        1 => format!("; on 1 of {n} endpoints ({}): look at that endpoint", slower[0]),
        _ => format!("; on {k} of {n} endpoints ({})", slower.join(", ")),
    };
    result.evidence.detail.push_str(&words);
}

/// `seen` by phase (the request before its phases), each endpoint's
/// input-size bands next to each other where the first of them was; else
/// in the order given.
fn by_phase_and_subject(seen: Vec<Endpoint<'_>>) -> Vec<Endpoint<'_>> {
    let mut first_of: HashMap<EndpointKey, usize> = HashMap::new();
    let mut keyed: Vec<((Phase, usize), Endpoint<'_>)> = seen
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            // Only a first token has bands (and an unbanded series beside
            // them); no other key is copied.
            let at = if e.key.phase == Phase::FirstToken {
                *first_of.entry(e.key.unbanded()).or_insert(i)
            } else {
                i
            };
            ((e.key.phase, at), e)
        })
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// Each version's latest request over a service's endpoints.
/// When each version of a service had its first and its last request on
/// any of `endpoints` (by the requests' own time).
fn service_times<'a>(endpoints: &[(&'a EndpointKey, &'a Versions)]) -> ServiceTimes<'a> {
    let mut times: ServiceTimes<'a> = HashMap::new();
    for (_, versions) in endpoints {
        for (version, series) in versions.iter() {
            let t = times.entry(version.as_str()).or_insert(OnService {
                first_ms: series.first_seen_ms,
                last_ms: series.last_seen_ms,
            });
            t.first_ms = t.first_ms.min(series.first_seen_ms);
            t.last_ms = t.last_ms.max(series.last_seen_ms);
        }
    }
    times
}

impl Judge {
    /// [`Judge::evaluate`]'s judgement of one candidate on the spot, with
    /// this judge's configuration and no history: every endpoint of
    /// `service` it serves (only `only` when given), each against
    /// `baseline` or the endpoint's own, and version-wide.
    pub fn judge_candidate(
        &self,
        agg: &Aggregator,
        service: &str,
        version: &str,
        only: Option<&str>,
        baseline: Option<&str>,
        now_ms: u64,
    ) -> Vec<(AlertKey, RuleResult)> {
        let none = HashSet::new();
        let empty = ServiceState::default();
        let state = self.services.get(service).unwrap_or(&empty);
        let all = agg.service_endpoints(service);
        let times = service_times(&all);
        let mut seen: Vec<Endpoint<'_>> = all
            .into_iter()
            .filter(|(k, v)| only.is_none_or(|e| e == k.endpoint) && v.contains_key(version))
            .map(|(key, versions)| self.see(state, agg, key, versions, &none, &times, now_ms))
            .collect();
        if let Some(b) = baseline {
            for e in &mut seen {
                let versions = agg.versions(e.key);
                e.baseline = Some(Cow::Owned(b.to_owned()));
                e.base = versions
                    .and_then(|v| v.get(b))
                    .map(|s| self.baseline_window(agg, s, now_ms))
                    .unwrap_or_default();
                e.untrusted = self.distrust(std::slice::from_ref(e));
            }
        }
        // Bands as one endpoint, as `decide` does.
        let mut seen = by_phase_and_subject(seen);
        self.band_together(&mut seen, agg, &times, now_ms);
        let mut decided = Vec::new();
        for strata in seen.chunk_by(|a, b| a.key.same_subject(b.key)) {
            let serving: Vec<(&Endpoint<'_>, &Seen<'_>)> = strata
                .iter()
                .filter_map(|e| Some((e, e.seen(version)?)))
                .collect();
            let Some((e, _)) = serving.first() else {
                continue;
            };
            let cands: Vec<Candidate<'_>> = serving.iter().map(|(_, s)| candidate(s)).collect();
            // Judged as a candidate even when it is the baseline itself: its
            // comparative rules then say there is nothing to compare with.
            let (label, compared) = if e.is_baseline(version) {
                (
                    String::new(),
                    Err(format!("{version} is the baseline of this endpoint")),
                )
            } else {
                (
                    e.baseline.as_deref().unwrap_or_default().to_owned(),
                    compared(&serving),
                )
            };
            let mut results = rules_for(self, e.key.phase, &cands, compared);
            within_bands(&mut results, &serving);
            for r in results {
                let key = AlertKey {
                    endpoint: e.key.unbanded(),
                    candidate: version.to_owned(),
                    baseline: label.clone(),
                    rule: r.rule,
                };
                decided.push((key, r));
            }
        }
        if only.is_none() {
            let mut versions = Vec::new();
            // Across endpoints one phase at a time, as `decide` does.
            for same_phase in seen.chunk_by(|a, b| a.key.phase == b.key.phase) {
                self.judge_versions(same_phase, &none, now_ms, &mut versions);
            }
            for (key, update) in versions {
                if key.candidate == version {
                    if let Update::Judged(r) = update {
                        decided.push((key.to_key(), *r));
                    }
                }
            }
        }
        decided
    }
}
