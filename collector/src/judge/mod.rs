//! Judge: every endpoint's versions -> rule results -> alert transitions.
//!
//! Per endpoint, one version is the baseline: the configured one, else the
//! version that carried most traffic over the baseline horizon and has been
//! seen for at least a window, and that is not itself under an alert. The
//! choice is sticky: it moves only when another version carries clearly more
//! traffic (twice as much), so a canary never becomes its own baseline. Every
//! other version is a candidate, judged by `relative` and `errors` against
//! the baseline; `sla` judges every version, baseline included, since it
//! needs no baseline at all.
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
//! The judge owns its alert states and is driven by one task with `now`
//! passed in; it never reads the clock and never touches the network.

pub mod alert;
pub mod rules;
pub mod stats;

use std::borrow::Cow;

use hashbrown::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregator, Versions, WindowSummary};
use crate::config::{BaselineConfig, JudgeConfig};
use crate::extract::EndpointKey;
pub use alert::{AlertMachine, AlertState};
pub use rules::{Baseline, Candidate, Condition, Epoch, Evidence, Rule, RuleResult, Sequential};

/// A version moves an incumbent baseline only with this many times its
/// traffic over the horizon.
const BASELINE_SWITCH_FACTOR: u64 = 2;

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
    }
}

/// The version with most traffic; on a tie, the longest known.
/// Items are (version, requests over the horizon, first seen).
fn most_traffic<'t, 'v: 't>(
    versions: impl Iterator<Item = &'t (&'v str, u64, u64)>,
) -> Option<(&'v str, u64, u64)> {
    versions
        .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
        .copied()
}

/// Identity of one alert.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlertKey {
    /// The endpoint judged.
    pub endpoint: EndpointKey,
    /// The version judged.
    pub candidate: String,
    /// What it was compared with; empty when the candidate is the baseline.
    pub baseline: String,
    /// The rule.
    pub rule: Rule,
}

/// An [`AlertKey`] borrowed from the aggregator for one evaluation: every
/// series is judged every evaluation, so building owned keys (five strings
/// per result) was most of an evaluation's allocation and, at 100,000
/// series, tens of MiB of transient memory. Hashes exactly as the
/// [`AlertKey`] it stands for (same fields, same order; `&str` hashes as
/// `String`), so it looks judgements up without building one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct KeyRef<'a> {
    endpoint: &'a EndpointKey,
    candidate: &'a str,
    /// Borrowed from the aggregator's version names; owned only for a
    /// configured baseline that has no traffic.
    baseline: Cow<'a, str>,
    rule: Rule,
}

impl<'a> KeyRef<'a> {
    fn of(key: &'a AlertKey) -> Self {
        Self {
            endpoint: &key.endpoint,
            candidate: &key.candidate,
            baseline: Cow::Borrowed(&key.baseline),
            rule: key.rule,
        }
    }

