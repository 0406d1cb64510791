//! Judge: every endpoint's versions -> rule results -> alert transitions.
//!
//! Per endpoint, one version is the baseline. It is, in this order: the
//! version pinned through the API, the configured one, a candidate promoted
//! to it, or else the incumbent: the version whose first request on the
//! service (by the requests' own time, not by arrival) came first, the
//! older version name on a tie (`v1.2` before `v1.3`). Volume never makes a baseline: a
//! candidate is promoted only after it passed for `judge.promotion.after`
//! while carrying `judge.promotion.min_share` of the endpoint's traffic.
//! Every other version is a candidate.
//!
//! Every version is held to the absolute rules (`sla`; `errors` against its
//! ceiling when it has no baseline); a baseline that breaches them is
//! reported and not trusted, and its candidates' comparative rules say so
//! (inconclusive) rather than pass. A candidate is judged by `relative`,
//! `errors` and `fanout` against its baseline on each endpoint
//! ([`rules::Scope::Endpoint`]) and, when it serves two endpoints or more,
//! across all of them at once ([`rules::Scope::Version`]: endpoint
//! [`ALL_ENDPOINTS`]), which is how the lending incident was understood:
//! slow on both endpoints, so the model, not an endpoint.
//!
//! A generative model's phases are series of their own, each judged
//! against the baseline's same phase. Its time to the first token may be
//! kept per band of input tokens ([`crate::phase::InputBand`]): an
//! endpoint's bands (and its unbanded series) are strata of one subject,
//! sharing one baseline and one trust, and the candidate is compared band
//! with band (the comparative rules stratified as they are by endpoint
//! version-wide), so longer prompts are not taken for a slower prefill.
//! Judgements and alerts name the endpoint, never a band; version-wide,
//! every band of every endpoint is a stratum.
//!
//! Each result drives one alert per severity ([`AlertMachine`]). A candidate
//! without traffic for `judge.alerts.no_traffic_resolve` keeps its last
//! result (a regression stays one) but its alerts resolve, reason
//! `no_traffic`.
//!
//! Two operator actions change it at run time (the API's write operations):
//! [`Judge::set_baseline`] pins an endpoint's (or a whole service's)
//! baseline, above the configured and the chosen one, until restart; the
//! latest pin wins, and a service-wide pin replaces that service's
//! endpoint pins. [`Judge::acknowledge`] marks a firing alert acknowledged:
//! the mark holds, whatever the baseline, while an alert of that service,
//! endpoint, candidate and rule is pending or firing, and is dropped once
//! none is; [`Judge::is_acknowledged`] tells the pipeline which events not to
//! send again.
//!
//! A service is judged alone ([`Judge::evaluate_service`]): its verdicts
//! read only its own series and its own part of the judge's state
//! (baselines, promotion progress, alerts), so a tick judges only the
//! services whose verdicts can have changed ([`schedule`]) and the work
//! splits into slices between batches. [`Judge::evaluate`] judges every
//! service, the same as one at a time.
//!
//! The judge owns its alert states and is driven by one task with `now`
//! passed in; it never reads the clock and never touches the network.

pub mod alert;
mod evaluate;
pub mod power;
pub mod rules;
pub mod schedule;
pub mod stats;

use std::borrow::Cow;
use std::cmp::Ordering;

use hashbrown::{HashMap, HashSet};
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregator, Series, Versions, WindowSummary};
use crate::config::{BaselineConfig, JudgeConfig, RelativeRule, SlaRule};
use crate::extract::EndpointKey;
use crate::phase::Phase;

/// The requests a baseline's window stretches back for (up to the
/// horizon): enough for each rule's test to have the power to pass a
/// candidate of a few hundred requests, few enough that a baseline at a
/// few requests a second is compared over the candidate's own minutes.
pub const BASELINE_MIN_REQUESTS: u64 = 1000;
pub use alert::{AlertMachine, AlertState, Resolution};
pub use rules::{
    Candidate, Condition, Conditions, Epoch, Evidence, Pair, Rule, RuleResult, Scope, Sequential,
    Severity, Test, Unit, Verdict,
};
pub use schedule::{Round, Schedule};

pub use crate::extract::ALL_ENDPOINTS;

/// The e-value each rule must reach: its share of the false-alarm budget
/// per series-hour, spent over one epoch (Ville's inequality per epoch, a
/// union bound over rules and epochs).
fn sequential_thresholds(config: &JudgeConfig) -> Sequential {
    let rules = [
        config.sla.enabled,
        config.relative.enabled,
        config.errors.enabled,
        config.fanout.enabled,
    ]
    .iter()
    .filter(|on| **on)
    .count()
    .max(1) as f64;
    let epoch_hours = config.sequential.epoch.as_secs_f64() / 3600.0;
    let alpha = config.sequential.alerts_per_series_hour / rules * epoch_hours;
    Sequential {
        e_threshold: 1.0 / alpha,
        rank_effect_scale: config.sequential.rank_effect_scale,
        clear_fraction: config.alerts.clear_fraction,
        pass_power: config.pass_power,
    }
}

/// A version's first and last request on any endpoint of its service, by
/// the requests' own time.
#[derive(Debug, Clone, Copy)]
struct OnService {
    first_ms: u64,
    last_ms: u64,
}

/// [`OnService`] of each version of one service.
type ServiceTimes<'a> = HashMap<&'a str, OnService>;

/// Version names in release order: numeric runs compare as numbers
/// (`v1.10` after `v1.9`), the rest as text. Decides which of two versions
/// first seen at the same moment is the incumbent.
pub fn version_order(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (ra, rb) = (run(a), run(b));
                let trim = |s: &[u8]| {
                    let zeros = s.iter().take_while(|c| **c == b'0').count();
                    s[zeros..].to_vec()
                };
                let (na, nb) = (trim(&a[..ra]), trim(&b[..rb]));
                let by_value = na.len().cmp(&nb.len()).then_with(|| na.cmp(&nb));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                (a, b) = (&a[ra..], &b[rb..]);
            }
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            _ => (a, b) = (&a[1..], &b[1..]),
        }
    }
}

/// Identity of one alert (both of its severities).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlertKey {
    /// The endpoint judged; endpoint [`ALL_ENDPOINTS`] for a version-wide
    /// judgement.
    pub endpoint: EndpointKey,
    /// The version judged.
    pub candidate: String,
    /// What it was compared with; empty when it has no baseline (the
    /// baseline itself, or none distinct from it).
    pub baseline: String,
    /// The rule.
    pub rule: Rule,
}

impl AlertKey {
    /// Version-wide, not one endpoint's.
    pub fn is_version_wide(&self) -> bool {
        self.endpoint.endpoint == ALL_ENDPOINTS
    }
}

/// An [`AlertKey`] borrowed for one evaluation: every series is judged every
/// evaluation, so building owned keys (five strings per result) was most of
/// an evaluation's allocation and, at 100,000 series, tens of MiB of
/// transient memory. Hashes exactly as the [`AlertKey`] it stands for (same
/// fields, same order; `&str` hashes as `String`), so it looks judgements up
/// without building one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct KeyRef<'a> {
    /// Borrowed from the aggregator; owned for version-wide keys.
    endpoint: Cow<'a, EndpointKey>,
    candidate: &'a str,
    /// Borrowed from the aggregator's version names; owned only for a
    /// configured baseline that has no traffic.
    baseline: Cow<'a, str>,
    rule: Rule,
}

impl<'a> KeyRef<'a> {
    fn of(key: &'a AlertKey) -> Self {
        Self {
            endpoint: Cow::Borrowed(&key.endpoint),
            candidate: &key.candidate,
            baseline: Cow::Borrowed(&key.baseline),
            rule: key.rule,
        }
    }

    fn to_key(&self) -> AlertKey {
        AlertKey {
            endpoint: self.endpoint.clone().into_owned(),
            candidate: self.candidate.to_owned(),
            baseline: self.baseline.clone().into_owned(),
            rule: self.rule,
        }
    }
}

impl hashbrown::Equivalent<AlertKey> for KeyRef<'_> {
    fn equivalent(&self, key: &AlertKey) -> bool {
        *self == KeyRef::of(key)
    }
}

/// Judgements by key. hashbrown (here and for every map of the judge) for
/// lookups by [`KeyRef`] and for foldhash: an evaluation hashes every
/// series' key several times, and SipHash was an eighth of it at 100,000
/// series. The keys come from spans, but not from anyone who sees the
/// per-process seed (as for the aggregator's series map).
type Judgements = HashMap<AlertKey, Box<Judgement>>;

/// What an acknowledgement names: an alert whatever its baseline and
/// dimensions (service, endpoint, candidate, rule).
type AckKey = (String, String, String, Phase, Rule);

