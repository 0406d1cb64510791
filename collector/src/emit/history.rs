//! The dashboard's memory: per series, the figures of the last evaluation
//! ticks, and the regressions that fired and resolved.
//!
//! The pipeline task calls [`History::record_service`] for each service
//! it judged, after the judge, and [`History::tick`] once per evaluation
//! tick, so a page opened late still shows how a version got where it is.
//! A service is judged when its figures can have changed (new samples, a
//! new slot, a timer: see [`crate::judge::schedule`]), so its points are
//! the steps of its chart; [`History::record`] records every service. Every part is bounded by configuration (`admin.history_points` per
//! series, `admin.history_series` series, `admin.history_regressions` past
//! regressions): it must never grow with traffic, and it must never change
//! what is measured or judged; it only copies figures out of the aggregator
//! and the judge. [`History::view`] builds the JSON of `/api/v1/history`.
//!
//! Unlike the `modelgate.v1` JSON, this is a dashboard view with no proto
//! behind it: integers are JSON numbers (unix milliseconds fit a double
//! exactly) and a figure that does not exist (no requests in the window) is
//! `null`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregator;
use crate::config::AdminConfig;
use crate::extract::{EndpointKey, Outcome};
use crate::judge::{
    AlertKey, AlertState, Condition, Evidence, Judge, Resolution, Rule, Severity, Transition,
};
use crate::phase::{InputBand, Phase};

/// How much history is kept; see [`AdminConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Points per series.
    pub points: usize,
    /// Series kept.
    pub series: usize,
    /// Resolved regressions kept.
    pub regressions: usize,
}

impl HistoryLimits {
    /// The limits the admin settings ask for.
    pub fn from_config(admin: &AdminConfig) -> Self {
        Self {
            points: admin.history_points,
            series: admin.history_series,
            regressions: admin.history_regressions,
        }
    }
}

/// One series at one evaluation tick: its candidate window
/// (`aggregate.window`), the figures the judge saw.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// When it was recorded.
    pub unix_ms: u64,
    /// Requests in the window.
    pub requests: u64,
    /// Of which timed out.
    pub timeouts: u64,
    /// Of which failed otherwise.
    pub errors: u64,
    /// Median latency; `None` without requests. `f32` halves the memory and
    /// is exact to far below the sketch's own error.
    pub p50_ms: Option<f32>,
    /// 95th percentile latency.
    pub p95_ms: Option<f32>,
    /// 99th percentile latency.
    pub p99_ms: Option<f32>,
}

/// The last points of one series, oldest first, never more than its limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ring {
    points: VecDeque<Point>,
}

impl Ring {
    fn new(limit: usize) -> Self {
        Self {
            // A small start: most series never fill a long ring.
            points: VecDeque::with_capacity(limit.min(64)),
        }
    }

    fn push(&mut self, point: Point, limit: usize) {
        while self.points.len() >= limit {
            self.points.pop_front();
        }
        self.points.push_back(point);
    }

    fn last_ms(&self) -> u64 {
        self.points.back().map_or(0, |p| p.unix_ms)
    }
}

/// One regression alert, firing or past.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionView {
    /// `service.name`.
    pub service: String,
    /// The endpoint judged.
    pub endpoint: String,
    /// Values of the configured extra dimensions.
    pub dims: Vec<String>,
    /// The whole request, or the phase of it that regressed.
    pub phase: Phase,
    /// The version that regressed.
    pub candidate_version: String,
    /// What it was compared with (empty for `sla` without a baseline).
    pub baseline_version: String,
    /// `sla`, `relative`, `errors` or `fanout`.
    pub rule: Rule,
    /// `warning` or `critical`.
    pub severity: Severity,
    /// `firing` or `resolved`.
    pub state: AlertState,
    /// When it started firing.
    pub fired_unix_ms: u64,
    /// When it resolved; `None` while firing.
    pub resolved_unix_ms: Option<u64>,
    /// Firing: the latest evaluation. Resolved: the last evaluation that
    /// breached, the evidence the alert stood on.
    pub evidence: Evidence,
    /// Why it resolved (the evaluation that cleared it, or the candidate's
    /// traffic stopping); `None` while firing.
    pub resolution: Option<String>,
}

