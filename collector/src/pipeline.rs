//! The pipeline task: the one owner of the aggregator and the judge.
//!
//! Receivers send batches of samples over a bounded channel; a tick drives
//! expiry and judgement; the query API and `/metrics` ask questions over a
//! second channel and get answers built from live state. All of it is one
//! `select!` loop, so no lock guards the hot path and nothing else ever sees
//! the state half-updated. Alert transitions are logged, pushed to OTLP and
//! broadcast to alert-stream subscribers; each tick also adds a point per
//! series to the dashboard's bounded history. The loop never blocks on a
//! subscriber or an exporter. With `snapshot.dir` set, the task restores the
//! state from its snapshot before taking any batch, encodes a snapshot every
//! `snapshot.interval` (the file is written on a blocking thread, see
//! [`crate::snapshot`]) and a last one after the final drain.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use modelgate_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::aggregate::Aggregator;
use crate::config::{Config, JudgeOverrides};
use crate::emit::history::{History, HistoryLimits, HistoryView};
use crate::emit::otlp::OtlpEmitter;
use crate::emit::prometheus::MetricsSnapshot;
use crate::emit::{api, snapshot};
use crate::extract::{Sample, SampleKind};
use crate::judge::{ActionError, AlertState, Judge, Transition};
use crate::snapshot::{self as snapshots, Snapshotter};
use crate::telemetry::{RefusedReason, Telemetry};

/// Alert events buffered for slow stream subscribers before they skip.
const ALERT_BUFFER: usize = 1024;

/// Questions waiting for the pipeline task.
const QUERY_QUEUE: usize = 64;

/// The wall clock, in unix milliseconds: read here, in the shell, and passed
/// to the stages as a parameter.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A question for the pipeline task.
#[derive(Debug)]
enum Query {
    Versions(
        pb::ListVersionsRequest,
        oneshot::Sender<pb::ListVersionsResponse>,
    ),
    Verdict(
        pb::GetVerdictRequest,
        JudgeOverrides,
        oneshot::Sender<pb::Verdict>,
    ),
    Regressions(
        pb::ListRegressionsRequest,
        oneshot::Sender<pb::ListRegressionsResponse>,
    ),
    Metrics(oneshot::Sender<MetricsSnapshot>),
    /// The dashboard's history of one service (all when empty).
    History(String, oneshot::Sender<HistoryView>),
    SetBaseline(
        pb::SetBaselineRequest,
        oneshot::Sender<Result<pb::SetBaselineResponse, ActionError>>,
    ),
    Acknowledge(
        pb::AcknowledgeAlertRequest,
        oneshot::Sender<Result<pb::AcknowledgeAlertResponse, ActionError>>,
    ),
    Ping(oneshot::Sender<()>),
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
    queries: mpsc::Sender<Query>,
    alerts: broadcast::Sender<pb::AlertEvent>,
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

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Query,
    ) -> Result<T, QueryError> {
        let (tx, rx) = oneshot::channel();
        self.queries.send(make(tx)).await.map_err(|_| QueryError)?;
        rx.await.map_err(|_| QueryError)
    }

    /// See [`api::versions`].
    pub async fn versions(
        &self,
        r: pb::ListVersionsRequest,
    ) -> Result<pb::ListVersionsResponse, QueryError> {
        self.ask(|tx| Query::Versions(r, tx)).await
    }

    /// See [`api::verdict`]; `overrides` were checked by the caller
    /// ([`api::overrides`]).
    pub async fn verdict(
        &self,
        r: pb::GetVerdictRequest,
        overrides: JudgeOverrides,
    ) -> Result<pb::Verdict, QueryError> {
        self.ask(|tx| Query::Verdict(r, overrides, tx)).await
    }

    /// See [`api::regressions`].
    pub async fn regressions(
        &self,
        r: pb::ListRegressionsRequest,
    ) -> Result<pb::ListRegressionsResponse, QueryError> {
        self.ask(|tx| Query::Regressions(r, tx)).await
    }

    /// What `/metrics` shows.
    pub async fn metrics(&self) -> Result<MetricsSnapshot, QueryError> {
        self.ask(Query::Metrics).await
    }

    /// See [`History::view`]: the history of `service` (every service when
    /// empty) for the dashboard.
    pub async fn history(&self, service: String) -> Result<HistoryView, QueryError> {
        self.ask(|tx| Query::History(service, tx)).await
    }

    /// Pins a baseline ([`Judge::set_baseline`]) and judges at once, so
    /// the answer (the endpoints now known under that baseline) and every
    /// later question already see it. Callers check authorization first.
    pub async fn set_baseline(
        &self,
        r: pb::SetBaselineRequest,
    ) -> Result<Result<pb::SetBaselineResponse, ActionError>, QueryError> {
        self.ask(|tx| Query::SetBaseline(r, tx)).await
    }

    /// Acknowledges an alert ([`Judge::acknowledge`]). Callers check
    /// authorization first.
    pub async fn acknowledge(
        &self,
        r: pb::AcknowledgeAlertRequest,
    ) -> Result<Result<pb::AcknowledgeAlertResponse, ActionError>, QueryError> {
        self.ask(|tx| Query::Acknowledge(r, tx)).await
    }

    /// Answers once the pipeline task is running and keeping up with questions.
    pub async fn ping(&self) -> Result<(), QueryError> {
        self.ask(Query::Ping).await
    }

    /// Alert events from now on.
    pub fn subscribe_alerts(&self) -> broadcast::Receiver<pb::AlertEvent> {
        self.alerts.subscribe()
    }

    /// Cancelled when the servers begin to stop.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }
}

