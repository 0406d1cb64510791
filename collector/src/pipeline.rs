//! The pipeline task: the one owner of the aggregator and the judge.
//!
//! Receivers send batches of samples over a bounded channel; a tick drives
//! expiry and judgement; everyone else (the query API, `/metrics`, the
//! dashboard, the operator's writes) sends a closure over the [`State`] on
//! a second channel and gets its answer back ([`PipelineHandle::ask`]). All
//! of it is one `select!` loop, so no lock guards the hot path and nothing
//! else ever sees the state half-updated. Alert transitions are logged,
//! pushed to OTLP and broadcast to alert-stream subscribers as
//! [`AlertEvent`]s; each tick also adds a point per series to the
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
use crate::judge::{AlertKey, AlertState, Judge, Judgement, Severity, Transition};
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
    fn record(&mut self, batch: &[Sample], now_ms: u64) {
        self.aggregator.record(batch, now_ms);
        if let Some(otlp) = &self.otlp {
            for sample in batch {
                if let SampleKind::Request { duration, outcome } = sample.kind {
                    otlp.record_request(&sample.series, duration.as_secs_f64(), outcome);
                }
            }
        }
    }

    /// Expires what is old, judges everything, and tells the world what
    /// changed.
    pub fn evaluate(&mut self, now: u64) {
        let started = std::time::Instant::now();
        self.aggregator.expire(now);
        let transitions = self.judge.evaluate(&self.aggregator, now);
        tracing::debug!(
            series = self.aggregator.series_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "evaluated"
        );
        self.revision += transitions.len() as u64;
        for t in &transitions {
            self.publish(t, now);
        }
        self.history.record(
            &self.aggregator,
            &self.judge,
            &transitions,
            self.evaluation_interval.as_millis() as u64,
            now,
        );
        if let Some(otlp) = &self.otlp {
            otlp.record_evaluation(&self.aggregator, &self.judge, &transitions, now);
        }
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
        let (alerts, _) = broadcast::channel(ALERT_BUFFER);
        let history_limits = HistoryLimits::from_config(&config.admin);
        let state = State {
            aggregator: Aggregator::new(
                config.aggregate.clone(),
                config.emit.histogram_buckets_ms.clone(),
                telemetry.clone(),
                now_ms(),
            )
            .with_limits(InputLimits::of(&config.extract)),
            judge: Judge::new(config.judge.clone()),
            history: History::new(history_limits),
            telemetry: telemetry.clone(),
            bounds_ms: config.emit.histogram_buckets_ms.clone(),
            dimensions: config.extract.dimensions.clone(),
            evaluation_interval: config.judge.evaluation_interval,
            window_ms: config.aggregate.window.as_millis() as u64,
            revision: 0,
            otlp,
            alerts: alerts.clone(),
        };
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
                _ = tick.tick() => self.state.evaluate(now_ms()),
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
    use crate::extract::Outcome;
    use crate::judge::Rule;
    use crate::testing::{endpoint, request};

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