fn regression_view(
    key: &AlertKey,
    severity: Severity,
    fired_ms: u64,
    evidence: Evidence,
) -> RegressionView {
    RegressionView {
        service: key.endpoint.service.clone(),
        endpoint: key.endpoint.endpoint.clone(),
        dims: key.endpoint.dims.clone(),
        phase: key.endpoint.phase,
        candidate_version: key.candidate.clone(),
        baseline_version: key.baseline.clone(),
        rule: key.rule,
        severity,
        state: AlertState::Firing,
        fired_unix_ms: fired_ms,
        resolved_unix_ms: None,
        evidence,
        resolution: None,
    }
}

/// A version's history on one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionHistory {
    /// The version.
    pub version: String,
    /// Whether the judge compares the endpoint's other versions with it now.
    pub is_baseline: bool,
    /// Oldest first.
    pub points: Vec<Point>,
}

/// An endpoint's versions and their history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointHistory {
    /// `service.name`.
    pub service: String,
    /// The endpoint.
    pub endpoint: String,
    /// Values of the configured extra dimensions.
    pub dims: Vec<String>,
    /// The whole request, or the phase of it charted.
    pub phase: Phase,
    /// The band of input tokens of a first-token series that has one
    /// (`crate::phase::InputBand`): each band is charted apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<InputBand>,
    /// The judge's current baseline, empty when none.
    pub baseline_version: String,
    /// By version name.
    pub versions: Vec<VersionHistory>,
}

/// The `sla` rule's limit, to draw on the latency chart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SlaView {
    /// The quantile held to the limit (0.95 = p95).
    pub quantile: f64,
    /// The limit, ms.
    pub limit_ms: f64,
}

/// The body of `/api/v1/history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryView {
    /// When the view was built.
    pub now_unix_ms: u64,
    /// Time between points (`judge.evaluation_interval`).
    pub interval_ms: u64,
    /// Points kept per series (`admin.history_points`).
    pub points_limit: usize,
    /// The candidate window every point summarizes (`aggregate.window`).
    pub window_ms: u64,
    /// Live series left out because `admin.history_series` is reached.
    pub untracked_series: u64,
    /// The `sla` rule, when enabled.
    pub sla: Option<SlaView>,
    /// By service and endpoint.
    pub endpoints: Vec<EndpointHistory>,
    /// Alerts firing now.
    pub active: Vec<RegressionView>,
    /// Alerts that fired and resolved, newest first.
    pub resolved: Vec<RegressionView>,
}

/// A firing alert as history remembers it: when it fired and the last
/// evidence that breached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Open {
    fired_ms: u64,
    evidence: Evidence,
}

/// A firing alert of one severity.
type OpenKey = (AlertKey, Severity);

/// What a snapshot keeps of a [`History`]: the charts' rings, the firing
/// alerts' fire times and evidence, the resolved ones. Generic so that
/// writing borrows ([`HistoryStateRef`]) and reading owns
/// ([`HistoryStateOwned`]) with one wire layout.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HistoryState<Series, Opened, Past> {
    series: Series,
    open: Opened,
    past: Past,
}

/// The live history, borrowed for writing.
pub(crate) type HistoryStateRef<'a> = HistoryState<
    &'a BTreeMap<EndpointKey, BTreeMap<String, Ring>>,
    &'a HashMap<OpenKey, Open>,
    &'a VecDeque<RegressionView>,
>;

/// A history read back.
pub(crate) type HistoryStateOwned = HistoryState<
    BTreeMap<EndpointKey, BTreeMap<String, Ring>>,
    HashMap<OpenKey, Open>,
    VecDeque<RegressionView>,
>;

/// The bounded history; see the module docs.
#[derive(Debug)]
pub struct History {
    limits: HistoryLimits,
    /// Series history by endpoint, then version (sorted: views come out in
    /// order without sorting).
    series: BTreeMap<EndpointKey, BTreeMap<String, Ring>>,
    /// Rings in `series`, at most `limits.series`.
    tracked: usize,
    /// Live series not tracked at the last tick.
    untracked: u64,
    /// Firing alerts.
    open: HashMap<OpenKey, Open>,
    /// Resolved alerts, newest first.
    past: VecDeque<RegressionView>,
}