fn ack_key(key: &AlertKey) -> AckKey {
    (
        key.endpoint.service.clone(),
        key.endpoint.endpoint.clone(),
        key.candidate.clone(),
        key.endpoint.phase,
        key.rule,
    )
}

/// Why an operator action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// A required field is empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// `rule` names no rule.
    #[error("unknown rule {0:?}: one of sla, relative, errors, fanout")]
    UnknownRule(String),
    /// `phase` names no phase.
    #[error("unknown phase {0:?}: one of request, queue, first_token, per_output_token")]
    UnknownPhase(String),
    /// Nothing to acknowledge.
    #[error("no pending or firing alert matches service {service:?}, endpoint {endpoint:?}, candidate {candidate:?}, phase {phase}, rule {rule}")]
    NoSuchAlert {
        /// The service asked for.
        service: String,
        /// The endpoint asked for.
        endpoint: String,
        /// The candidate asked for.
        candidate: String,
        /// The phase asked for.
        phase: Phase,
        /// The rule asked for.
        rule: Rule,
    },
    /// Nothing to reset.
    #[error("no verdict is held for candidate {candidate:?} of service {service:?}")]
    NoSuchVerdict {
        /// The service asked for.
        service: String,
        /// The candidate asked for.
        candidate: String,
    },
}

/// One judged (endpoint, candidate, baseline, rule): the latest result and
/// the alert of each severity it drives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The latest evaluation with traffic.
    pub result: RuleResult,
    /// The alert of each [`Severity`], by [`Severity::index`].
    pub alerts: [AlertMachine; 2],
    /// Set while the candidate has had no request for
    /// `judge.alerts.no_traffic_resolve`: the time of its last one. The
    /// result is then the last it had traffic for.
    pub quiet_since_ms: Option<u64>,
}

impl Judgement {
    fn new(result: RuleResult, now_ms: u64) -> Self {
        Self {
            result,
            alerts: [AlertMachine::new(now_ms), AlertMachine::new(now_ms)],
            quiet_since_ms: None,
        }
    }

    /// The alert of `severity`.
    pub fn alert(&self, severity: Severity) -> &AlertMachine {
        &self.alerts[severity.index()]
    }

    /// The most severe alert firing now.
    pub fn firing(&self) -> Option<Severity> {
        Severity::ALL
            .into_iter()
            .rev()
            .find(|s| self.alert(*s).state == AlertState::Firing)
    }

    /// Some alert pending or firing: what an acknowledgement is about, and
    /// what keeps a candidate from promotion.
    pub fn is_live(&self) -> bool {
        self.alerts
            .iter()
            .any(|a| matches!(a.state, AlertState::Pending | AlertState::Firing))
    }

    /// What a release process acts on: the result's verdict (held while the
    /// candidate is quiet).
    pub fn verdict(&self) -> Verdict {
        self.result.outcome()
    }
}

/// An alert that changed state.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Which alert.
    pub key: AlertKey,
    /// Which of its severities.
    pub severity: Severity,
    /// Where it was.
    pub previous: AlertState,
    /// Where it is now, with the evidence.
    pub judgement: Judgement,
}

impl Transition {
    /// The alert that moved.
    pub fn alert(&self) -> &AlertMachine {
        self.judgement.alert(self.severity)
    }
}

/// How an endpoint's baseline was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaselineSource {
    /// Pinned through the API.
    Pinned,
    /// `judge.baselines`.
    Configured,
    /// A candidate that passed long enough.
    Promoted,
    /// The version the endpoint showed first.
    Incumbent,
}

impl BaselineSource {
    /// Lower-case name, for the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            BaselineSource::Pinned => "pinned",
            BaselineSource::Configured => "configured",
            BaselineSource::Promoted => "promoted",
            BaselineSource::Incumbent => "incumbent",
        }
    }
}

/// An endpoint's baseline when neither pinned nor configured: the
/// incumbent (recomputed at every evaluation, so records arriving late but
/// dated earlier still count) or a promoted candidate (kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Chosen {
    version: String,
    /// When it was promoted; `None` for the incumbent.
    promoted_ms: Option<u64>,
}

/// Per (endpoint, candidate): since when it has passed without a break.
type Candidacy = HashMap<(EndpointKey, String), u64>;

/// One service's part of the judge: a service is judged alone, and a
/// snapshot keeps it as it is (its chosen baselines, promotion progress and
/// every alert with its state, times and latest evidence), service by
/// service, so that it can be written in slices.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ServiceState {
    baselines: HashMap<EndpointKey, Chosen>,
    candidacy: Candidacy,
    /// Boxed: one per (endpoint, version, rule), so at 100,000 series the
    /// map's spare slots would otherwise cost ~230 bytes each.
    judgements: Judgements,
}

impl ServiceState {
    fn is_empty(&self) -> bool {
        self.baselines.is_empty() && self.candidacy.is_empty() && self.judgements.is_empty()
    }

    /// Its entries: what writing it costs a snapshot slice.
    pub(crate) fn entries(&self) -> usize {
        self.baselines.len() + self.candidacy.len() + self.judgements.len()
    }
}

/// What a snapshot keeps of a [`Judge`], read back: a sequence of each
/// service's (name, state), written one by one
/// ([`Judge::service_state`]).
pub(crate) type JudgeStateOwned = Vec<(String, ServiceState)>;

/// The rules one phase is judged by: the configured ones for the request;
/// for a generative model's phase, `relative` with the phase's smallest
/// difference and `sla` with the phase's limit (off without one), never
/// `errors` or `fanout` (see [`crate::config::PhaseRules`]).
#[derive(Debug, Clone)]
pub(crate) struct RuleSet {
    pub(crate) sla: SlaRule,
    pub(crate) relative: RelativeRule,
    pub(crate) errors: bool,
    pub(crate) fanout: bool,
}

impl RuleSet {
    fn of(config: &JudgeConfig, phase: Phase) -> Self {
        let Some(own) = config.phases.of(phase) else {
            return Self {
                sla: config.sla.clone(),
                relative: config.relative.clone(),
                errors: config.errors.enabled,
                fanout: config.fanout.enabled,
            };
        };
        Self {
            sla: SlaRule {
                enabled: config.sla.enabled && own.sla_limit.is_some(),
                limit: own.sla_limit.unwrap_or(config.sla.limit),
                ..config.sla.clone()
            },
            relative: RelativeRule {
                min_difference: own.min_difference,
                ..config.relative.clone()
            },
            errors: false,
            fanout: false,
        }
    }
}

/// Owner of baselines and alert states; see the module docs.
#[derive(Debug)]
pub struct Judge {
    config: JudgeConfig,
    /// Per [`Phase`]: the rules it is judged by.
    rules: [RuleSet; Phase::ALL.len()],
    sequential: Sequential,
    /// The largest `min_samples` of the enabled rules: the candidate window
    /// stretches back until it holds this many requests.
    min_requests: u64,
    /// Baselines, promotion progress and alerts, by service.
    services: HashMap<String, ServiceState>,
    /// Baselines pinned through the API, oldest first; see the module docs.
    pinned: Vec<BaselineConfig>,
    /// Services an operator acted on since [`Judge::take_acted`]: their
    /// verdicts change at their next evaluation.
    acted: Vec<String>,
    /// Acknowledged alerts; see the module docs.
    acknowledged: HashSet<AckKey>,
}

impl Judge {
    /// A judge with no history.
    pub fn new(config: JudgeConfig) -> Self {
        let sequential = sequential_thresholds(&config);
        let min_requests = [
            (config.sla.enabled, config.sla.min_samples),
            (config.relative.enabled, config.relative.min_samples),
            (config.errors.enabled, config.errors.min_samples),
            (config.fanout.enabled, config.fanout.min_samples),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0);
        let rules = Phase::ALL.map(|phase| RuleSet::of(&config, phase));
        Self {
            config,
            rules,
            sequential,
            min_requests,
            services: HashMap::new(),
            pinned: Vec::new(),
            acted: Vec::new(),
            acknowledged: HashSet::new(),
        }
    }

    /// Pins `version` as the baseline of `service`'s `endpoint` (every
    /// endpoint when `None`); takes effect at the next [`Judge::evaluate`].
    pub fn set_baseline(
        &mut self,
        service: &str,
        endpoint: Option<&str>,
        version: &str,
    ) -> Result<(), ActionError> {
        if service.is_empty() {
            return Err(ActionError::Missing("service"));
        }
        if version.is_empty() {
            return Err(ActionError::Missing("version"));
        }
        // The latest word wins: drop older pins it covers.
        self.pinned.retain(|p| {
            !(p.service == service && (endpoint.is_none() || p.endpoint.as_deref() == endpoint))
        });
        self.pinned.push(BaselineConfig {
            service: service.to_owned(),
            endpoint: endpoint.map(str::to_owned),
            version: version.to_owned(),
        });
        self.acted.push(service.to_owned());
        tracing::info!(
            service,
            endpoint = endpoint.unwrap_or("*"),
            version,
            "baseline set"
        );
        Ok(())
    }

