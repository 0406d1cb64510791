//! The pipeline task: the one owner of the aggregator and the judge.
//!
//! Receivers send batches of samples over a bounded channel; a tick starts
//! an evaluation round (expiry and judgement of the services whose verdicts
//! can have changed, see [`crate::judge::schedule`]), which the loop then
//! works through in slices of about [`SLICE_SERIES`] series taking turns
//! with batches and questions, so ingest never waits behind more than one
//! slice; everyone else (the query API, `/metrics`, the
//! dashboard, the operator's writes) sends a closure over the [`State`] on
//! a second channel and gets its answer back ([`PipelineHandle::ask`]). All
//! of it is one `select!` loop, so no lock guards the hot path and nothing
//! else ever sees a service half-judged (between slices, a question sees
//! some services judged at this tick and the others as of their last
//! judgement, each whole). Alert transitions are logged,
//! pushed to OTLP and broadcast to alert-stream subscribers as
//! [`AlertEvent`]s; each service judged also adds a point per series to the
//! dashboard's bounded history. The loop never blocks on a subscriber or an
//! exporter. With `snapshot.dir` set, the task restores the state from its
//! snapshot before taking any batch, starts a snapshot every
//! `snapshot.interval` and encodes it in slices of [`SNAPSHOT_SLICE_SERIES`]
//! series, each a turn of the loop taking its chance beside batches and
//! questions (the file is written on a blocking thread as the slices come,
//! see [`crate::snapshot`]), and takes a last one after the final drain.
//!
//! This module knows no wire format: questions and answers are Rust values.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::aggregate::{Aggregator, InputLimits};
use crate::config::Config;
use crate::emit::history::{History, HistoryLimits};
use crate::emit::otlp::OtlpEmitter;
use crate::extract::{Sample, SampleKind};
use crate::judge::{
    ActionError, AlertKey, AlertState, Judge, Judgement, Round, Schedule, Severity, Transition,
};
use crate::snapshot::{self as snapshots, SnapshotInProgress, Snapshotter, Step};
use crate::telemetry::{RefusedReason, Telemetry};

/// Alert events buffered for slow stream subscribers before they skip.
const ALERT_BUFFER: usize = 1024;

/// Questions waiting for the pipeline task.
const QUERY_QUEUE: usize = 64;

/// Series encoded per turn of the loop while a snapshot is taken: about
/// 1-2 ms of the task at a few KiB a series (`BENCHMARKS.md`, "Snapshots
/// in slices"), so a batch waits at most that long for a snapshot.
pub const SNAPSHOT_SLICE_SERIES: usize = 1024;

/// How long an evaluation slice judges: it ends after the first service
/// that reaches it (a service is never split, its version-wide verdicts
/// read all its endpoints), so a batch waits about that long, plus one
/// service's judging, behind an evaluation (see BENCHMARKS.md,
/// "Evaluation without stalls").
pub const SLICE_TIME: Duration = Duration::from_millis(2);

/// Series a slice judges at most, whatever the time: reading the clock is
/// not free, and cheap series (too few requests for any rule) come by the
/// thousand.
pub const SLICE_SERIES: usize = 1_000;

/// The wall clock, in unix milliseconds: read here, in the shell, and passed
/// to the stages as a parameter.
#[allow(
    clippy::disallowed_methods,
    reason = "the one place the collector reads the wall clock"
)]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A question for the pipeline task: a closure over its state, run there.
type Job = Box<dyn FnOnce(&mut State, u64) + Send>;

/// An alert that changed state, as subscribers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    /// When (unix ms).
    pub time_ms: u64,
    /// Which alert.
    pub key: AlertKey,
    /// Which of its severities moved.
    pub severity: Severity,
    /// Where it was.
    pub previous: AlertState,
    /// Where it is, with its evidence.
    pub judgement: Judgement,
    /// Acknowledged by an operator.
    pub acknowledged: bool,
}

/// The pipeline task is gone (shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the pipeline is not running")]
pub struct QueryError;

/// Why a batch was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// `receiver.queue_batches` batches are waiting: retry later.
    #[error("the aggregation queue is full")]
    Full,
    /// Shutting down.
    #[error("the pipeline is not running")]
    Closed,
}