    fn to_key(&self) -> AlertKey {
        AlertKey {
            endpoint: self.endpoint.clone(),
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
type AckKey = (String, String, String, Rule);

fn ack_key(key: &AlertKey) -> AckKey {
    (
        key.endpoint.service.clone(),
        key.endpoint.endpoint.clone(),
        key.candidate.clone(),
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
    /// Nothing to acknowledge.
    #[error("no pending or firing alert matches service {service:?}, endpoint {endpoint:?}, candidate {candidate:?}, rule {rule}")]
    NoSuchAlert {
        /// The service asked for.
        service: String,
        /// The endpoint asked for.
        endpoint: String,
        /// The candidate asked for.
        candidate: String,
        /// The rule asked for.
        rule: Rule,
    },
}

/// The rule called `name` (`sla`, `relative`, `errors`, `fanout`).
pub fn rule_named(name: &str) -> Option<Rule> {
    [Rule::Sla, Rule::Relative, Rule::Errors, Rule::Fanout]
        .into_iter()
        .find(|r| r.as_str() == name)
}

/// One judged (endpoint, candidate, baseline, rule): the latest result and
/// the alert it drives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The latest evaluation.
    pub result: RuleResult,
    /// The alert state over time.
    pub alert: AlertMachine,
}

/// An alert that changed state.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Which alert.
    pub key: AlertKey,
    /// Where it was.
    pub previous: AlertState,
    /// Where it is now, with the evidence.
    pub judgement: Judgement,
}

/// What a snapshot keeps of a [`Judge`]: the sticky baselines and every
/// alert with its state, times and latest evidence. Generic so that
/// writing borrows ([`JudgeStateRef`]) and reading owns
/// ([`JudgeStateOwned`]) with one wire layout.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JudgeState<Baselines, Judgements> {
    baselines: Baselines,
    judgements: Judgements,
}

/// The live state, borrowed for writing.
pub(crate) type JudgeStateRef<'a> = JudgeState<&'a HashMap<EndpointKey, String>, &'a Judgements>;

/// A state read back.
pub(crate) type JudgeStateOwned = JudgeState<HashMap<EndpointKey, String>, Judgements>;

/// Owner of baselines and alert states; see the module docs.
#[derive(Debug)]
pub struct Judge {
    config: JudgeConfig,
    /// Window length, for "seen for at least a window".
    window_ms: u64,
    sequential: Sequential,
    /// The largest `min_samples` of the enabled rules: the candidate window
    /// stretches back until it holds this many requests.
    min_requests: u64,
    baselines: HashMap<EndpointKey, String>,
    /// Boxed: one per (endpoint, version, rule), so at 100,000 series the
    /// map's spare slots would otherwise cost ~230 bytes each.
    judgements: Judgements,
    /// Baselines pinned through the API, oldest first; see the module docs.
    pinned: Vec<BaselineConfig>,
    /// Acknowledged alerts; see the module docs.
    acknowledged: HashSet<AckKey>,
}

impl Judge {
    /// A judge with no history; `window_ms` is the candidate window.
    pub fn new(config: JudgeConfig, window_ms: u64) -> Self {
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
        Self {
            config,
            window_ms,
            sequential,
            min_requests,
            baselines: HashMap::new(),
            judgements: Judgements::default(),
            pinned: Vec::new(),
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
        tracing::info!(
            service,
            endpoint = endpoint.unwrap_or("*"),
            version,
            "baseline set"
        );
        Ok(())
    }

    /// Acknowledges the pending or firing alerts of `candidate` on
    /// `service`'s `endpoint` under `rule`; returns them.
    pub fn acknowledge(
        &mut self,
        service: &str,
        endpoint: &str,
        candidate: &str,
        rule: &str,
    ) -> Result<Vec<(&AlertKey, &Judgement)>, ActionError> {
        for (value, field) in [
            (service, "service"),
            (endpoint, "endpoint"),
            (candidate, "candidate"),
            (rule, "rule"),
        ] {
            if value.is_empty() {
                return Err(ActionError::Missing(field));
            }
        }
        let rule = rule_named(rule).ok_or_else(|| ActionError::UnknownRule(rule.to_owned()))?;
        let key = (
            service.to_owned(),
            endpoint.to_owned(),
            candidate.to_owned(),
            rule,
        );
        let mut matching: Vec<(&AlertKey, &Judgement)> = self
            .judgements
            .iter()
            .map(|(k, j)| (k, &**j))
            .filter(|(k, j)| ack_key(k) == key && is_live(j))
            .collect();
        if matching.is_empty() {
            return Err(ActionError::NoSuchAlert {
                service: key.0,
                endpoint: key.1,
                candidate: key.2,
                rule,
            });
        }
        matching.sort_by(|a, b| a.0.cmp(b.0));
        tracing::info!(service, endpoint, candidate, %rule, "alert acknowledged");
        self.acknowledged.insert(key);
        Ok(matching)
    }

    /// Whether the alert `key` is acknowledged.
    pub fn is_acknowledged(&self, key: &AlertKey) -> bool {
        !self.acknowledged.is_empty() && self.acknowledged.contains(&ack_key(key))
    }

    /// The configuration it judges with.
    pub fn config(&self) -> &JudgeConfig {
        &self.config
    }

    /// A judge with `config` instead, the same candidate window and no
    /// history (no baselines, no alerts): for judging one verdict on the
    /// spot with overridden thresholds, never for [`Judge::evaluate`].
    pub fn with_config(&self, config: JudgeConfig) -> Self {
        Self::new(config, self.window_ms)
    }

    /// How many requests the candidate window stretches back for (the
    /// largest `min_samples` of the enabled rules).
    pub fn min_requests(&self) -> u64 {
        self.min_requests
    }

    /// Judges every endpoint at `now_ms`; returns the alerts that changed.
    pub fn evaluate(&mut self, agg: &Aggregator, now_ms: u64) -> Vec<Transition> {
        let mut transitions = Vec::new();
        let under_alert: HashSet<(&EndpointKey, &str)> = self
            .judgements
            .iter()
            .filter(|(_, j)| matches!(j.alert.state, AlertState::Firing | AlertState::Pending))
            .map(|(k, _)| (&k.endpoint, k.candidate.as_str()))
            .collect();
        let judged: HashSet<(&EndpointKey, &str)> = self
            .judgements
            .keys()
            .map(|k| (&k.endpoint, k.candidate.as_str()))
            .collect();
        // Baselines change rarely: only changes are written (no clone of
        // every endpoint key each evaluation), and endpoints without one go.
        let mut changed_baselines = Vec::new();
        let mut without_baseline = Vec::new();
        // Sized up front: growing by doubling would hold two copies at the peak.
        let mut results = Vec::with_capacity(self.judgements.len() + 64);
        for (endpoint, versions) in agg.endpoints() {
            let baseline = self.choose_baseline(agg, endpoint, versions, &under_alert, now_ms);
            self.judge_endpoint(
                agg,
                endpoint,
                versions,
                baseline.clone(),
                &judged,
                now_ms,
                &mut results,
            );
            match baseline {
                Some(b) if self.baselines.get(endpoint).map(String::as_str) != Some(&*b) => {
                    changed_baselines.push((endpoint.clone(), b.into_owned()));
                }
                Some(_) => {}
                None if self.baselines.contains_key(endpoint) => {
                    without_baseline.push(endpoint.clone());
                }
                None => {}
            }
        }
        drop(under_alert);
        drop(judged);
        for endpoint in &without_baseline {
            self.baselines.remove(endpoint);
        }
        self.baselines.extend(changed_baselines);
        if self.baselines.len() > agg.endpoint_count() {
            // Endpoints the aggregator expired.
            self.baselines.retain(|e, _| agg.versions(e).is_some());
        }
        // Owned keys are built only for new judgements and transitions.
        let policy = &self.config.alerts;
        let judged_now = results.len();
        let mut keys = Vec::with_capacity(judged_now);
        for (key, result) in results {
            let condition = result.condition;
            let judgement = match self.judgements.get_mut(&key) {
                Some(judgement) => judgement,
                None => self.judgements.entry(key.to_key()).or_insert_with(|| {
                    Box::new(Judgement {
                        result: result.clone(),
                        alert: AlertMachine::new(now_ms),
                    })
                }),
            };
            judgement.result = result;
            if let Some(previous) = judgement.alert.step(condition, now_ms, policy) {
                transitions.push(Transition {
                    key: key.to_key(),
                    previous,
                    judgement: Judgement::clone(judgement),
                });
            }
            keys.push(key);
        }
        // Every key judged now is in the map, once: a larger map holds
        // alerts whose subject is gone. Firing ones resolve, then all go.
        if self.judgements.len() > judged_now {
            let seen: HashSet<KeyRef<'_>> = keys.into_iter().collect();
            self.judgements.retain(|key, judgement| {
                if seen.contains(&KeyRef::of(key)) {
                    return true;
                }
                if let Some(previous) = judgement.alert.retire(now_ms) {
                    judgement.result.evidence.detail =
                        "no longer judged: the series expired or the baseline changed".into();
                    transitions.push(Transition {
                        key: key.clone(),
                        previous,
                        judgement: Judgement::clone(judgement),
                    });
                }
                false
            });
        }
        if !self.acknowledged.is_empty() {
            let live: HashSet<AckKey> = self
                .judgements
                .iter()
                .filter(|(_, j)| is_live(j))
                .map(|(k, _)| ack_key(k))
                .collect();
            self.acknowledged.retain(|k| live.contains(k));
        }
        transitions.sort_by(|a, b| a.key.cmp(&b.key));
        transitions
    }

    /// The baseline of `endpoint`, borrowed from its version names unless
    /// it is a configured version without traffic.
    fn choose_baseline<'a>(
        &self,
        agg: &Aggregator,
        endpoint: &EndpointKey,
        versions: &'a Versions,
        under_alert: &HashSet<(&EndpointKey, &str)>,
        now_ms: u64,
    ) -> Option<Cow<'a, str>> {
        if let Some(configured) = self.configured_baseline(endpoint) {
            return Some(match versions.name(configured) {
                Some(name) => Cow::Borrowed(name),
                None => Cow::Owned(configured.to_owned()),
            });
        }
        let traffic: Vec<(&str, u64, u64)> = versions
            .iter()
            .map(|(v, s)| (v.as_str(), agg.horizon_count(s, now_ms), s.first_seen_ms))
            .filter(|(_, n, _)| *n > 0)
            .collect();
        let eligible = traffic
            .iter()
            .filter(|(v, _, _)| !under_alert.contains(&(endpoint, *v)));
        let established = most_traffic(
            eligible
                .clone()
                .filter(|(_, _, first)| first + self.window_ms <= now_ms),
        );
        let current = self
            .baselines
            .get(endpoint)
            .and_then(|b| traffic.iter().find(|(v, _, _)| v == b));
        let chosen = match (current, established) {
            (Some(cur), Some(challenger))
                if challenger.0 != cur.0 && challenger.1 > BASELINE_SWITCH_FACTOR * cur.1 =>
            {
                challenger.0
            }
            (Some(cur), _) => cur.0,
            (None, Some(challenger)) => challenger.0,
            // A new endpoint: its first version is the baseline until another
            // one is established.
            (None, None) => most_traffic(eligible)?.0,
        };
        Some(Cow::Borrowed(chosen))
    }