impl History {
    /// An empty history.
    pub fn new(limits: HistoryLimits) -> Self {
        Self {
            limits,
            series: BTreeMap::new(),
            tracked: 0,
            untracked: 0,
            open: HashMap::new(),
            past: VecDeque::new(),
        }
    }

    /// Records one evaluation tick of every service, as [`History::tick`]
    /// and [`History::record_service`] for each would, with the alert
    /// `transitions` the judge just made.
    pub fn record(
        &mut self,
        agg: &Aggregator,
        judge: &Judge,
        transitions: &[Transition],
        interval_ms: u64,
        now_ms: u64,
    ) {
        self.forget_stale(interval_ms, now_ms);
        let services: Vec<&str> = agg
            .services_from(std::ops::Bound::Unbounded)
            .chain(transitions.iter().map(|t| t.key.endpoint.service.as_str()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for service in services {
            let of_service: Vec<Transition> = transitions
                .iter()
                .filter(|t| t.key.endpoint.service == service)
                .cloned()
                .collect();
            self.record_service(agg, judge, service, &of_service, now_ms);
        }
        self.count_untracked(agg);
    }

    /// Starts an evaluation tick: a series that got no point for a whole
    /// ring's span (`limits.points` ticks of `interval_ms`) is forgotten,
    /// making room for new ones, and the live series left out are counted.
    pub fn tick(&mut self, agg: &Aggregator, interval_ms: u64, now_ms: u64) {
        self.forget_stale(interval_ms, now_ms);
        self.count_untracked(agg);
    }

    /// Live series without a ring (`admin.history_series` reached).
    fn count_untracked(&mut self, agg: &Aggregator) {
        let untracked = agg.series_count().saturating_sub(self.tracked) as u64;
        if untracked > 0 && self.untracked == 0 {
            tracing::warn!(
                untracked,
                limit = self.limits.series,
                "admin.history_series reached: the dashboard leaves further series out"
            );
        }
        self.untracked = untracked;
    }

    /// Records `service` as just judged: a point per series, and the alert
    /// `transitions` the judge just made for it.
    pub fn record_service(
        &mut self,
        agg: &Aggregator,
        judge: &Judge,
        service: &str,
        transitions: &[Transition],
        now_ms: u64,
    ) {
        let limit = self.limits.points;
        for (endpoint, versions) in agg.service_endpoints(service) {
            for (version, series) in versions.iter() {
                let known = self
                    .series
                    .get(endpoint)
                    .is_some_and(|v| v.contains_key(version.as_str()));
                if !known && self.tracked >= self.limits.series {
                    continue;
                }
                let w = agg.window(series, now_ms);
                let q = |q| w.latency.quantile(q).map(|v| v as f32);
                let point = Point {
                    unix_ms: now_ms,
                    requests: w.count(),
                    timeouts: w.outcomes[Outcome::Timeout.index()],
                    errors: w.outcomes[Outcome::Error.index()],
                    p50_ms: q(0.5),
                    p95_ms: q(0.95),
                    p99_ms: q(0.99),
                };
                if !known {
                    self.tracked += 1;
                }
                self.series
                    .entry(endpoint.clone())
                    .or_default()
                    .entry(version.clone())
                    .or_insert_with(|| Ring::new(limit))
                    .push(point, limit);
            }
        }
        self.record_alerts(judge, service, transitions, now_ms);
    }

    fn forget_stale(&mut self, interval_ms: u64, now_ms: u64) {
        let span_ms = interval_ms.saturating_mul(self.limits.points as u64);
        let mut forgotten = 0;
        self.series.retain(|_, versions| {
            versions.retain(|_, ring| {
                let keep = ring.last_ms().saturating_add(span_ms) >= now_ms;
                forgotten += usize::from(!keep);
                keep
            });
            !versions.is_empty()
        });
        self.tracked -= forgotten;
    }

    fn record_alerts(
        &mut self,
        judge: &Judge,
        service: &str,
        transitions: &[Transition],
        now_ms: u64,
    ) {
        for t in transitions {
            let evidence = t.judgement.result.evidence.clone();
            let open_key = (t.key.clone(), t.severity);
            let alert = t.alert();
            match (t.previous, alert.state) {
                (_, AlertState::Firing) => {
                    self.open.insert(
                        open_key,
                        Open {
                            fired_ms: now_ms,
                            evidence,
                        },
                    );
                }
                (AlertState::Firing, to) => {
                    let open = self.open.remove(&open_key).unwrap_or(Open {
                        fired_ms: now_ms,
                        evidence: evidence.clone(),
                    });
                    let mut past =
                        regression_view(&t.key, t.severity, open.fired_ms, open.evidence);
                    past.state = to;
                    past.resolved_unix_ms = Some(now_ms);
                    past.resolution = Some(match alert.resolution {
                        Some(Resolution::NoTraffic) => format!(
                            "no traffic since {}",
                            humantime::format_rfc3339_millis(
                                std::time::UNIX_EPOCH
                                    + std::time::Duration::from_millis(
                                        t.judgement.quiet_since_ms.unwrap_or(now_ms)
                                    )
                            )
                        ),
                        _ => evidence.detail,
                    });
                    self.past.push_front(past);
                    self.past.truncate(self.limits.regressions);
                }
                _ => {}
            }
        }
        // While firing, keep the latest evidence that still breaches: that is
        // what a resolved alert is shown with.
        for (key, judgement) in judge.judgements_of(service) {
            for severity in Severity::ALL {
                let breaching = judgement.alert(severity).state == AlertState::Firing
                    && judgement.result.conditions.at(severity) == Condition::Breach;
                if !breaching {
                    continue;
                }
                if let Some(open) = self.open.get_mut(&(key.clone(), severity)) {
                    open.evidence = judgement.result.evidence.clone();
                }
            }
        }
    }

    /// The state a snapshot keeps, borrowed.
    pub(crate) fn state(&self) -> HistoryStateRef<'_> {
        HistoryState {
            series: &self.series,
            open: &self.open,
            past: &self.past,
        }
    }

    /// Takes over `state` (read from a snapshot) within this history's
    /// limits, which may be smaller than those it was written with.
    pub(crate) fn restore(&mut self, state: HistoryStateOwned) {
        let limits = self.limits;
        let mut series = state.series;
        let mut tracked = 0;
        for versions in series.values_mut() {
            versions.retain(|_, ring| {
                if tracked >= limits.series || ring.points.is_empty() {
                    return false;
                }
                tracked += 1;
                while ring.points.len() > limits.points {
                    ring.points.pop_front();
                }
                true
            });
        }
        series.retain(|_, versions| !versions.is_empty());
        let mut past = state.past;
        past.truncate(limits.regressions);
        self.series = series;
        self.tracked = tracked;
        self.open = state.open;
        self.past = past;
    }

    /// Live series the history leaves out (`admin.history_series` reached).
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// The history of `service` (every service when empty), with the alerts
    /// firing now and the past ones.
    pub fn view(
        &self,
        judge: &Judge,
        service: &str,
        interval_ms: u64,
        window_ms: u64,
        now_ms: u64,
    ) -> HistoryView {
        let wanted = |s: &str| service.is_empty() || s == service;
        let endpoints = self
            .series
            .iter()
            .filter(|(k, _)| wanted(&k.service))
            .map(|(key, versions)| {
                let baseline = judge.baseline(key).unwrap_or_default();
                EndpointHistory {
                    service: key.service.clone(),
                    endpoint: key.endpoint.clone(),
                    dims: key.dims.clone(),
                    phase: key.phase,
                    input_tokens: key.input,
                    baseline_version: baseline.to_owned(),
                    versions: versions
                        .iter()
                        .map(|(version, ring)| VersionHistory {
                            version: version.clone(),
                            is_baseline: version == baseline,
                            points: ring.points.iter().copied().collect(),
                        })
                        .collect(),
                }
            })
            .collect();
        let mut active: Vec<RegressionView> = judge
            .judgements()
            .filter(|(k, _)| wanted(&k.endpoint.service))
            .flat_map(|(k, j)| {
                Severity::ALL
                    .into_iter()
                    .filter(|s| j.alert(*s).state == AlertState::Firing)
                    .map(move |s| {
                        regression_view(k, s, j.alert(s).since_ms, j.result.evidence.clone())
                    })
            })
            .collect();
        active.sort_by(|a, b| {
            (
                &a.service,
                &a.endpoint,
                &a.candidate_version,
                a.rule,
                a.severity,
            )
                .cmp(&(
                    &b.service,
                    &b.endpoint,
                    &b.candidate_version,
                    b.rule,
                    b.severity,
                ))
        });
        let config = judge.config();
        HistoryView {
            now_unix_ms: now_ms,
            interval_ms,
            points_limit: self.limits.points,
            window_ms,
            untracked_series: self.untracked,
            sla: config.sla.enabled.then_some(SlaView {
                quantile: config.sla.quantile,
                limit_ms: config.sla.limit.as_secs_f64() * 1e3,
            }),
            endpoints,
            active,
            resolved: self
                .past
                .iter()
                .filter(|r| wanted(&r.service))
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AggregateConfig, JudgeConfig};
    use crate::extract::Sample;
    use crate::testing::request;

    const T0: u64 = 1_763_658_000_000;
    const TICK: u64 = 1000;

    fn setup() -> (Aggregator, Judge) {
        let agg = AggregateConfig::default();
        (
            Aggregator::new(agg, vec![100.0], Default::default(), T0),
            Judge::new(JudgeConfig::default()),
        )
    }

    fn limits(points: usize, series: usize, regressions: usize) -> HistoryLimits {
        HistoryLimits {
            points,
            series,
            regressions,
        }
    }

    #[test]
    fn ring_keeps_the_last_points_only() {
        let (mut agg, judge) = setup();
        let mut history = History::new(limits(3, 10, 10));
        for i in 0..10 {
            let now = T0 + i * TICK;
            agg.record(&[request("/risk-score", "v1.2", 20.0, Outcome::Ok)], now);
            history.record(&agg, &judge, &[], TICK, now);
        }
        let view = history.view(&judge, "", TICK, 300_000, T0 + 9 * TICK);
        let points = &view.endpoints[0].versions[0].points;
        assert_eq!(points.len(), 3);
        assert_eq!(
            points.iter().map(|p| p.unix_ms).collect::<Vec<_>>(),
            [T0 + 7 * TICK, T0 + 8 * TICK, T0 + 9 * TICK]
        );
        assert_eq!(points[2].requests, 10);
        assert_eq!(view.points_limit, 3);
    }

    #[test]
    fn series_beyond_the_limit_are_counted_not_kept() {
        let (mut agg, judge) = setup();
        let mut history = History::new(limits(5, 2, 10));
        let batch: Vec<Sample> = ["v1", "v2", "v3", "v4"]
            .iter()
            .map(|v| request("/risk-score", v, 20.0, Outcome::Ok))
            .collect();
        agg.record(&batch, T0);
        history.record(&agg, &judge, &[], TICK, T0);
        history.record(&agg, &judge, &[], TICK, T0 + TICK);
        let view = history.view(&judge, "", TICK, 300_000, T0 + TICK);
        let kept: usize = view.endpoints.iter().map(|e| e.versions.len()).sum();
        assert_eq!(kept, 2);
        assert_eq!(view.untracked_series, 2);
        assert_eq!(history.untracked(), 2);
    }

    #[test]
    fn stale_series_make_room() {
        let (mut agg, judge) = setup();
        let mut history = History::new(limits(2, 1, 10));
        agg.record(&[request("/a", "v1", 20.0, Outcome::Ok)], T0);
        history.record(&agg, &judge, &[], TICK, T0);
        // The aggregator forgets the series after its idle timeout; the
        // history forgets it once its ring's span has passed with no point.
        let later = T0 + 3_600_000;
        agg.expire(later);
        agg.record(&[request("/b", "v2", 20.0, Outcome::Ok)], later);
        history.record(&agg, &judge, &[], TICK, later);
        history.record(&agg, &judge, &[], TICK, later + TICK);
        let view = history.view(&judge, "", TICK, 300_000, later + TICK);
        assert_eq!(view.endpoints.len(), 1);
        assert_eq!(view.endpoints[0].endpoint, "/b");
        assert_eq!(view.endpoints[0].versions[0].points.len(), 2);
    }

    #[test]
    fn regressions_fire_and_resolve_into_a_bounded_past() {
        let (mut agg, mut judge) = setup();
        let mut history = History::new(limits(10, 10, 1));
        let mut now = T0;
        let mut fired = false;
        for _ in 0..20 {
            let batch: Vec<Sample> = (0..20)
                .flat_map(|_| {
                    [
                        request("/risk-score", "v1.2", 40.0, Outcome::Ok),
                        request("/risk-score", "v1.3", 900.0, Outcome::Timeout),
                    ]
                })
                .collect();
            agg.record(&batch, now);
            let transitions = judge.evaluate(&agg, now);
            history.record(&agg, &judge, &transitions, TICK, now);
            fired |= !history.view(&judge, "", TICK, 0, now).active.is_empty();
            now += TICK;
        }
        assert!(fired);
        let view = history.view(&judge, "lending-api", TICK, 0, now);
        let sla = view
            .active
            .iter()
            .find(|r| r.rule == Rule::Sla)
            .expect("sla firing");
        assert_eq!(sla.candidate_version, "v1.3");
        assert_eq!(sla.state, AlertState::Firing);
        assert!(sla.evidence.candidate_value > 150.0, "{sla:?}");
        assert!(history
            .view(&judge, "other", TICK, 0, now)
            .active
            .is_empty());

        // The series expire: every firing alert resolves, one is remembered.
        let later = now + 3_600_000;
        agg.expire(later);
        let transitions = judge.evaluate(&agg, later);
        history.record(&agg, &judge, &transitions, TICK, later);
        let view = history.view(&judge, "", TICK, 0, later);
        assert!(view.active.is_empty());
        assert_eq!(view.resolved.len(), 1);
        let past = &view.resolved[0];
        assert_eq!(past.state, AlertState::Resolved);
        assert_eq!(past.resolved_unix_ms, Some(later));
        assert!(past.fired_unix_ms < later);
        assert!(past.evidence.candidate_value > 0.0, "{past:?}");
        assert!(past.resolution.is_some());
    }

    #[test]
    fn json_shape() {
        let (mut agg, judge) = setup();
        let mut history = History::new(limits(4, 10, 10));
        agg.record(
            &[
                request("/risk-score", "v1.2", 40.0, Outcome::Ok),
                request("/risk-score", "v1.2", 1000.0, Outcome::Timeout),
            ],
            T0,
        );
        history.record(&agg, &judge, &[], TICK, T0);
        let json = serde_json::to_value(history.view(&judge, "", TICK, 300_000, T0)).unwrap();
        assert_eq!(json["interval_ms"], 1000);
        assert_eq!(json["points_limit"], 4);
        assert_eq!(json["window_ms"], 300_000);
        assert_eq!(json["untracked_series"], 0);
        assert_eq!(json["sla"]["limit_ms"], 150.0);
        assert_eq!(json["active"], serde_json::json!([]));
        assert_eq!(json["resolved"], serde_json::json!([]));
        let endpoint = &json["endpoints"][0];
        assert_eq!(endpoint["service"], "lending-api");
        assert_eq!(endpoint["endpoint"], "/risk-score");
        let version = &endpoint["versions"][0];
        assert_eq!(version["version"], "v1.2");
        let point = &version["points"][0];
        assert_eq!(point["unix_ms"], T0);
        assert_eq!(point["requests"], 2);
        assert_eq!(point["timeouts"], 1);
        assert_eq!(point["errors"], 0);
        for key in ["p50_ms", "p95_ms", "p99_ms"] {
            assert!(point[key].as_f64().unwrap() > 0.0, "{key}: {point}");
        }
        // A window with no requests has no percentiles: null, not 0.
        let empty = Point {
            unix_ms: T0,
            requests: 0,
            timeouts: 0,
            errors: 0,
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
        };
        assert_eq!(
            serde_json::to_value(empty).unwrap()["p95_ms"],
            serde_json::Value::Null
        );
    }
}