/// Cheap, cloneable access to the pipeline task.
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    ingest: mpsc::Sender<Vec<Sample>>,
    queries: mpsc::Sender<Job>,
    alerts: broadcast::Sender<AlertEvent>,
    telemetry: Arc<Telemetry>,
    /// Cancelled when the servers stop: open alert streams end then, or a
    /// graceful shutdown would wait for them forever.
    stopping: CancellationToken,
}

impl PipelineHandle {
    /// Hands a batch to the aggregator without waiting; a full queue is
    /// counted and reported so the receiver can tell the sender to retry.
    pub fn try_ingest(&self, batch: Vec<Sample>) -> Result<(), IngestError> {
        let n = batch.len() as u64;
        self.ingest.try_send(batch).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.telemetry
                    .refused(RefusedReason::QueueFull, n, "aggregation queue full");
                IngestError::Full
            }
            mpsc::error::TrySendError::Closed(_) => IngestError::Closed,
        })
    }

    /// The receivers' counters.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Runs `question` on the pipeline task with its state and the time, and
    /// returns the answer. Questions and batches take turns (neither
    /// starves the other), so a question may run before a batch handed over
    /// just before it; it blocks ingest for as long as it runs.
    pub async fn ask<T: Send + 'static>(
        &self,
        question: impl FnOnce(&mut State, u64) -> T + Send + 'static,
    ) -> Result<T, QueryError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |state, now| {
            // A dropped receiver means the asker gave up; nothing to do.
            let _ = tx.send(question(state, now));
        });
        self.queries.send(job).await.map_err(|_| QueryError)?;
        rx.await.map_err(|_| QueryError)
    }

    /// Answers once the pipeline task is running and keeping up with questions.
    pub async fn ping(&self) -> Result<(), QueryError> {
        self.ask(|_, _| ()).await
    }

    /// Alert events from now on.
    pub fn subscribe_alerts(&self) -> broadcast::Receiver<AlertEvent> {
        self.alerts.subscribe()
    }

    /// Cancelled when the servers begin to stop.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }
}

/// What the task owns and questions may read (and the operator's writes
/// change): the aggregator, the judge, the dashboard's history.
pub struct State {
    /// Every series.
    pub aggregator: Aggregator,
    /// Baselines, judgements, alerts.
    pub judge: Judge,
    /// What the dashboard charts: recorded after each judgement.
    pub history: History,
    /// modelgate's own counters.
    pub telemetry: Arc<Telemetry>,
    /// The Prometheus histogram's bucket bounds, ms.
    pub bounds_ms: Vec<f64>,
    /// `extract.dimensions`: the names of a series' extra values.
    pub dimensions: Vec<String>,
    /// `judge.evaluation_interval`.
    pub evaluation_interval: Duration,
    /// `aggregate.window`, ms.
    pub window_ms: u64,
    /// Grows with every alert transition (pollers compare it).
    pub revision: u64,
    /// When each service must be judged again; see [`crate::judge::schedule`].
    schedule: Schedule,
    /// The evaluation round under way, if any.
    round: Option<Round>,
    /// `aggregate.slot`, ms: every service is judged once per slot.
    slot_ms: u64,
    otlp: Option<OtlpEmitter>,
    alerts: broadcast::Sender<AlertEvent>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("series", &self.aggregator.series_count())
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

impl State {
    /// An empty state for `config`: nothing recorded, nothing judged.
    pub fn new(config: &Config, telemetry: Arc<Telemetry>, otlp: Option<OtlpEmitter>) -> Self {
        let (alerts, _) = broadcast::channel(ALERT_BUFFER);
        Self {
            aggregator: Aggregator::new(
                config.aggregate.clone(),
                config.emit.histogram_buckets_ms.clone(),
                telemetry.clone(),
                now_ms(),
            )
            .with_limits(InputLimits::of(&config.extract)),
            judge: Judge::new(config.judge.clone()),
            history: History::new(HistoryLimits::from_config(&config.admin)),
            telemetry,
            bounds_ms: config.emit.histogram_buckets_ms.clone(),
            dimensions: config.extract.dimensions.clone(),
            evaluation_interval: config.judge.evaluation_interval,
            window_ms: config.aggregate.window.as_millis() as u64,
            revision: 0,
            schedule: Schedule::new(),
            round: None,
            slot_ms: (config.aggregate.slot.as_millis() as u64).max(1),
            otlp,
            alerts,
        }
    }