    fn configured_baseline(&self, endpoint: &EndpointKey) -> Option<&str> {
        // A pin through the API wins over the configuration; in each, an
        // endpoint-specific entry wins over a service-wide one (the newest
        // pin first: set_baseline keeps one per scope anyway).
        baseline_in(self.pinned.iter().rev(), endpoint)
            .or_else(|| baseline_in(self.config.baselines.iter(), endpoint))
    }

    /// Judges every version of `endpoint` against `baseline` into `out`.
    #[allow(clippy::too_many_arguments)]
    fn judge_endpoint<'a>(
        &self,
        agg: &Aggregator,
        endpoint: &'a EndpointKey,
        versions: &'a Versions,
        baseline: Option<Cow<'a, str>>,
        judged: &HashSet<(&EndpointKey, &str)>,
        now_ms: u64,
        out: &mut Vec<(KeyRef<'a>, RuleResult)>,
    ) {
        let base_summary = baseline
            .as_deref()
            .and_then(|b| versions.get(b))
            .map(|s| agg.horizon(s, now_ms))
            .unwrap_or_default();
        for (version, series) in versions.iter() {
            let window = agg.recent(series, now_ms, self.min_requests);
            // A version with no recent traffic is judged only while it has
            // alerts: they must see `Inconclusive` (and stay firing) rather
            // than be retired as if the version were gone.
            if window.count() == 0 && !judged.contains(&(endpoint, version.as_str())) {
                continue;
            }
            let is_baseline = baseline.as_deref() == Some(version.as_str());
            let compare_with = if is_baseline {
                None
            } else {
                baseline.as_deref()
            };
            let epoch_start = self.epoch_start(series.first_seen_ms, now_ms);
            let epoch = Epoch::lazy(|| agg.since(series, epoch_start, now_ms));
            let candidate = Candidate {
                window: &window,
                epoch: &epoch,
            };
            let base = compare_with.map(|version| Baseline {
                version,
                horizon: &base_summary,
            });
            let compared_with = match (&baseline, is_baseline) {
                (Some(b), false) => b.clone(),
                _ => Cow::Borrowed(""),
            };
            for result in self.judge(candidate, base) {
                let key = KeyRef {
                    endpoint,
                    candidate: version,
                    baseline: compared_with.clone(),
                    rule: result.rule,
                };
                out.push((key, result));
            }
        }
    }