    /// Acknowledges the pending or firing alerts of `candidate` on
    /// `service`'s `endpoint` ([`ALL_ENDPOINTS`]: version-wide) under
    /// `rule`, of `phase` (a phase's alerts are alerts of their own);
    /// returns them.
    pub fn acknowledge(
        &mut self,
        service: &str,
        endpoint: &str,
        candidate: &str,
        phase: Phase,
        rule: Rule,
    ) -> Result<Vec<(&AlertKey, &Judgement)>, ActionError> {
        for (value, field) in [
            (service, "service"),
            (endpoint, "endpoint"),
            (candidate, "candidate"),
        ] {
            if value.is_empty() {
                return Err(ActionError::Missing(field));
            }
        }
        let key = (
            service.to_owned(),
            endpoint.to_owned(),
            candidate.to_owned(),
            phase,
            rule,
        );
        // The field, not `judgements_of`: the borrow must leave
        // `acknowledged` free.
        let mut matching: Vec<(&AlertKey, &Judgement)> = self
            .services
            .get(service)
            .into_iter()
            .flat_map(|s| s.judgements.iter().map(|(k, j)| (k, &**j)))
            .filter(|(k, j)| ack_key(k) == key && j.is_live())
            .collect();
        if matching.is_empty() {
            return Err(ActionError::NoSuchAlert {
                service: key.0,
                endpoint: key.1,
                candidate: key.2,
                phase,
                rule,
            });
        }
        matching.sort_by(|a, b| a.0.cmp(b.0));
        tracing::info!(service, endpoint, candidate, %phase, %rule, "alert acknowledged");
        self.acknowledged.insert(key);
        Ok(matching)
    }

    /// Forgets the verdicts held for a quiet candidate (rolled back, no
    /// traffic since): the operator's word that it may be tried again.
    /// Returns how many judgements were dropped.
    pub fn reset_verdict(&mut self, service: &str, candidate: &str) -> Result<usize, ActionError> {
        if service.is_empty() {
            return Err(ActionError::Missing("service"));
        }
        if candidate.is_empty() {
            return Err(ActionError::Missing("candidate"));
        }
        let dropped = match self.services.get_mut(service) {
            Some(state) => {
                let before = state.judgements.len();
                state
                    .judgements
                    .retain(|k, j| !(k.candidate == candidate && j.quiet_since_ms.is_some()));
                before - state.judgements.len()
            }
            None => 0,
        };
        if dropped == 0 {
            return Err(ActionError::NoSuchVerdict {
                service: service.to_owned(),
                candidate: candidate.to_owned(),
            });
        }
        tracing::info!(service, candidate, dropped, "held verdict reset");
        self.acted.push(service.to_owned());
        Ok(dropped)
    }

    /// Whether the alert `key` is acknowledged.
    pub fn is_acknowledged(&self, key: &AlertKey) -> bool {
        !self.acknowledged.is_empty() && self.acknowledged.contains(&ack_key(key))
    }

    /// The configuration it judges with.
    pub fn config(&self) -> &JudgeConfig {
        &self.config
    }

    /// A judge with `config` instead and no history (no baselines, no
    /// alerts): for judging one verdict on the spot with overridden
    /// thresholds, never for [`Judge::evaluate`].
    pub fn with_config(&self, config: JudgeConfig) -> Self {
        Self::new(config)
    }

    /// How many requests the candidate window stretches back for (the
    /// largest `min_samples` of the enabled rules).
    pub fn min_requests(&self) -> u64 {
        self.min_requests
    }

    /// What a baseline is compared on: the same recent window as its
    /// candidates (so a fleet-wide drift, a daily cycle, moves both sides
    /// alike instead of setting a candidate's last minutes against the
    /// baseline's half hour), stretched back up to the horizon until it
    /// holds [`BASELINE_MIN_REQUESTS`]: a quiet baseline still gives the
    /// tests the sample they need.
    pub fn baseline_window(&self, agg: &Aggregator, series: &Series, now_ms: u64) -> WindowSummary {
        agg.recent(series, now_ms, BASELINE_MIN_REQUESTS.max(self.min_requests))
    }

    /// The baseline of `endpoint` and how it was chosen, after the latest
    /// evaluation.
    pub fn baseline_of(&self, endpoint: &EndpointKey) -> Option<(&str, BaselineSource)> {
        self.baseline_in_state(self.services.get(&endpoint.service), endpoint)
    }

    /// [`Judge::baseline_of`] with `state` as the endpoint's service's.
    fn baseline_in_state<'s>(
        &'s self,
        state: Option<&'s ServiceState>,
        endpoint: &EndpointKey,
    ) -> Option<(&'s str, BaselineSource)> {
        if let Some(pin) = baseline_in(self.pinned.iter().rev(), endpoint) {
            return Some((pin, BaselineSource::Pinned));
        }
        if let Some(configured) = baseline_in(self.config.baselines.iter(), endpoint) {
            return Some((configured, BaselineSource::Configured));
        }
        state?.baselines.get(endpoint).map(|c| {
            let source = if c.promoted_ms.is_some() {
                BaselineSource::Promoted
            } else {
                BaselineSource::Incumbent
            };
            (c.version.as_str(), source)
        })
    }

    /// The baseline of an endpoint after the latest evaluation.
    pub fn baseline(&self, endpoint: &EndpointKey) -> Option<&str> {
        self.baseline_of(endpoint).map(|(v, _)| v)
    }

    /// The e-value thresholds in force.
    pub fn sequential(&self) -> Sequential {
        self.sequential
    }

    /// Every judged (endpoint, candidate, baseline, rule).
    pub fn judgements(&self) -> impl Iterator<Item = (&AlertKey, &Judgement)> {
        self.services
            .values()
            .flat_map(|s| s.judgements.iter().map(|(k, j)| (k, &**j)))
    }

    /// The judgements of `service`.
    pub fn judgements_of<'a>(
        &'a self,
        service: &str,
    ) -> impl Iterator<Item = (&'a AlertKey, &'a Judgement)> + 'a {
        self.services
            .get(service)
            .into_iter()
            .flat_map(|s| s.judgements.iter().map(|(k, j)| (k, &**j)))
    }

    /// Services it holds state for (judgements, baselines, promotion
    /// progress), in no order.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }

    /// The services an operator acted on (a pin, a reset) since the last
    /// call: judged at the next tick whatever their traffic.
    pub fn take_acted(&mut self) -> Vec<String> {
        std::mem::take(&mut self.acted)
    }

    /// The earliest time after `now_ms` at which `service`'s verdicts can
    /// change with no new sample (see [`schedule`]): an alert's hold or
    /// resolve hold ending, one of its series turning quiet
    /// (`no_traffic_resolve`, counted per series: never later than its
    /// version's), reaching the end of its evidence epoch or its idle
    /// timeout, a promotion's `after`. `None`: only at the next slot.
    pub fn wake_ms(&self, agg: &Aggregator, service: &str, now_ms: u64) -> Option<u64> {
        let mut wake: Option<u64> = None;
        let mut at = |t: u64| {
            if t > now_ms {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        };
        if let Some(state) = self.services.get(service) {
            for judgement in state.judgements.values() {
                for alert in &judgement.alerts {
                    if let Some(t) = alert.wake_ms(&self.config.alerts) {
                        at(t);
                    }
                }
            }
            if self.config.promotion.enabled {
                let after_ms = self.config.promotion.after.as_millis() as u64;
                for since in state.candidacy.values() {
                    at(since.saturating_add(after_ms));
                }
            }
        }
        let quiet_ms = self.config.alerts.no_traffic_resolve.as_millis() as u64;
        let epoch_ms = (self.config.sequential.epoch.as_millis() as u64).max(1);
        let idle_ms = agg.config().series_idle_timeout.as_millis() as u64;
        for (_, versions) in agg.service_endpoints(service) {
            for (_, series) in versions.iter() {
                at(series.last_seen_ms.saturating_add(quiet_ms));
                at(series.last_seen_ms.saturating_add(idle_ms));
                let age = now_ms.saturating_sub(series.first_seen_ms);
                at(series.first_seen_ms + (age / epoch_ms + 1) * epoch_ms);
            }
        }
        wake
    }

    /// The services with a state, named for a snapshot to write one by
    /// one ([`Judge::service_state`]).
    pub(crate) fn service_names(&self) -> Vec<String> {
        self.services.keys().cloned().collect()
    }

    /// The state of `service` a snapshot keeps (`None` once it has none).
    pub(crate) fn service_state(&self, service: &str) -> Option<&ServiceState> {
        self.services.get(service)
    }

    /// Takes over the baselines and alerts of `state` (read from a
    /// snapshot). Their times are unix ms, so hold timers simply continue
    /// against the wall clock at the next [`Judge::evaluate`]; every
    /// service it names counts as acted on, so it is judged at the next
    /// tick.
    pub(crate) fn restore(&mut self, state: JudgeStateOwned) {
        // A service left empty while a snapshot was written in slices is
        // in the file with nothing.
        let services: HashMap<String, ServiceState> =
            state.into_iter().filter(|(_, s)| !s.is_empty()).collect();
        self.acted.extend(services.keys().cloned());
        self.services = services;
    }

    /// The pinned or configured baseline of `endpoint`, if any.
    fn fixed_baseline(&self, endpoint: &EndpointKey) -> Option<&str> {
        baseline_in(self.pinned.iter().rev(), endpoint)
            .or_else(|| baseline_in(self.config.baselines.iter(), endpoint))
    }

    /// The baseline `endpoint` is judged against at `now_ms`: pinned or
    /// configured, else promoted, else the incumbent (see the module docs).
    /// Borrowed from the version names unless it is a fixed version without
    /// traffic.
    fn choose_baseline<'v>(
        &self,
        state: &ServiceState,
        agg: &Aggregator,
        endpoint: &EndpointKey,
        versions: &'v Versions,
        times: &ServiceTimes<'_>,
        now_ms: u64,
    ) -> Option<Cow<'v, str>> {
        if let Some(fixed) = self.fixed_baseline(endpoint) {
            return Some(match versions.name(fixed) {
                Some(name) => Cow::Borrowed(name),
                None => Cow::Owned(fixed.to_owned()),
            });
        }
        // Promotion judges the request; its phases follow it.
        let promoted = if endpoint.phase.is_request() {
            state.baselines.get(endpoint)
        } else {
            state.baselines.get(&endpoint.with_phase(Phase::Request))
        };
        if let Some(chosen) = promoted {
            if chosen.promoted_ms.is_some() && versions.contains_key(&chosen.version) {
                return versions.name(&chosen.version).map(Cow::Borrowed);
            }
        }
        // A release is a version of the service: the first on the service
        // (the older name on a tie) is the incumbent on each of its
        // endpoints, so two versions that started together are never each
        // the baseline of one endpoint.
        let first = |v: &str, s: &Series| times.get(v).map_or(s.first_seen_ms, |t| t.first_ms);
        versions
            .iter()
            .filter(|(_, s)| agg.horizon_count(s, now_ms) > 0)
            .min_by(|a, b| {
                first(a.0, a.1)
                    .cmp(&first(b.0, b.1))
                    .then_with(|| version_order(a.0, b.0))
            })
            .map(|(v, _)| Cow::Borrowed(v.as_str()))
    }
}