    /// Records a batch that arrived at `now_ms`.
    pub fn record(&mut self, batch: &[Sample], now_ms: u64) {
        self.aggregator.record(batch, now_ms);
        if let Some(otlp) = &self.otlp {
            for sample in batch {
                if let SampleKind::Request { duration, outcome } = sample.kind {
                    otlp.record_request(&sample.series, duration.as_secs_f64(), outcome);
                }
            }
        }
    }

    /// Expires what is old, judges every service and tells the world what
    /// changed, all at once (the final evaluation at shutdown, questions
    /// that ask for one): a round over everything, in one slice.
    pub fn evaluate(&mut self, now: u64) {
        self.begin(now, true);
        while self.evaluating() {
            self.judge_slice(|_| true);
        }
    }

    /// Pins `version` as the baseline of `service`'s `endpoint` (every
    /// endpoint when `None`) and judges that service at once, so the
    /// answer and every later question see it. Only that service: a pin
    /// at a million series must not pause ingest for a full evaluation
    /// (a round under way goes on).
    pub fn set_baseline(
        &mut self,
        service: &str,
        endpoint: Option<&str>,
        version: &str,
        now: u64,
    ) -> Result<(), ActionError> {
        self.judge.set_baseline(service, endpoint, version)?;
        self.judge_service(service, now);
        Ok(())
    }

    /// Starts the evaluation round of the tick at `now`: what belongs to no
    /// service expires, and the round names the services whose verdicts
    /// can have changed (touched, acted on, a timer due; every service in
    /// a new slot, or with `everything`). [`State::judge_slice`] then
    /// judges them.
    pub fn begin(&mut self, now: u64, everything: bool) {
        self.aggregator.expire_shared(now);
        self.history.tick(
            &self.aggregator,
            self.evaluation_interval.as_millis() as u64,
            now,
        );
        let mut named = self.aggregator.take_touched();
        named.extend(self.judge.take_acted());
        if everything {
            // Services whose series are all gone still have alerts to retire.
            named.extend(self.judge.services().map(str::to_owned));
        }
        self.round = Some(self.schedule.begin(named, self.slot_ms, everything, now));
    }

    /// An evaluation round is under way.
    pub fn evaluating(&self) -> bool {
        self.round.is_some()
    }

    /// Judges the round's next services while `more(series judged so
    /// far)` says so (asked after each service) or until the round ends
    /// ([`State::evaluating`] then turns false); returns how many services
    /// it judged. The caller's budget may read the clock; this does not.
    pub fn judge_slice(&mut self, mut more: impl FnMut(usize) -> bool) -> usize {
        let Some(mut round) = self.round.take() else {
            return 0;
        };
        let now = round.now_ms;
        let (mut series, mut services) = (0, 0);
        while more(series) {
            let Some(service) = round.next(&self.aggregator) else {
                tracing::debug!(
                    services = round.handed(),
                    swept = round.sweeps(),
                    series = self.aggregator.series_count(),
                    timers = self.schedule.timers(),
                    "evaluated"
                );
                return services;
            };
            series += self.judge_service(&service, now).max(1);
            services += 1;
        }
        self.round = Some(round);
        services
    }

    /// Expires and judges `service`, tells the world what changed and sets
    /// its next timer; returns its series.
    fn judge_service(&mut self, service: &str, now: u64) -> usize {
        self.aggregator.expire_service(service, now);
        let transitions = self.judge.evaluate_service(&self.aggregator, service, now);
        self.revision += transitions.len() as u64;
        for t in &transitions {
            self.publish(t, now);
        }
        self.history
            .record_service(&self.aggregator, &self.judge, service, &transitions, now);
        if let Some(otlp) = &self.otlp {
            otlp.record_service(&self.aggregator, &self.judge, service, &transitions, now);
        }
        let wake = self.judge.wake_ms(&self.aggregator, service, now);
        self.schedule.set_wake(service, wake);
        self.aggregator.service_series(service)
    }