    /// Where the current evidence epoch of a version first seen at
    /// `first_seen_ms` began.
    fn epoch_start(&self, first_seen_ms: u64, now_ms: u64) -> u64 {
        let epoch_ms = (self.config.sequential.epoch.as_millis() as u64).max(1);
        let age = now_ms.saturating_sub(first_seen_ms);
        first_seen_ms + age / epoch_ms * epoch_ms
    }

    /// Applies every enabled rule to a candidate and, when given, a baseline.
    pub fn judge(
        &self,
        candidate: Candidate<'_>,
        baseline: Option<Baseline<'_>>,
    ) -> Vec<RuleResult> {
        let c = &self.config;
        let seq = &self.sequential;
        let mut out = Vec::with_capacity(4);
        if c.sla.enabled {
            out.push(rules::sla(&c.sla, seq, candidate));
        }
        if let Some(base) = baseline {
            if c.relative.enabled {
                out.push(rules::relative(&c.relative, seq, candidate, base));
            }
            if c.errors.enabled {
                out.push(rules::errors(&c.errors, seq, candidate, base));
            }
            if c.fanout.enabled {
                out.push(rules::fanout(&c.fanout, seq, candidate, base));
            }
        }
        out
    }

    /// [`Judge::judge`] for one batch of data with no time in it (offline
    /// analysis, ad-hoc verdicts): the window is the whole epoch.
    pub fn judge_pair(
        &self,
        candidate: &WindowSummary,
        baseline: Option<(&str, &WindowSummary)>,
    ) -> Vec<RuleResult> {
        let epoch = Epoch::of(candidate.clone());
        self.judge(
            Candidate {
                window: candidate,
                epoch: &epoch,
            },
            baseline.map(|(version, horizon)| Baseline { version, horizon }),
        )
    }