/// The baseline `entries` give `endpoint`: its own entry, else its
/// service's (the first of each).
fn baseline_in<'a>(
    entries: impl Iterator<Item = &'a BaselineConfig> + Clone,
    endpoint: &EndpointKey,
) -> Option<&'a str> {
    let mut of_service = entries.filter(|b| b.service == endpoint.service);
    of_service
        .clone()
        .find(|b| b.endpoint.as_deref() == Some(endpoint.endpoint.as_str()))
        .or_else(|| of_service.find(|b| b.endpoint.is_none()))
        .map(|b| b.version.as_str())
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AggregateConfig, BaselineConfig};
    use crate::extract::Outcome;
    use crate::extract::Sample;
    use crate::judge::{AlertState, Resolution, Severity, Verdict};
    use crate::testing::{endpoint, lending_incident, request, Rng};

    const T0: u64 = 1_763_658_000_000;

    fn setup(config: JudgeConfig) -> (Aggregator, Judge) {
        let agg = AggregateConfig::default();
        (
            Aggregator::new(agg, vec![100.0], Default::default(), T0),
            Judge::new(config),
        )
    }

    fn active(judge: &Judge) -> Vec<(String, String, String, Rule)> {
        let mut v: Vec<_> = judge
            .judgements()
            .filter(|(_, j)| j.firing().is_some())
            .map(|(k, _)| {
                (
                    k.endpoint.endpoint.clone(),
                    k.candidate.clone(),
                    k.baseline.clone(),
                    k.rule,
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn lending_incident_fires_all_rules_for_v13_on_both_endpoints() {
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        lending_incident(&mut agg, &mut judge, T0);
        let firing = active(&judge);
        for ep in ["/funding-approve", "/risk-score"] {
            for rule in [Rule::Sla, Rule::Relative, Rule::Errors] {
                assert!(
                    firing.contains(&(ep.into(), "v1.3".into(), "v1.2".into(), rule)),
                    "{ep} {rule} missing from {firing:?}"
                );
            }
        }
        assert!(firing.iter().all(|(_, c, _, _)| c == "v1.3"), "{firing:?}");
        assert_eq!(judge.baseline(&endpoint("/risk-score")), Some("v1.2"));
    }

    #[test]
    fn lending_at_its_own_pace_fires_sla_on_the_third_request_and_the_rest_on_the_tenth() {
        // v1.2 every 5 s for half an hour, then v1.3 a minute apart: the
        // incident's pace. The window (5 min) never holds 10 v1.3 requests,
        // so the judge stretches it back until it does.
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let mut v13 = 0u64;
        let mut fired: Vec<(Rule, u64)> = Vec::new();
        for s in 0..3_000u64 {
            let now = T0 + s * 1_000;
            let mut batch = Vec::new();
            if s % 5 == 0 {
                batch.push(request(
                    "/risk-score",
                    "v1.2",
                    85.0 + (s % 34) as f64,
                    Outcome::Ok,
                ));
            }
            if s >= 1_800 && (s - 1_800) % 60 == 0 {
                v13 += 1;
                let outcome = if v13.is_multiple_of(5) {
                    Outcome::Ok
                } else {
                    Outcome::Timeout
                };
                batch.push(request(
                    "/risk-score",
                    "v1.3",
                    700.0 + (v13 * 37 % 120) as f64,
                    outcome,
                ));
            }
            agg.record(&batch, now);
            for t in judge.evaluate(&agg, now) {
                if t.alert().state == AlertState::Firing && t.severity == Severity::Critical {
                    assert_eq!(t.key.candidate, "v1.3");
                    fired.push((t.key.rule, v13));
                }
            }
        }
        fired.sort();
        assert_eq!(
            fired,
            vec![(Rule::Sla, 3), (Rule::Relative, 10), (Rule::Errors, 10)]
        );
    }

    #[test]
    fn one_slow_request_never_fires() {
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let mut t = T0;
        for i in 0..300 {
            let ms = if i == 150 { 9_000.0 } else { 100.0 };
            agg.record(
                &[
                    request("/a", "v1", ms, Outcome::Ok),
                    request("/a", "v2", 100.0, Outcome::Ok),
                ],
                t,
            );
            t += 50;
            assert!(judge.evaluate(&agg, t).is_empty() || active(&judge).is_empty());
        }
        // A new version whose very first request is slow.
        agg.record(&[request("/a", "v3", 9_000.0, Outcome::Timeout)], t);
        for _ in 0..10 {
            t += 1_000;
            judge.evaluate(&agg, t);
        }
        assert!(active(&judge).is_empty(), "{:?}", active(&judge));
    }

    #[test]
    fn same_distribution_never_fires_over_thousands_of_requests() {
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let mut rng = Rng(7);
        let mut t = T0;
        let mut fired = 0;
        for _ in 0..6_000 {
            // Lognormal, median 60 ms, sigma 0.4 (p95 about 116 ms, inside the
            // default SLA), 1% errors, the same for both versions.
            let draw = |rng: &mut Rng| {
                let u1 = rng.next_f64().max(1e-12);
                let u2 = rng.next_f64();
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                let outcome = if rng.next_f64() < 0.01 {
                    Outcome::Error
                } else {
                    Outcome::Ok
                };
                (60.0 * (0.4 * z).exp(), outcome)
            };
            let (a, oa) = draw(&mut rng);
            let (b, ob) = draw(&mut rng);
            agg.record(
                &[
                    request("/predict", "v1", a, oa),
                    request("/predict", "v2", b, ob),
                ],
                t,
            );
            t += 20;
            if t.is_multiple_of(1_000) {
                fired += judge
                    .evaluate(&agg, t)
                    .iter()
                    .filter(|tr| tr.alert().state == AlertState::Firing)
                    .count();
            }
        }
        assert_eq!(fired, 0, "{:?}", active(&judge));
    }

    #[test]
    fn configured_baseline_wins_and_endpoint_entry_beats_service_entry() {
        let config = JudgeConfig {
            baselines: vec![
                BaselineConfig {
                    service: "lending-api".into(),
                    endpoint: None,
                    version: "v1.0".into(),
                },
                BaselineConfig {
                    service: "lending-api".into(),
                    endpoint: Some("/b".into()),
                    version: "v0.9".into(),
                },
            ],
            ..JudgeConfig::default()
        };
        let (mut agg, mut judge) = setup(config);
        agg.record(
            &[
                request("/a", "v2", 100.0, Outcome::Ok),
                request("/b", "v2", 100.0, Outcome::Ok),
            ],
            T0,
        );
        judge.evaluate(&agg, T0);
        assert_eq!(judge.baseline(&endpoint("/a")), Some("v1.0"));
        assert_eq!(judge.baseline(&endpoint("/b")), Some("v0.9"));
        // Configured baselines without traffic still name the alerts.
        let mut compared: Vec<_> = judge
            .judgements()
            .filter(|(k, _)| k.rule == Rule::Relative && !k.is_version_wide())
            .map(|(k, _)| (k.endpoint.endpoint.as_str(), k.baseline.as_str()))
            .collect();
        compared.sort();
        assert_eq!(compared, [("/a", "v1.0"), ("/b", "v0.9")]);
    }

    #[test]
    fn borrowed_keys_find_their_judgements() {
        let key = AlertKey {
            endpoint: EndpointKey {
                service: "lending-api".into(),
                endpoint: "/a".into(),
                dims: vec!["eu".into(), String::new()],
                phase: crate::phase::Phase::Request,
                input: None,
            },
            candidate: "v2".into(),
            baseline: "v1".into(),
            rule: Rule::Errors,
        };
        let mut map: HashMap<AlertKey, u8> = HashMap::new();
        map.insert(key.clone(), 1);
        let borrowed = KeyRef::of(&key);
        assert_eq!(map.get(&borrowed), Some(&1));
        let owned_baseline = KeyRef {
            baseline: Cow::Owned("v1".into()),
            ..borrowed.clone()
        };
        assert_eq!(map.get(&owned_baseline), Some(&1));
        assert_eq!(owned_baseline.to_key(), key);
        let other = KeyRef {
            candidate: "v3",
            ..borrowed.clone()
        };
        assert_eq!(map.get(&other), None);
    }

    #[test]
    fn a_canary_with_more_traffic_does_not_take_over_while_alerting() {
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let mut t = T0;
        for _ in 0..20 {
            agg.record(&[request("/a", "v1", 100.0, Outcome::Ok)], t);
            t += 100;
        }
        judge.evaluate(&agg, t);
        // v2 floods in, slow, long past a window.
        for _ in 0..2_000 {
            agg.record(&[request("/a", "v2", 900.0, Outcome::Timeout)], t);
            t += 200;
            judge.evaluate(&agg, t);
        }
        assert_eq!(judge.baseline(&endpoint("/a")), Some("v1"));
        assert!(active(&judge)
            .iter()
            .any(|(_, c, b, r)| c == "v2" && b == "v1" && *r == Rule::Relative));
    }

    #[test]
    fn alerts_of_expired_series_resolve() {
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let mut t = T0;
        for _ in 0..10 {
            agg.record(&[request("/a", "v1", 900.0, Outcome::Ok)], t);
            t += 1_000;
            judge.evaluate(&agg, t);
        }
        assert_eq!(active(&judge).len(), 1);
        t += 31 * 60 * 1_000;
        agg.expire(t);
        let transitions = judge.evaluate(&agg, t);
        // The sla alert of both severities.
        assert_eq!(transitions.len(), 2, "{transitions:?}");
        for tr in &transitions {
            assert_eq!(tr.alert().state, AlertState::Resolved);
            assert_eq!(tr.alert().resolution, Some(Resolution::Retired));
        }
        assert_eq!(judge.judgements().count(), 0);
    }

    #[test]
    fn a_set_baseline_replaces_the_sticky_one() {
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let mut t = T0;
        for _ in 0..20 {
            agg.record(
                &[
                    request("/a", "v1", 100.0, Outcome::Ok),
                    request("/b", "v1", 100.0, Outcome::Ok),
                ],
                t,
            );
            t += 100;
        }
        judge.evaluate(&agg, t);
        agg.record(
            &[
                request("/a", "v2", 100.0, Outcome::Ok),
                request("/b", "v2", 100.0, Outcome::Ok),
            ],
            t,
        );
        judge.evaluate(&agg, t);
        assert_eq!(judge.baseline(&endpoint("/a")), Some("v1"));
        // Service-wide.
        judge.set_baseline("lending-api", None, "v2").unwrap();
        judge.evaluate(&agg, t);
        assert_eq!(judge.baseline(&endpoint("/a")), Some("v2"));
        assert_eq!(judge.baseline(&endpoint("/b")), Some("v2"));
        // An endpoint pin beats the service pin...
        judge.set_baseline("lending-api", Some("/b"), "v1").unwrap();
        judge.evaluate(&agg, t);
        assert_eq!(judge.baseline(&endpoint("/a")), Some("v2"));
        assert_eq!(judge.baseline(&endpoint("/b")), Some("v1"));
        // ...until a newer service-wide pin replaces it.
        judge.set_baseline("lending-api", None, "v1").unwrap();
        judge.evaluate(&agg, t);
        assert_eq!(judge.baseline(&endpoint("/a")), Some("v1"));
        assert_eq!(judge.baseline(&endpoint("/b")), Some("v1"));
        // Pins beat the configuration, and other services are untouched.
        judge.config.baselines.push(BaselineConfig {
            service: "lending-api".into(),
            endpoint: Some("/a".into()),
            version: "v0".into(),
        });
        judge.evaluate(&agg, t);
        assert_eq!(judge.baseline(&endpoint("/a")), Some("v1"));
        assert_eq!(
            judge.set_baseline("", None, "v1"),
            Err(ActionError::Missing("service"))
        );
        assert_eq!(
            judge.set_baseline("lending-api", None, ""),
            Err(ActionError::Missing("version"))
        );
    }

    #[test]
    fn an_acknowledgement_holds_while_the_alert_fires() {
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let mut t = T0;
        assert!(matches!(
            judge.acknowledge("lending-api", "/a", "v1", Phase::Request, Rule::Sla),
            Err(ActionError::NoSuchAlert { .. })
        ));
        for _ in 0..10 {
            agg.record(&[request("/a", "v1", 900.0, Outcome::Ok)], t);
            t += 1_000;
            judge.evaluate(&agg, t);
        }
        assert_eq!(active(&judge).len(), 1);
        let key = judge
            .judgements()
            .find(|(k, _)| k.rule == Rule::Sla)
            .unwrap()
            .0
            .clone();
        assert!(!judge.is_acknowledged(&key));
        assert_eq!(
            judge.acknowledge("lending-api", "", "v1", Phase::Request, Rule::Sla),
            Err(ActionError::Missing("endpoint"))
        );
        assert!(matches!(
            judge.acknowledge("lending-api", "/a", "v2", Phase::Request, Rule::Sla),
            Err(ActionError::NoSuchAlert { .. })
        ));
        let acked = judge
            .acknowledge("lending-api", "/a", "v1", Phase::Request, Rule::Sla)
            .unwrap();
        assert_eq!(acked.len(), 1);
        assert!(judge.is_acknowledged(&key));
        // Still firing: still acknowledged.
        agg.record(&[request("/a", "v1", 900.0, Outcome::Ok)], t);
        judge.evaluate(&agg, t + 1_000);
        assert!(judge.is_acknowledged(&key));
        // Resolved (the series expired): the mark goes with it.
        t += 31 * 60 * 1_000;
        agg.expire(t);
        judge.evaluate(&agg, t);
        assert!(!judge.is_acknowledged(&key));
    }

    /// `n` requests of `version` on `path`, each `ms` long, at event times
    /// spread over `from..to`.
    fn spread(path: &str, version: &str, ms: f64, n: u64, from: u64, to: u64) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                let mut s = request(path, version, ms + (i % 7) as f64, Outcome::Ok);
                s.time_ms = from + (to - from) * i / n.max(1);
                s
            })
            .collect()
    }

    /// One generative request of `version` at `t`: its end to end and
    /// its phases, `tokens` output tokens at `tpot_ms` each.
    fn generation(
        version: &str,
        tokens: f64,
        tpot_ms: f64,
        queue_ms: f64,
        i: u64,
        t: u64,
    ) -> Vec<Sample> {
        let jitter = (i % 7) as f64;
        let ttft = 200.0 + jitter;
        let tpot = tpot_ms + jitter / 10.0;
        let e2e = queue_ms + ttft + tpot * (tokens - 1.0);
        [
            (Phase::Request, e2e),
            (Phase::Queue, queue_ms + jitter),
            (Phase::FirstToken, ttft),
            (Phase::PerOutputToken, tpot),
        ]
        .map(|(phase, ms)| {
            Sample::request(
                endpoint("/chat").with_phase(phase),
                version,
                std::time::Duration::from_secs_f64(ms / 1e3),
                Outcome::Ok,
                t,
            )
        })
        .to_vec()
    }

    /// Which phases fire which rules for `version`.
    fn firing_phases(judge: &Judge, version: &str) -> Vec<(Phase, Rule)> {
        let mut v: Vec<_> = judge
            .judgements()
            .filter(|(k, j)| k.candidate == version && j.firing().is_some() && !k.is_version_wide())
            .map(|(k, _)| (k.endpoint.phase, k.rule))
            .collect();
        v.sort();
        v
    }

    /// A chat service judged by `config` (its SLA raised to 30 s: answers
    /// take seconds): baseline `m1` (100 tokens at 20 ms, 50 ms queued)
    /// alone for 300 requests, then 300 rounds of `m1` beside `candidates`
    /// (version, tokens, ms per token, ms queued), judged every round.
    fn chat(mut config: JudgeConfig, candidates: &[(&str, f64, f64, f64)]) -> Judge {
        config.sla.limit = std::time::Duration::from_secs(30);
        let (mut agg, mut judge) = setup(config);
        let mut t = T0;
        for i in 0..300 {
            agg.record(&generation("m1", 100.0, 20.0, 50.0, i, t), t);
            t += 100;
        }
        judge.evaluate(&agg, t);
        for i in 0..300 {
            let mut batch = generation("m1", 100.0, 20.0, 50.0, i, t);
            for (version, tokens, tpot, queue) in candidates {
                batch.extend(generation(version, *tokens, *tpot, *queue, i, t));
            }
            agg.record(&batch, t);
            t += 100;
            judge.evaluate(&agg, t);
        }
        judge
    }

    /// `version`'s request `relative` judgement on the chat endpoint.
    fn request_relative<'j>(judge: &'j Judge, version: &str) -> &'j Judgement {
        judge
            .judgements()
            .find(|(k, _)| {
                k.candidate == version
                    && k.endpoint == endpoint("/chat")
                    && k.rule == Rule::Relative
            })
            .map(|(_, j)| j)
            .unwrap()
    }

    #[test]
    fn a_phase_alert_is_acknowledged_on_its_own() {
        // m2 decodes 1.6x slower: its request and its per-token relative
        // alerts fire, two alerts an operator acknowledges one by one.
        let mut judge = chat(JudgeConfig::default(), &[("m2", 100.0, 32.0, 50.0)]);
        let key = |phase: Phase| {
            judge
                .judgements()
                .find(|(k, _)| {
                    k.candidate == "m2"
                        && k.rule == Rule::Relative
                        && k.endpoint == endpoint("/chat").with_phase(phase)
                })
                .unwrap()
                .0
                .clone()
        };
        let (request_key, token_key) = (key(Phase::Request), key(Phase::PerOutputToken));
        let acked = judge
            .acknowledge("lending-api", "/chat", "m2", Phase::Request, Rule::Relative)
            .unwrap();
        assert_eq!(acked.len(), 1);
        assert!(judge.is_acknowledged(&request_key));
        assert!(!judge.is_acknowledged(&token_key));
        judge
            .acknowledge(
                "lending-api",
                "/chat",
                "m2",
                Phase::PerOutputToken,
                Rule::Relative,
            )
            .unwrap();
        assert!(judge.is_acknowledged(&token_key));
        assert!(matches!(
            judge.acknowledge("lending-api", "/chat", "m2", Phase::Queue, Rule::Relative),
            Err(ActionError::NoSuchAlert {
                phase: Phase::Queue,
                ..
            })
        ));
    }

    #[test]
    fn each_phase_is_judged_against_the_baselines_same_phase() {
        // m2 decodes 1.6x slower; m3 answers 1.8x longer at the same speed;
        // m4 waits in the queue 4x longer (its server is short of capacity).
        let judge = chat(
            JudgeConfig::default(),
            &[
                ("m2", 100.0, 32.0, 50.0),
                ("m3", 180.0, 20.0, 50.0),
                ("m4", 100.0, 20.0, 200.0),
            ],
        );
        assert_eq!(judge.baseline(&endpoint("/chat")), Some("m1"));
        for phase in Phase::ALL {
            assert_eq!(
                judge.baseline(&endpoint("/chat").with_phase(phase)),
                Some("m1"),
                "{phase}"
            );
        }
        assert_eq!(
            firing_phases(&judge, "m2"),
            [
                (Phase::Request, Rule::Relative),
                (Phase::PerOutputToken, Rule::Relative)
            ]
        );
        assert_eq!(
            firing_phases(&judge, "m3"),
            [(Phase::Request, Rule::Relative)]
        );
        // 150 ms more in the queue is 7% of an answer: only its phase
        // shows it.
        assert_eq!(
            firing_phases(&judge, "m4"),
            [(Phase::Queue, Rule::Relative)]
        );
        assert!(firing_phases(&judge, "m1").is_empty());
        // The phase is named in the evidence.
        let (_, decode) = judge
            .judgements()
            .find(|(k, _)| {
                k.candidate == "m2"
                    && k.endpoint.phase == Phase::PerOutputToken
                    && k.rule == Rule::Relative
            })
            .unwrap();
        let detail = &decode.result.evidence.detail;
        assert!(detail.starts_with("time per output token: "), "{detail}");
        // A verbose model is told from a slow one in the request's evidence.
        let request = |version| &request_relative(&judge, version).result.evidence.detail;
        let verbose = request("m3");
        assert!(verbose.contains("verbose, not slower"), "{verbose}");
        // 1.72x end to end (the first token included) at 1.00x per token.
        assert!(verbose.contains("answers about 1.7x longer"), "{verbose}");
        let slow = request("m2");
        assert!(!slow.contains("verbose"), "{slow}");
        // No errors or fanout rule on a phase: a phase's requests are the
        // request's.
        assert!(judge
            .judgements()
            .all(|(k, _)| k.endpoint.phase.is_request()
                || !matches!(k.rule, Rule::Errors | Rule::Fanout)));
    }

    #[test]
    fn a_verbose_model_only_warns_when_the_policy_says_so() {
        let mut config = JudgeConfig::default();
        config.phases.verbose = crate::config::VerbosePolicy::Warn;
        let judge = chat(
            config,
            &[("m2", 100.0, 32.0, 50.0), ("m3", 180.0, 20.0, 50.0)],
        );
        let request = |version| {
            let j = request_relative(&judge, version);
            Severity::ALL.map(|s| j.alert(s).state == AlertState::Firing)
        };
        // [warning, critical]: the verbose one warns, the slow one pages.
        assert_eq!(request("m3"), [true, false]);
        assert_eq!(request("m2"), [true, true]);
    }

    #[test]
    fn a_phases_own_limit_is_held_when_set() {
        let mut config = JudgeConfig::default();
        config.sla.limit = std::time::Duration::from_secs(30);
        config.phases.first_token.sla_limit = Some(std::time::Duration::from_millis(150));
        let (mut agg, mut judge) = setup(config);
        let mut t = T0;
        for i in 0..100 {
            agg.record(&generation("m1", 50.0, 20.0, 10.0, i, t), t);
            t += 100;
            judge.evaluate(&agg, t);
        }
        // Every first token takes 200 ms or more: over its 150 ms limit.
        assert!(firing_phases(&judge, "m1").contains(&(Phase::FirstToken, Rule::Sla)));
        assert!(!firing_phases(&judge, "m1")
            .iter()
            .any(|(p, r)| *r == Rule::Sla && *p != Phase::FirstToken));
    }

    /// Time to the first token of a prompt of `tokens` on a model
    /// `slower` times the baseline's, ms: prefill by band (the same in
    /// every band for the same model), jittered.
    fn prefill_ms(tokens: u64, slower: f64, i: u64) -> f64 {
        let band = crate::phase::InputBand::of(tokens as f64).unwrap();
        let ms = match band {
            crate::phase::InputBand::Under256 => 100.0,
            crate::phase::InputBand::To1k => 250.0,
            crate::phase::InputBand::To4k => 700.0,
            crate::phase::InputBand::To16k => 2000.0,
            crate::phase::InputBand::From16k => 5000.0,
        };
        ms * slower * (1.0 + (i % 7) as f64 / 50.0)
    }

    /// Two chat endpoints' first tokens: baseline `m1` alone for 300
    /// requests an endpoint, then 300 rounds of `m1` beside `m2`, whose
    /// prompts are `longer` times `m1`'s and whose prefill is `slower`.
    /// `banded`: the spans carry their input size (else all sizes mix, as
    /// before input bands).
    fn prefill(banded: bool, longer: u64, slower: f64) -> Judge {
        let mut config = JudgeConfig::default();
        config.sla.limit = std::time::Duration::from_secs(30);
        let (mut agg, mut judge) = setup(config);
        let prompts = [100, 200, 400, 800, 1500];
        let first_token = |path: &str, version: &str, tokens: u64, slower: f64, i, t| {
            let mut key = endpoint(path).with_phase(Phase::FirstToken);
            key.input = banded
                .then(|| crate::phase::InputBand::of(tokens as f64))
                .flatten();
            let ms = prefill_ms(tokens, slower, i);
            Sample::request(
                key,
                version,
                std::time::Duration::from_secs_f64(ms / 1e3),
                Outcome::Ok,
                t,
            )
        };
        let mut t = T0;
        for i in 0..300 {
            let tokens = prompts[i as usize % prompts.len()];
            let batch = ["/chat", "/complete"].map(|p| first_token(p, "m1", tokens, 1.0, i, t));
            agg.record(&batch, t);
            t += 100;
        }
        judge.evaluate(&agg, t);
        for i in 0..300 {
            let tokens = prompts[i as usize % prompts.len()];
            let mut batch = Vec::new();
            for path in ["/chat", "/complete"] {
                batch.push(first_token(path, "m1", tokens, 1.0, i, t));
                batch.push(first_token(path, "m2", tokens * longer, slower, i, t));
            }
            agg.record(&batch, t);
            t += 100;
            judge.evaluate(&agg, t);
        }
        judge
    }

    /// `m2`'s first-token `relative` alerts, [warning, critical] firing,
    /// per endpoint (`*` version-wide), and the evidence of `/chat`'s.
    fn prefill_alerts(judge: &Judge) -> (Vec<(String, [bool; 2])>, String) {
        let mut alerts = Vec::new();
        let mut detail = String::new();
        for (k, j) in judge.judgements() {
            if k.candidate != "m2" || k.rule != Rule::Relative {
                continue;
            }
            assert_eq!(k.endpoint.phase, Phase::FirstToken);
            assert_eq!(k.endpoint.input, None, "an alert names no band");
            let firing = Severity::ALL.map(|s| j.alert(s).state == AlertState::Firing);
            alerts.push((k.endpoint.endpoint.clone(), firing));
            if k.endpoint.endpoint == "/chat" {
                detail = j.result.evidence.detail.clone();
            }
        }
        alerts.sort();
        (alerts, detail)
    }

    #[test]
    fn longer_prompts_at_the_same_prefill_speed_are_not_a_first_token_regression() {
        let quiet = |endpoint: &str| (endpoint.to_owned(), [false, false]);
        // m2's prompts are 3x m1's, each band as fast: read per band, it
        // is not slower, on either endpoint or version-wide.
        let (alerts, detail) = prefill_alerts(&prefill(true, 3, 1.0));
        assert_eq!(alerts, [quiet("*"), quiet("/chat"), quiet("/complete")]);
        assert!(
            detail.starts_with("time to first token: ")
                && detail.contains("compared within input-size bands"),
            "{detail}"
        );
        // The same traffic without input sizes (as before bands): its
        // longer prompts are blamed on it.
        let (unbanded, _) = prefill_alerts(&prefill(false, 3, 1.0));
        let paged = |endpoint: &str| (endpoint.to_owned(), [true, true]);
        assert_eq!(unbanded, [paged("*"), paged("/chat"), paged("/complete")]);
    }

    #[test]
    fn a_slower_prefill_within_bands_pages_whatever_the_prompt_mix() {
        let paged = |endpoint: &str| (endpoint.to_owned(), [true, true]);
        for longer in [1, 3] {
            let (alerts, detail) = prefill_alerts(&prefill(true, longer, 1.5));
            assert_eq!(
                alerts,
                [paged("*"), paged("/chat"), paged("/complete")],
                "{longer}x prompts"
            );
            // 1.5x in each band both sides have.
            assert!(
                detail.contains("compared within input-size bands: 1.5"),
                "{detail}"
            );
        }
    }

    #[test]
    fn version_names_order_as_releases_do() {
        let mut v = ["v1.10", "v1.9", "v1.2", "v1.3", "v2", "v1.2.1", "v01.2"];
        v.sort_by(|a, b| version_order(a, b));
        assert_eq!(
            v,
            ["v1.2", "v01.2", "v1.2.1", "v1.3", "v1.9", "v1.10", "v2"]
        );
    }

    #[test]
    fn a_backlog_in_one_batch_keeps_the_version_that_came_first_as_baseline() {
        // Ten minutes of traffic arrive at once (a Collector's retry queue
        // after an outage), newest first and the broken version carrying
        // most of it: the records' own times still say v1.2 came first.
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let now = T0 + 600_000;
        let mut batch = spread("/a", "v1.3", 800.0, 300, T0 + 300_000, now);
        batch.extend(spread("/a", "v1.2", 100.0, 100, T0, now));
        batch.reverse();
        agg.record(&batch, now);
        judge.evaluate(&agg, now);
        assert_eq!(
            judge.baseline_of(&endpoint("/a")),
            Some(("v1.2", BaselineSource::Incumbent))
        );
        // Two versions first seen in the same millisecond: the older name.
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        agg.record(
            &[
                request("/b", "v1.3", 100.0, Outcome::Ok),
                request("/b", "v1.2", 100.0, Outcome::Ok),
            ],
            T0,
        );
        judge.evaluate(&agg, T0);
        assert_eq!(judge.baseline(&endpoint("/b")), Some("v1.2"));
    }

    #[test]
    fn versions_that_started_together_have_one_incumbent_on_every_endpoint() {
        // An A/A start: v1 and v2 from the same moment on two endpoints,
        // v2's first request on /embed a millisecond before v1's there, v1
        // first on the service (/predict). One release is the baseline on
        // both, so v2 is one candidate judged across both endpoints.
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let now = T0 + 60_000;
        let mut batch = spread("/predict", "v1", 60.0, 400, T0, now);
        batch.extend(spread("/predict", "v2", 60.0, 400, T0 + 5, now));
        batch.extend(spread("/embed", "v1", 60.0, 400, T0 + 3, now));
        batch.extend(spread("/embed", "v2", 60.0, 400, T0 + 2, now));
        agg.record(&batch, now);
        judge.evaluate(&agg, now);
        for path in ["/predict", "/embed"] {
            assert_eq!(
                judge.baseline_of(&endpoint(path)),
                Some(("v1", BaselineSource::Incumbent)),
                "{path}"
            );
        }
        assert!(
            judge
                .judgements()
                .any(|(k, _)| k.endpoint.endpoint == ALL_ENDPOINTS && k.candidate == "v2"),
            "v2 judged version-wide"
        );
        assert!(judge.judgements().all(|(k, _)| k.candidate == "v2"));
        // The same millisecond on the service, each first on one endpoint
        // (the tie a replay at thousands of requests a second makes): the
        // older name on both, not each its own endpoint's first.
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let mut batch = spread("/predict", "v1", 60.0, 400, T0, now);
        batch.extend(spread("/predict", "v2", 60.0, 400, T0 + 5, now));
        batch.extend(spread("/embed", "v1", 60.0, 400, T0 + 3, now));
        batch.extend(spread("/embed", "v2", 60.0, 400, T0, now));
        agg.record(&batch, now);
        judge.evaluate(&agg, now);
        for path in ["/predict", "/embed"] {
            assert_eq!(judge.baseline(&endpoint(path)), Some("v1"), "{path}");
        }
    }

    #[test]
    fn volume_never_makes_a_baseline_and_a_broken_one_is_not_trusted() {
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let mut t = T0;
        // The real baseline, healthy.
        for _ in 0..60 {
            agg.record(&vec![request("/a", "v1.2", 100.0, Outcome::Ok); 5], t);
            t += 1_000;
            judge.evaluate(&agg, t);
        }
        // A version name nobody released, ten times the traffic, 94% timeouts.
        for i in 0..60 {
            let outcome = if i % 17 == 0 {
                Outcome::Ok
            } else {
                Outcome::Timeout
            };
            agg.record(&vec![request("/a", "v0-junk", 100.0, outcome); 50], t);
            agg.record(&vec![request("/a", "v1.2", 100.0, Outcome::Ok); 5], t);
            t += 1_000;
            judge.evaluate(&agg, t);
        }
        assert_eq!(judge.baseline(&endpoint("/a")), Some("v1.2"));
        assert!(active(&judge)
            .iter()
            .any(|(_, c, b, r)| c == "v0-junk" && b == "v1.2" && *r == Rule::Errors));
        // The healthy baseline is held to the absolute rules, but keeps no
        // judgement until it breaches one (a judgement a series would cost
        // more than the series).
        assert!(judge.judgements().all(|(k, _)| k.candidate != "v1.2"));

        // The other way round: the broken version was there first. It is
        // the baseline, it breaches the error ceiling itself, so a real
        // candidate's 80% timeouts are not compared with it ("80% vs 94%":
        // pass) but held to the ceiling too.
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let mut t = T0;
        for i in 0..120 {
            let junk = if i % 17 == 0 {
                Outcome::Ok
            } else {
                Outcome::Timeout
            };
            let real = if i % 5 == 0 {
                Outcome::Ok
            } else {
                Outcome::Timeout
            };
            agg.record(&vec![request("/a", "v0-junk", 100.0, junk); 20], t);
            if i >= 60 {
                agg.record(&vec![request("/a", "v1.3", 100.0, real); 5], t);
            }
            t += 1_000;
            judge.evaluate(&agg, t);
        }
        assert_eq!(judge.baseline(&endpoint("/a")), Some("v0-junk"));
        let firing = active(&judge);
        assert!(
            firing.contains(&("/a".into(), "v0-junk".into(), String::new(), Rule::Errors)),
            "{firing:?}"
        );
        assert!(
            firing.contains(&("/a".into(), "v1.3".into(), "v0-junk".into(), Rule::Errors)),
            "{firing:?}"
        );
        let relative = judge
            .judgements()
            .find(|(k, _)| k.candidate == "v1.3" && k.rule == Rule::Relative)
            .unwrap()
            .1;
        assert!(
            relative.result.evidence.detail.contains("not trusted"),
            "{}",
            relative.result.evidence.detail
        );
        assert_eq!(relative.verdict(), Verdict::Inconclusive);
    }

    #[test]
    fn a_rolled_back_candidate_stops_paging_but_its_verdict_holds() {
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let mut t = T0;
        for _ in 0..30 {
            agg.record(&vec![request("/a", "v1.2", 100.0, Outcome::Ok); 5], t);
            t += 1_000;
            judge.evaluate(&agg, t);
        }
        for _ in 0..30 {
            agg.record(&vec![request("/a", "v1.2", 100.0, Outcome::Ok); 5], t);
            agg.record(&vec![request("/a", "v1.3", 800.0, Outcome::Timeout); 2], t);
            t += 1_000;
            judge.evaluate(&agg, t);
        }
        assert!(active(&judge).iter().any(|(_, c, _, _)| c == "v1.3"));
        // Its last request was recorded a tick ago.
        let last_request = t - 1_000;
        let mut resolved = Vec::new();
        // Only v1.2 from now on: three minutes later v1.3's alerts resolve.
        for _ in 0..200 {
            agg.record(&vec![request("/a", "v1.2", 100.0, Outcome::Ok); 5], t);
            t += 1_000;
            resolved.extend(
                judge
                    .evaluate(&agg, t)
                    .into_iter()
                    .filter(|tr| tr.alert().state == AlertState::Resolved),
            );
        }
        assert!(!active(&judge).iter().any(|(_, c, _, _)| c == "v1.3"));
        assert!(!resolved.is_empty());
        for tr in &resolved {
            assert_eq!(tr.key.candidate, "v1.3");
            assert_eq!(tr.alert().resolution, Some(Resolution::NoTraffic));
            let after = tr.alert().since_ms - last_request;
            assert_eq!(after, 180_000, "judge.alerts.no_traffic_resolve after it");
        }
        // The verdict holds: a regression on "no data" stays one.
        let held: Vec<Verdict> = judge
            .judgements()
            .filter(|(k, _)| k.candidate == "v1.3" && k.rule == Rule::Sla)
            .map(|(_, j)| j.verdict())
            .collect();
        assert_eq!(held, vec![Verdict::Regression(Severity::Critical)]);
        assert!(judge
            .judgements()
            .filter(|(k, _)| k.candidate == "v1.3")
            .all(|(_, j)| j.quiet_since_ms.is_some()));
        // Until an operator says otherwise.
        assert!(judge.reset_verdict("lending-api", "v1.3").unwrap() > 0);
        assert!(judge.judgements().all(|(k, _)| k.candidate != "v1.3"));
        assert!(matches!(
            judge.reset_verdict("lending-api", "v1.3"),
            Err(ActionError::NoSuchVerdict { .. })
        ));
    }

    #[test]
    fn slow_on_both_endpoints_is_judged_the_version_not_an_endpoint() {
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let mut t = T0;
        for _ in 0..30 {
            for path in ["/risk-score", "/funding-approve"] {
                agg.record(&vec![request(path, "v1.2", 100.0, Outcome::Ok); 5], t);
            }
            t += 1_000;
            judge.evaluate(&agg, t);
        }
        for _ in 0..20 {
            for path in ["/risk-score", "/funding-approve"] {
                agg.record(&vec![request(path, "v1.2", 100.0, Outcome::Ok); 5], t);
                agg.record(&vec![request(path, "v1.3", 760.0, Outcome::Ok); 2], t);
            }
            t += 1_000;
            judge.evaluate(&agg, t);
        }
        let all = AlertKey {
            endpoint: EndpointKey {
                service: "lending-api".into(),
                endpoint: ALL_ENDPOINTS.into(),
                dims: Vec::new(),
                phase: crate::phase::Phase::Request,
                input: None,
            },
            candidate: "v1.3".into(),
            baseline: "v1.2".into(),
            rule: Rule::Relative,
        };
        let j = judge.judgements().find(|(k, _)| **k == all).unwrap().1;
        assert_eq!(j.firing(), Some(Severity::Critical));
        assert!(
            j.result
                .evidence
                .detail
                .contains("on 2 of 2 endpoints: the version, not an endpoint"),
            "{}",
            j.result.evidence.detail
        );
        // A version serving one endpoint has no version-wide judgement.
        assert!(judge
            .judgements()
            .all(|(k, _)| !(k.is_version_wide() && k.candidate == "v1.2")));
    }

    #[test]
    fn a_candidate_that_passed_long_enough_with_most_traffic_is_promoted() {
        let mut config = JudgeConfig::default();
        config.promotion.after = std::time::Duration::from_secs(120);
        let (mut agg, mut judge) = setup(config);
        let mut t = T0;
        let draw = |i: u64| 60.0 + ((i * 7919) % 61) as f64;
        for i in 0..60 {
            agg.record(&vec![request("/a", "v1", draw(i), Outcome::Ok); 20], t);
            t += 1_000;
            judge.evaluate(&agg, t);
        }
        // v2 takes most of the traffic, as fast: promoted after it has passed
        // (with power) for two minutes.
        let mut promoted_at = None;
        for i in 0..600 {
            agg.record(&vec![request("/a", "v1", draw(i), Outcome::Ok); 5], t);
            agg.record(&vec![request("/a", "v2", draw(i + 3), Outcome::Ok); 20], t);
            t += 1_000;
            judge.evaluate(&agg, t);
            if promoted_at.is_none() && judge.baseline(&endpoint("/a")) == Some("v2") {
                promoted_at = Some(i);
            }
        }
        let at = promoted_at.expect("v2 promoted");
        assert!(at >= 120, "not before judge.promotion.after: {at}");
        assert_eq!(
            judge.baseline_of(&endpoint("/a")),
            Some(("v2", BaselineSource::Promoted))
        );

        // A slow one is never promoted, whatever its traffic.
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let mut t = T0;
        for i in 0..2_000 {
            agg.record(&vec![request("/a", "v1", draw(i), Outcome::Ok); 5], t);
            agg.record(
                &vec![request("/a", "v2", 3.0 * draw(i), Outcome::Ok); 50],
                t,
            );
            t += 1_000;
            judge.evaluate(&agg, t);
        }
        assert_eq!(judge.baseline(&endpoint("/a")), Some("v1"));
    }
}