    /// Logs a transition and sends it to alert-stream subscribers, unless
    /// the alert is acknowledged and still pending or firing: an operator
    /// who acknowledged it is not told again (a resolution is still sent).
    fn publish(&self, t: &Transition, now: u64) {
        let k = &t.key;
        let alert = t.alert();
        let acknowledged = self.judge.is_acknowledged(k);
        let message = match alert.state {
            AlertState::Firing => "regression alert firing",
            AlertState::Resolved => "regression alert resolved",
            AlertState::Pending => "regression alert pending",
            AlertState::Inactive => "regression alert back to inactive",
        };
        tracing::info!(
            // Names come from senders: `?` escapes control characters (a
            // version with a newline or an ANSI escape cannot forge a line).
            service = ?k.endpoint.service,
            endpoint = ?k.endpoint.endpoint,
            dimensions = ?k.endpoint.dims,
            candidate = ?k.candidate,
            baseline = ?k.baseline,
            rule = %k.rule,
            severity = %t.severity,
            from = t.previous.as_str(),
            to = alert.state.as_str(),
            resolution = alert.resolution.map_or("", |r| r.as_str()),
            detail = ?t.judgement.result.evidence.detail,
            acknowledged,
            "{message}"
        );
        if acknowledged && matches!(alert.state, AlertState::Pending | AlertState::Firing) {
            return;
        }
        // No subscriber is fine: the event is also in the log and the API.
        let _ = self.alerts.send(AlertEvent {
            time_ms: now,
            key: t.key.clone(),
            severity: t.severity,
            previous: t.previous,
            judgement: t.judgement.clone(),
            acknowledged,
        });
    }
}

/// The task: its [`State`], its channels and its snapshots.
pub struct Pipeline {
    state: State,
    ingest: mpsc::Receiver<Vec<Sample>>,
    queries: mpsc::Receiver<Job>,
    /// To build an empty history when restoring.
    history_limits: HistoryLimits,
    /// Writes snapshots when `snapshot.dir` is set.
    snapshots: Option<Snapshotter>,
    /// The snapshot being taken in slices, if one is.
    snapshot: Option<SnapshotInProgress>,
    snapshot_interval: Duration,
    /// `snapshot.max_bytes`: the largest snapshot file restored.
    snapshot_max_bytes: u64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// The task's state and the handle to reach it.
    /// `stopping` is cancelled when the servers stop (see [`PipelineHandle::stopping`]).
    pub fn new(
        config: &Config,
        telemetry: Arc<Telemetry>,
        otlp: Option<OtlpEmitter>,
        stopping: CancellationToken,
    ) -> (Self, PipelineHandle) {
        let (ingest_tx, ingest) = mpsc::channel(config.receiver.queue_batches);
        let (query_tx, queries) = mpsc::channel(QUERY_QUEUE);
        let history_limits = HistoryLimits::from_config(&config.admin);
        let state = State::new(config, telemetry.clone(), otlp);
        let alerts = state.alerts.clone();
        let pipeline = Self {
            state,
            ingest,
            queries,
            history_limits,
            snapshots: config.snapshot.dir.clone().map(Snapshotter::new),
            snapshot: None,
            snapshot_interval: config.snapshot.interval,
            snapshot_max_bytes: config.snapshot.max_bytes,
        };
        let handle = PipelineHandle {
            ingest: ingest_tx,
            queries: query_tx,
            alerts,
            telemetry,
            stopping,
        };
        (pipeline, handle)
    }