    /// The state a snapshot keeps, borrowed.
    pub(crate) fn state(&self) -> JudgeStateRef<'_> {
        JudgeState {
            baselines: &self.baselines,
            judgements: &self.judgements,
        }
    }

    /// Takes over the baselines and alerts of `state` (read from a
    /// snapshot). Their times are unix ms, so hold timers simply continue
    /// against the wall clock at the next [`Judge::evaluate`].
    pub(crate) fn restore(&mut self, state: JudgeStateOwned) {
        self.baselines = state.baselines;
        self.judgements = state.judgements;
    }

    /// The e-value thresholds in force.
    pub fn sequential(&self) -> Sequential {
        self.sequential
    }

    /// The baseline of an endpoint after the latest evaluation.
    pub fn baseline(&self, endpoint: &EndpointKey) -> Option<&str> {
        self.baselines.get(endpoint).map(String::as_str)
    }

    /// Every judged (endpoint, candidate, baseline, rule).
    pub fn judgements(&self) -> impl Iterator<Item = (&AlertKey, &Judgement)> {
        self.judgements.iter().map(|(k, j)| (k, &**j))
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

/// Pending or firing: what an acknowledgement is about.
fn is_live(judgement: &Judgement) -> bool {
    matches!(
        judgement.alert.state,
        AlertState::Pending | AlertState::Firing
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AggregateConfig, BaselineConfig};
    use crate::extract::Outcome;
    use crate::testing::{endpoint, request};

    const T0: u64 = 1_763_658_000_000;

    fn setup(config: JudgeConfig) -> (Aggregator, Judge) {
        let agg = AggregateConfig::default();
        let window_ms = agg.window.as_millis() as u64;
        (
            Aggregator::new(agg, vec![100.0], Default::default(), T0),
            Judge::new(config, window_ms),
        )
    }

    fn active(judge: &Judge) -> Vec<(String, String, String, Rule)> {
        let mut v: Vec<_> = judge
            .judgements()
            .filter(|(_, j)| j.alert.state == AlertState::Firing)
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

    /// Minimal deterministic generator (SplitMix64) so tests need no seed crate.
    struct Rng(u64);
    impl Rng {
        fn next_f64(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn lending_incident_fires_all_rules_for_v13_on_both_endpoints() {
        let (mut agg, mut judge) = setup(JudgeConfig::default());
        let mut t = T0;
        // v1.2 alone for a while: becomes the baseline.
        for i in 0..100 {
            let ms = 85.0 + f64::from(i % 30);
            agg.record(
                &[
                    request("/risk-score", "v1.2", ms, Outcome::Ok),
                    request("/funding-approve", "v1.2", ms, Outcome::Ok),
                ],
                t,
            );
            t += 100;
            judge.evaluate(&agg, t);
        }
        // The rollout: v1.3 at 700-820 ms, 80% timeouts, beside v1.2.
        for i in 0..40 {
            let outcome = if i % 5 == 0 {
                Outcome::Ok
            } else {
                Outcome::Timeout
            };
            let ms = 700.0 + f64::from(i * 3 % 120);
            agg.record(
                &[
                    request("/risk-score", "v1.3", ms, outcome),
                    request("/funding-approve", "v1.3", ms, outcome),
                    request("/risk-score", "v1.2", 100.0, Outcome::Ok),
                    request("/funding-approve", "v1.2", 100.0, Outcome::Ok),
                ],
                t,
            );
            t += 250;
            judge.evaluate(&agg, t);
        }
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
                if t.judgement.alert.state == AlertState::Firing {
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
                    .filter(|tr| tr.judgement.alert.state == AlertState::Firing)
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
            .filter(|(k, _)| k.rule == Rule::Relative)
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
            ..borrowed
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
        assert_eq!(transitions.len(), 1);
        assert_eq!(transitions[0].judgement.alert.state, AlertState::Resolved);
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
            judge.acknowledge("lending-api", "/a", "v1", "sla"),
            Err(ActionError::NoSuchAlert { .. })
        ));
        for _ in 0..10 {
            agg.record(&[request("/a", "v1", 900.0, Outcome::Ok)], t);
            t += 1_000;
            judge.evaluate(&agg, t);
        }
        assert_eq!(active(&judge).len(), 1);
        let key = judge.judgements().next().unwrap().0.clone();
        assert!(!judge.is_acknowledged(&key));
        assert_eq!(
            judge.acknowledge("lending-api", "/a", "v1", "slow"),
            Err(ActionError::UnknownRule("slow".into()))
        );
        assert_eq!(
            judge.acknowledge("lending-api", "", "v1", "sla"),
            Err(ActionError::Missing("endpoint"))
        );
        assert!(matches!(
            judge.acknowledge("lending-api", "/a", "v2", "sla"),
            Err(ActionError::NoSuchAlert { .. })
        ));
        let acked = judge.acknowledge("lending-api", "/a", "v1", "sla").unwrap();
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
}