/// The state the task owns.
pub struct Pipeline {
    aggregator: Aggregator,
    judge: Judge,
    /// What the dashboard charts: recorded after each judgement.
    history: History,
    otlp: Option<OtlpEmitter>,
    telemetry: Arc<Telemetry>,
    alerts: broadcast::Sender<pb::AlertEvent>,
    bounds_ms: Vec<f64>,
    evaluation_interval: Duration,
    window_ms: u64,
    ingest: mpsc::Receiver<Vec<Sample>>,
    queries: mpsc::Receiver<Query>,
    /// To build an empty history when restoring.
    history_limits: HistoryLimits,
    /// Writes snapshots when `snapshot.dir` is set.
    snapshots: Option<Snapshotter>,
    snapshot_interval: Duration,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("series", &self.aggregator.series_count())
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
        let now = now_ms();
        let window_ms = config.aggregate.window.as_millis() as u64;
        let pipeline = Self {
            aggregator: Aggregator::new(
                config.aggregate.clone(),
                config.emit.histogram_buckets_ms.clone(),
                telemetry.clone(),
                now,
            ),
            judge: Judge::new(config.judge.clone(), window_ms),
            history: History::new(HistoryLimits::from_config(&config.admin)),
            otlp,
            telemetry: telemetry.clone(),
            alerts: alerts.clone(),
            bounds_ms: config.emit.histogram_buckets_ms.clone(),
            evaluation_interval: config.judge.evaluation_interval,
            window_ms,
            ingest,
            queries,
            history_limits: HistoryLimits::from_config(&config.admin),
            snapshots: config.snapshot.dir.clone().map(Snapshotter::new),
            snapshot_interval: config.snapshot.interval,
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
        let mut tick = tokio::time::interval(self.evaluation_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut snapshot_tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.snapshot_interval,
            self.snapshot_interval,
        );
        snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(batch) = self.ingest.recv() => self.record(&batch),
                Some(query) = self.queries.recv() => self.answer(query),
                _ = tick.tick() => self.evaluate(now_ms()),
                _ = snapshot_tick.tick(), if self.snapshots.is_some() => self.snapshot(),
                () = shutdown.cancelled() => break,
            }
        }
        // Accepted data is never thrown away unjudged.
        self.ingest.close();
        while let Some(batch) = self.ingest.recv().await {
            self.record(&batch);
        }
        self.evaluate(now_ms());
        if self.snapshots.is_some() {
            if let Some((bytes, took)) = self.encode() {
                if let Some(s) = &mut self.snapshots {
                    s.finish(bytes, took).await;
                }
            }
        }
        if let Some(otlp) = &self.otlp {
            otlp.shutdown();
        }
    }

    /// Takes over the state of the snapshot, if there is a usable one.
    /// Reading the file happens on a blocking thread; nothing else runs yet.
    async fn restore(&mut self) {
        let Some(dir) = self.snapshots.as_ref().map(|s| s.dir().to_owned()) else {
            return;
        };
        let config = (
            self.aggregator.config().clone(),
            self.judge.config().clone(),
        );
        let bounds = self.bounds_ms.clone();
        let telemetry = self.telemetry.clone();
        let window_ms = self.window_ms;
        let limits = self.history_limits;
        // The state is built on the blocking thread and moved back whole.
        let restored = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let mut aggregator = Aggregator::new(config.0, bounds, telemetry, now);
            let mut judge = Judge::new(config.1, window_ms);
            let mut history = History::new(limits);
            snapshots::restore_at_start(&dir, &mut aggregator, &mut judge, &mut history, now);
            (aggregator, judge, history)
        })
        .await;
        match restored {
            Ok((aggregator, judge, history)) => {
                self.aggregator = aggregator;
                self.judge = judge;
                self.history = history;
            }
            Err(e) => {
                tracing::error!(error = %e, "snapshot restore ended abnormally: starting empty")
            }
        }
    }

    /// Encodes the state; `None` (logged) when it cannot be.
    fn encode(&self) -> Option<(Vec<u8>, Duration)> {
        let started = std::time::Instant::now();
        match snapshots::encode(&self.aggregator, &self.judge, &self.history, now_ms()) {
            Ok(bytes) => Some((bytes, started.elapsed())),
            Err(e) => {
                tracing::error!("{e}");
                None
            }
        }
    }

    /// Encodes the state here (the task owns it) and hands the bytes to a
    /// blocking thread, unless the previous write is still running.
    fn snapshot(&mut self) {
        if !self.snapshots.as_mut().is_some_and(Snapshotter::ready) {
            return;
        }
        if let Some((bytes, took)) = self.encode() {
            if let Some(s) = &mut self.snapshots {
                s.spawn_write(bytes, took);
            }
        }
    }

    fn record(&mut self, batch: &[Sample]) {
        self.aggregator.record(batch, now_ms());
        if let Some(otlp) = &self.otlp {
            for sample in batch {
                if let SampleKind::Request { duration, outcome } = sample.kind {
                    otlp.record_request(&sample.series, duration.as_secs_f64(), outcome);
                }
            }
        }
    }

    fn evaluate(&mut self, now: u64) {
        let started = std::time::Instant::now();
        self.aggregator.expire(now);
        let transitions = self.judge.evaluate(&self.aggregator, now);
        tracing::debug!(
            series = self.aggregator.series_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "evaluated"
        );
        for t in &transitions {
            self.publish(t, now, self.judge.is_acknowledged(&t.key));
        }
        self.history.record(
            &self.aggregator,
            &self.judge,
            &transitions,
            self.evaluation_interval.as_millis() as u64,
            now,
        );
        if let Some(otlp) = &self.otlp {
            for (key, judgement) in self.judge.judgements() {
                let fired_now = transitions
                    .iter()
                    .any(|t| t.key == *key && t.judgement.alert.state == AlertState::Firing);
                otlp.record_judgement(key, judgement, fired_now);
            }
            for (endpoint, versions) in self.aggregator.endpoints() {
                for (version, series) in versions.iter() {
                    let w = self.aggregator.window(series, now);
                    otlp.record_db_calls(endpoint, version, w.db_calls_per_request());
                }
            }
        }
    }

    /// Logs a transition and sends it to alert-stream subscribers, unless
    /// the alert is `acknowledged` and still pending or firing: an operator
    /// who acknowledged it is not told again (a resolution is still sent).
    fn publish(&self, t: &Transition, now: u64, acknowledged: bool) {
        let k = &t.key;
        let e = &t.judgement.result.evidence;
        let state = t.judgement.alert.state;
        let message = match state {
            AlertState::Firing => "regression alert firing",
            AlertState::Resolved => "regression alert resolved",
            AlertState::Pending => "regression alert pending",
            AlertState::Inactive => "regression alert back to inactive",
        };
        tracing::info!(
            service = %k.endpoint.service,
            endpoint = %k.endpoint.endpoint,
            candidate = %k.candidate,
            baseline = %k.baseline,
            rule = %k.rule,
            from = t.previous.as_str(),
            to = state.as_str(),
            detail = %e.detail,
            acknowledged,
            "{message}"
        );
        if acknowledged && matches!(state, AlertState::Pending | AlertState::Firing) {
            return;
        }
        // No subscriber is fine: the event is also in the log and the API.
        let _ = self.alerts.send(pb::AlertEvent {
            time_unix_ms: now as i64,
            previous_state: api::alert_state(t.previous) as i32,
            regression: Some(api::regression(k, &t.judgement, acknowledged)),
        });
    }

    fn answer(&mut self, query: Query) {
        let now = now_ms();
        // A dropped receiver means the asker gave up; nothing to do.
        match query {
            Query::Versions(r, tx) => {
                let _ = tx.send(api::versions(&self.aggregator, &self.judge, &r, now));
            }
            Query::Verdict(r, overrides, tx) => {
                let _ = tx.send(api::verdict(
                    &self.aggregator,
                    &self.judge,
                    &r,
                    &overrides,
                    now,
                ));
            }
            Query::Regressions(r, tx) => {
                let _ = tx.send(api::regressions(&self.judge, &r));
            }
            Query::Metrics(tx) => {
                let _ = tx.send(snapshot(
                    &self.aggregator,
                    &self.judge,
                    &self.telemetry,
                    &self.bounds_ms,
                    now,
                ));
            }
            Query::History(service, tx) => {
                let _ = tx.send(self.history.view(
                    &self.judge,
                    &service,
                    self.evaluation_interval.as_millis() as u64,
                    self.window_ms,
                    now,
                ));
            }
            Query::Ping(tx) => {
                let _ = tx.send(());
            }
            Query::SetBaseline(r, tx) => {
                let endpoint = (!r.endpoint.is_empty()).then_some(r.endpoint.as_str());
                let result = self.judge.set_baseline(&r.service, endpoint, &r.version);
                let answer = result.map(|()| {
                    self.evaluate(now);
                    let view = api::versions(
                        &self.aggregator,
                        &self.judge,
                        &pb::ListVersionsRequest {
                            service: r.service.clone(),
                            endpoint: r.endpoint.clone(),
                        },
                        now,
                    );
                    pb::SetBaselineResponse {
                        endpoints: view.endpoints,
                    }
                });
                let _ = tx.send(answer);
            }
            Query::Acknowledge(r, tx) => {
                let answer = self
                    .judge
                    .acknowledge(&r.service, &r.endpoint, &r.candidate_version, &r.rule)
                    .map(|alerts| pb::AcknowledgeAlertResponse {
                        regressions: alerts
                            .into_iter()
                            .map(|(k, j)| api::regression(k, j, true))
                            .collect(),
                    });
                let _ = tx.send(answer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::Outcome;
    use crate::testing::request;

    fn ask<T>(pipeline: &mut Pipeline, make: impl FnOnce(oneshot::Sender<T>) -> Query) -> T {
        let (tx, mut rx) = oneshot::channel();
        pipeline.answer(make(tx));
        rx.try_recv().unwrap()
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
    async fn an_acknowledged_alert_is_not_announced_again() {
        let config = Config::from_yaml("judge:\n  alerts:\n    hold: 0s\n").unwrap();
        let (mut pipeline, handle) = Pipeline::new(
            &config,
            Arc::new(Telemetry::default()),
            None,
            CancellationToken::new(),
        );
        let mut alerts = handle.subscribe_alerts();
        // v1 carries most traffic: the baseline.
        pipeline.record(&vec![request("/a", "v1", 20.0, Outcome::Ok); 60]);
        pipeline.record(&vec![request("/a", "v2", 900.0, Outcome::Ok); 30]);
        pipeline.evaluate(now_ms());
        let fired = std::iter::from_fn(|| alerts.try_recv().ok())
            .filter_map(|e| e.regression)
            .find(|r| r.candidate_version == "v2" && r.rule == "sla")
            .unwrap();
        assert_eq!(fired.state, pb::AlertState::Firing as i32);
        assert!(!fired.acknowledged);

        let acked = ask(&mut pipeline, |tx| {
            Query::Acknowledge(
                pb::AcknowledgeAlertRequest {
                    service: "lending-api".into(),
                    endpoint: "/a".into(),
                    candidate_version: "v2".into(),
                    rule: "sla".into(),
                },
                tx,
            )
        })
        .unwrap();
        assert!(acked.regressions.iter().all(|r| r.acknowledged));
        let listed = api::regressions(&pipeline.judge, &pb::ListRegressionsRequest::default());
        assert!(listed
            .regressions
            .iter()
            .any(|r| r.rule == "sla" && r.candidate_version == "v2" && r.acknowledged));

        // A new baseline re-judges v2: the old alert resolves (announced),
        // the same alert against the new baseline fires (not announced).
        let answer = ask(&mut pipeline, |tx| {
            Query::SetBaseline(
                pb::SetBaselineRequest {
                    service: "lending-api".into(),
                    endpoint: String::new(),
                    version: "v0".into(),
                },
                tx,
            )
        })
        .unwrap();
        assert_eq!(answer.endpoints[0].baseline_version, "v0");
        let events: Vec<pb::Regression> = std::iter::from_fn(|| alerts.try_recv().ok())
            .filter_map(|e| e.regression)
            .filter(|r| r.candidate_version == "v2" && r.rule == "sla")
            .collect();
        assert!(
            events
                .iter()
                .any(|r| r.baseline_version == "v1" && r.state == pb::AlertState::Resolved as i32),
            "{events:?}"
        );
        assert!(
            !events
                .iter()
                .any(|r| r.state == pb::AlertState::Firing as i32),
            "{events:?}"
        );
        let listed = api::regressions(&pipeline.judge, &pb::ListRegressionsRequest::default());
        assert!(listed.regressions.iter().any(|r| r.rule == "sla"
            && r.candidate_version == "v2"
            && r.baseline_version == "v0"
            && r.acknowledged));
    }
}