    /// Runs until `shutdown`, then drains what the receivers already handed
    /// over, judges once more and flushes the OTLP push.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.restore().await;
        let mut tick = tokio::time::interval(self.state.evaluation_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut snapshot_tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.snapshot_interval,
            self.snapshot_interval,
        );
        snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(batch) = self.ingest.recv() => self.state.record(&batch, now_ms()),
                Some(job) = self.queries.recv() => job(&mut self.state, now_ms()),
                _ = tick.tick(), if !self.state.evaluating() => {
                    self.state.begin(now_ms(), false);
                }
                // Ready at once while a round is under way: one slice per
                // turn, batches and questions taking turns with it.
                () = std::future::ready(()), if self.state.evaluating() => {
                    let started = std::time::Instant::now();
                    self.state.judge_slice(|series| {
                        series < SLICE_SERIES && started.elapsed() < SLICE_TIME
                    });
                }
                _ = snapshot_tick.tick(), if self.snapshots.is_some() => self.begin_snapshot(),
                room = SnapshotInProgress::room(self.snapshot.as_ref()) => self.snapshot_slice(room),
                () = shutdown.cancelled() => break,
            }
        }
        // Accepted data is never thrown away unjudged.
        self.ingest.close();
        while let Some(batch) = self.ingest.recv().await {
            self.state.record(&batch, now_ms());
        }
        self.state.evaluate(now_ms());
        if let Some(s) = &mut self.snapshots {
            let state = &mut self.state;
            let (agg, judge, history) = (&mut state.aggregator, &state.judge, &state.history);
            s.finish(self.snapshot.take(), agg, judge, history, now_ms())
                .await;
        }
        if let Some(otlp) = &self.state.otlp {
            otlp.shutdown();
        }
    }

    /// Takes over the state of the snapshot, if there is a usable one.
    /// Reading the file happens on a blocking thread; nothing else runs yet.
    async fn restore(&mut self) {
        let Some(dir) = self.snapshots.as_ref().map(|s| s.dir().to_owned()) else {
            return;
        };
        let s = &self.state;
        let config = (
            s.aggregator.config().clone(),
            s.judge.config().clone(),
            s.aggregator.limits(),
        );
        let bounds = s.bounds_ms.clone();
        let telemetry = s.telemetry.clone();
        let limits = self.history_limits;
        let max_bytes = self.snapshot_max_bytes;
        // The state is built on the blocking thread and moved back whole.
        let restored = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let mut aggregator =
                Aggregator::new(config.0, bounds, telemetry, now).with_limits(config.2);
            let mut judge = Judge::new(config.1);
            let mut history = History::new(limits);
            snapshots::restore_at_start(
                &dir,
                max_bytes,
                &mut aggregator,
                &mut judge,
                &mut history,
                now,
            );
            (aggregator, judge, history)
        })
        .await;
        match restored {
            Ok((aggregator, judge, history)) => {
                self.state.aggregator = aggregator;
                self.state.judge = judge;
                self.state.history = history;
            }
            Err(e) => {
                tracing::error!(error = %e, "snapshot restore ended abnormally: starting empty")
            }
        }
    }

    /// Starts a snapshot, unless the previous one is still being taken.
    fn begin_snapshot(&mut self) {
        let Some(s) = &mut self.snapshots else {
            return;
        };
        if self.snapshot.is_some() {
            s.skip();
            return;
        }
        self.snapshot = s.begin(&mut self.state.aggregator, now_ms());
    }

    /// Encodes the next slice of the snapshot in progress; `room` is false
    /// when its writer is gone (the snapshot is given up).
    fn snapshot_slice(&mut self, room: bool) {
        let Some(mut snapshot) = self.snapshot.take() else {
            return;
        };
        let s = &mut self.state;
        if !room {
            snapshot.abort(&mut s.aggregator);
            return;
        }
        let step = snapshot.step(
            &mut s.aggregator,
            &s.judge,
            &s.history,
            SNAPSHOT_SLICE_SERIES,
        );
        if step == Step::Continue {
            self.snapshot = Some(snapshot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{EndpointKey, Outcome};
    use crate::judge::{Resolution, Rule};
    use crate::testing::{endpoint, request, Rng};

    const T0: u64 = 1_763_658_000_000;

    fn state_of(yaml: &str) -> State {
        let config = Config::from_yaml(yaml).unwrap();
        let telemetry = Arc::new(Telemetry::default());
        Pipeline::new(&config, telemetry, None, CancellationToken::new())
            .0
            .state
    }

    fn endpoint_of(service: &str) -> EndpointKey {
        EndpointKey {
            service: service.into(),
            endpoint: "/p".into(),
            dims: Vec::new(),
            phase: crate::phase::Phase::Request,
            input: None,
        }
    }

    fn req(service: &str, path: &str, version: &str, ms: f64, outcome: Outcome) -> Sample {
        let key = EndpointKey {
            endpoint: path.into(),
            ..endpoint_of(service)
        };
        Sample::request(key, version, Duration::from_secs_f64(ms / 1e3), outcome, 0)
    }

    /// One tick as the task runs it, in slices of `budget` series;
    /// returns the services judged.
    fn tick(state: &mut State, now: u64, budget: usize) -> usize {
        state.begin(now, false);
        let mut judged = 0;
        for _ in 0..100_000 {
            if !state.evaluating() {
                break;
            }
            judged += state.judge_slice(|series| series < budget);
        }
        assert!(!state.evaluating(), "the round ends");
        judged
    }

    fn firing(state: &State, service: &str) -> Vec<(String, Rule)> {
        let mut v: Vec<_> = state
            .judge
            .judgements_of(service)
            .filter(|(_, j)| j.firing().is_some())
            .map(|(k, _)| (k.candidate.clone(), k.rule))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_touched_service_is_judged_at_the_next_tick_and_only_it() {
        let mut state = state_of("judge:\n  alerts:\n    hold: 0s\n");
        let mut t = T0;
        for _ in 0..30 {
            for service in ["a", "b"] {
                state.record(&vec![req(service, "/p", "v1", 40.0, Outcome::Ok); 5], t);
            }
            t += 1_000;
            assert_eq!(tick(&mut state, t, SLICE_SERIES), 2, "both took samples");
        }
        // T0 + 30 s opened a slot; 31 s is within it. Nothing new, no timer:
        // nothing to judge.
        t += 1_000;
        assert_eq!(tick(&mut state, t, SLICE_SERIES), 0);
        // A slow version of a: judged at the next tick, b left alone.
        state.record(&vec![req("a", "/p", "v2", 900.0, Outcome::Ok); 30], t);
        t += 1_000;
        assert_eq!(tick(&mut state, t, SLICE_SERIES), 1);
        assert!(
            firing(&state, "a").contains(&("v2".into(), Rule::Sla)),
            "{:?}",
            firing(&state, "a")
        );
        assert!(firing(&state, "b").is_empty());
        // A new slot: every service again (their windows moved).
        assert_eq!(t, T0 + 32_000);
        for _ in 0..7 {
            t += 1_000;
            assert_eq!(tick(&mut state, t, SLICE_SERIES), 0);
        }
        t += 1_000;
        assert_eq!(t, T0 + 40_000);
        assert_eq!(tick(&mut state, t, SLICE_SERIES), 2);
    }

    #[test]
    fn a_quiet_service_resolves_and_expires_on_time() {
        let mut state = state_of("judge:\n  alerts:\n    hold: 0s\n");
        let mut t = T0;
        for _ in 0..30 {
            state.record(&vec![req("a", "/p", "v1", 40.0, Outcome::Ok); 5], t);
            state.record(&vec![req("a", "/p", "v2", 900.0, Outcome::Ok); 2], t);
            t += 1_000;
            tick(&mut state, t, SLICE_SERIES);
        }
        assert!(firing(&state, "a").contains(&("v2".into(), Rule::Sla)));
        let last = t - 1_000;
        let mut alerts = state.alerts.subscribe();
        // Not a sample more: the alerts resolve at the first tick at or past
        // no_traffic_resolve (180 s) after the last request, the series go
        // at the first past their idle timeout (1800 s), and in between a
        // service is judged only at a new slot (every 10 ticks) or a timer.
        let mut judged = 0;
        let mut expired_at = None;
        for _ in 0..1_900 {
            t += 1_000;
            judged += tick(&mut state, t, SLICE_SERIES);
            if expired_at.is_none() && state.aggregator.series_count() == 0 {
                expired_at = Some(t);
            }
        }
        let mut resolved = Vec::new();
        while let Ok(event) = alerts.try_recv() {
            resolved.push(event);
        }
        let no_traffic: Vec<_> = resolved
            .iter()
            .filter(|e| e.judgement.alert(e.severity).resolution == Some(Resolution::NoTraffic))
            .collect();
        assert!(!no_traffic.is_empty(), "{resolved:?}");
        for event in no_traffic {
            assert_eq!(event.time_ms, last + 180_000, "{event:?}");
        }
        assert_eq!(expired_at, Some(last + 1_800_000));
        assert_eq!(
            state.judge.judgements().count(),
            0,
            "retired with the series"
        );
        assert!(
            judged <= 1_900 / 10 + 10,
            "judged {judged} times in 1900 quiet ticks"
        );
    }

    #[test]
    fn a_slice_stops_at_its_budget() {
        let mut state = state_of("");
        let mut batch = Vec::new();
        for s in 0..10 {
            for e in 0..50 {
                batch.push(req(
                    &format!("s{s}"),
                    &format!("/e{e}"),
                    "v1",
                    40.0,
                    Outcome::Ok,
                ));
            }
        }
        state.record(&batch, T0);
        assert_eq!(state.aggregator.series_count(), 500);
        state.begin(T0, false);
        // 50 series a service: the third reaches 120.
        assert_eq!(state.judge_slice(|series| series < 120), 3);
        assert!(state.evaluating());
        assert_eq!(state.judge_slice(|series| series < 1), 1);
        assert_eq!(state.judge_slice(|_| false), 0, "asked before each service");
        assert_eq!(state.judge_slice(|_| true), 6);
        assert!(!state.evaluating());
        assert_eq!(state.judge_slice(|_| true), 0, "no round, no work");
    }

    /// What a state decided: every judgement, every endpoint's baseline,
    /// the series kept, the alert transitions counted.
    type Decided<'a> = (
        std::collections::BTreeMap<&'a AlertKey, &'a Judgement>,
        Vec<(EndpointKey, Option<&'a str>)>,
        usize,
        u64,
    );

    fn verdicts(state: &State) -> Decided<'_> {
        let mut baselines: Vec<_> = state
            .aggregator
            .endpoints()
            .map(|(e, _)| (e.clone(), state.judge.baseline(e)))
            .collect();
        baselines.sort();
        (
            state.judge.judgements().collect(),
            baselines,
            state.aggregator.series_count(),
            state.revision,
        )
    }

    /// Equal, or equal as text (a figure may be NaN, unequal to itself).
    fn assert_same(a: &State, b: &State, context: &str) {
        let (a, b) = (verdicts(a), verdicts(b));
        if a != b {
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{context}");
        }
    }

    #[test]
    fn a_pinned_baseline_judges_its_service_at_once_and_no_other() {
        let mut state = state_of("");
        let mut t = T0;
        for service in ["a", "b"] {
            for v in ["v1", "v2"] {
                state.record(&vec![req(service, "/p", v, 40.0, Outcome::Ok); 50], t);
            }
        }
        t += 1_000;
        tick(&mut state, t, SLICE_SERIES);
        assert_eq!(state.judge.baseline(&endpoint_of("a")), Some("v1"));
        // b takes samples; a is pinned to v2 before the next tick.
        state.record(&vec![req("b", "/p", "v2", 40.0, Outcome::Ok); 5], t);
        let judged_b: Vec<_> = state
            .judge
            .judgements_of("b")
            .map(|(k, j)| (k.clone(), j.clone()))
            .collect();
        state.set_baseline("a", None, "v2", t).unwrap();
        assert_eq!(state.judge.baseline(&endpoint_of("a")), Some("v2"));
        assert!(
            state
                .judge
                .judgements_of("a")
                .all(|(k, _)| k.baseline == "v2"),
            "a judged against its pin"
        );
        let now_b: Vec<_> = state
            .judge
            .judgements_of("b")
            .map(|(k, j)| (k.clone(), j.clone()))
            .collect();
        assert_eq!(now_b, judged_b, "b is not judged before its tick");
        assert_eq!(state.aggregator.take_touched(), vec!["b".to_owned()]);
        assert!(matches!(
            state.set_baseline("", None, "v2", t),
            Err(ActionError::Missing("service"))
        ));
    }

    #[test]
    fn incremental_verdicts_equal_a_full_evaluation_on_a_random_workload() {
        // Short times, so windows, horizons, epochs, holds, quiet versions,
        // promotions and idle expiry all happen within the run.
        let yaml = "aggregate:\n  slot: 5s\n  window: 30s\n  baseline_horizon: 90s\n  series_idle_timeout: 100s\n\
                    judge:\n  alerts:\n    hold: 3s\n    resolve_hold: 7s\n    no_traffic_resolve: 40s\n\
                    \x20 promotion:\n    after: 30s\n  sequential:\n    epoch: 90s\n";
        for seed in [1, 2] {
            let mut full = state_of(yaml);
            let mut incremental = state_of(yaml);
            let mut rng = Rng(seed);
            let mut t = T0 + 777;
            let mut events = (full.alerts.subscribe(), incremental.alerts.subscribe());
            let (mut judged, mut expired) = (0, false);
            for i in 0..420u64 {
                let mut batch = Vec::new();
                for s in 0..5u64 {
                    // Each service busy in phases, quiet in others (s4
                    // for good after a while: its series expire).
                    if (i / 60 + s) % 4 == 3 || rng.below(3) == 0 || (s == 4 && i > 150) {
                        continue;
                    }
                    for e in 0..=(s % 3) {
                        for v in 0..3u64 {
                            // v0 always, v1 and v2 in turns (long enough
                            // to expire), v2 slow.
                            if v > 0 && (i / 120 + v) % 3 == 0 {
                                continue;
                            }
                            let n = 1 + rng.below(4);
                            for _ in 0..n {
                                let base = if v == 2 { 300.0 } else { 60.0 };
                                let ms = base + rng.below(40) as f64;
                                let outcome = if rng.below(30) == 0 {
                                    Outcome::Timeout
                                } else {
                                    Outcome::Ok
                                };
                                batch.push(req(
                                    &format!("s{s}"),
                                    &format!("/e{e}"),
                                    &format!("v{v}"),
                                    ms,
                                    outcome,
                                ));
                            }
                        }
                    }
                }
                let before = full.aggregator.series_count();
                full.record(&batch, t);
                incremental.record(&batch, t);
                if i == 300 {
                    for s in [&mut full, &mut incremental] {
                        s.judge.set_baseline("s1", None, "v1").unwrap();
                    }
                }
                t += 1_000;
                full.evaluate(t);
                judged += tick(&mut incremental, t, 7);
                assert_same(&full, &incremental, &format!("seed {seed}, tick {i}"));
                expired |= full.aggregator.series_count() < before;
                let mut a = Vec::new();
                let mut b = Vec::new();
                while let Ok(e) = events.0.try_recv() {
                    a.push(format!("{e:?}"));
                }
                while let Ok(e) = events.1.try_recv() {
                    b.push(format!("{e:?}"));
                }
                a.sort();
                b.sort();
                assert_eq!(a, b, "seed {seed}, tick {i}");
            }
            assert!(full.revision > 0, "alerts moved");
            assert!(expired, "series expired");
            assert!(
                judged < 420 * 5,
                "seed {seed}: {judged} services judged, a full evaluation judges 2100"
            );
        }
    }

    #[tokio::test]
    async fn a_full_aggregation_queue_refuses_and_counts() {
        let config = Config::from_yaml("receiver:\n  queue_batches: 2\n").unwrap();
        let telemetry = Arc::new(Telemetry::default());
        // The pipeline task is not running: nothing drains the queue.
        let (_pipeline, handle) =
            Pipeline::new(&config, telemetry.clone(), None, CancellationToken::new());
        for _ in 0..2 {
            handle
                .try_ingest(vec![request("/a", "v1", 20.0, Outcome::Ok); 3])
                .unwrap();
        }
        let refused = handle.try_ingest(vec![request("/a", "v1", 20.0, Outcome::Ok); 5]);
        assert!(matches!(refused, Err(IngestError::Full)), "{refused:?}");
        assert_eq!(telemetry.refused_total(RefusedReason::QueueFull), 5);
        assert_eq!(
            telemetry.accepted_total(),
            0,
            "counted by the receiver, not here"
        );
    }

    #[tokio::test]
    async fn questions_are_closures_answered_on_the_task() {
        let config = Config::from_yaml("judge:\n  alerts:\n    hold: 0s\n").unwrap();
        let (pipeline, handle) = Pipeline::new(
            &config,
            Arc::new(Telemetry::default()),
            None,
            CancellationToken::new(),
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(pipeline.run(stop.clone()));
        handle
            .try_ingest(vec![request("/a", "v1", 20.0, Outcome::Ok); 60])
            .unwrap();
        handle
            .try_ingest(vec![request("/a", "v2", 900.0, Outcome::Ok); 30])
            .unwrap();
        let mut alerts = handle.subscribe_alerts();
        for _ in 0..100 {
            let series = handle.ask(|s, _| s.aggregator.series_count()).await;
            if series.unwrap() == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let firing = handle
            .ask(|state, now| {
                state.evaluate(now);
                state
                    .judge
                    .judgements()
                    .filter(|(_, j)| j.firing().is_some())
                    .map(|(k, _)| (k.candidate.clone(), k.rule))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap();
        assert!(firing.contains(&("v2".to_owned(), Rule::Sla)), "{firing:?}");
        let event = alerts.recv().await.unwrap();
        assert_eq!(event.key.endpoint, endpoint("/a"));
        assert_eq!(event.key.candidate, "v2");
        stop.cancel();
        task.await.unwrap();
    }
}
