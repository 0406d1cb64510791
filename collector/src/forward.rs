//! Forward: pass everything received, unchanged, to the next OTLP hop.
//!
//! When `forward.endpoint` is set, every export request a receiver accepts
//! (traces, logs and metrics, over gRPC and HTTP) is also put, as encoded
//! protobuf, on one bounded queue (`forward.queue_items` export requests).
//! One task, [`Forwarder::run`], owns the queue's receiving end and sends
//! the requests one at a time to the downstream over OTLP/gRPC or
//! OTLP/HTTP (binary protobuf), retrying retryable failures with
//! exponential backoff and honouring the downstream's own wait
//! (`google.rpc.RetryInfo` in a gRPC status, `Retry-After` on an HTTP `429`
//! or `503`), as the OTLP specification describes.
//!
//! The bytes sent are the protobuf bytes received (gRPC and OTLP/HTTP
//! protobuf, after gunzip); an OTLP/JSON body is re-encoded from the
//! decoded message (the same data; fields prost does not know are not
//! carried).
//!
//! Receivers take a slot ([`ForwardHandle::reserve`]) before they hand the
//! samples to the pipeline and fill it only once the pipeline took them, so
//! an export is forwarded exactly when it is accepted. A full queue refuses
//! the export and the sender is told to retry (gRPC `UNAVAILABLE` with
//! `RetryInfo`, HTTP `503` with `Retry-After`).
//!
//! This module must never block a receiver, never drop an accepted export
//! while it can still be delivered (only a non-retryable answer, the
//! `forward.max_elapsed` budget or the shutdown deadline end one, and each
//! is counted and logged), and never change what it forwards.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::codec::BytesCodec;
use crate::config::{ForwardConfig, ForwardProtocol};
use crate::signal::Signal;
use crate::telemetry::{DroppedReason, Telemetry};

/// How long a sender refused because the forward queue is full is asked to
/// wait (gRPC `RetryInfo`, HTTP `Retry-After`).
pub const REFUSAL_RETRY_DELAY: Duration = Duration::from_secs(1);

/// One export request waiting for the downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// What it carries.
    pub signal: Signal,
    /// The encoded protobuf request, as it will be sent.
    pub body: Bytes,
}

/// Why an export was not taken for forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// `forward.queue_items` export requests are waiting: retry later.
    #[error("the forward queue is full (forward.queue_items)")]
    Full,
    /// Shutting down: the queue takes nothing more.
    #[error("the forwarder is shutting down")]
    Closed,
}

/// Why forwarding could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ForwardSetupError {
    /// `forward.endpoint` is not a usable URI.
    #[error("forward.endpoint {endpoint:?}: {message}")]
    Endpoint {
        /// The configured value.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("forward: cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Cheap, cloneable access to the forward queue, held by the receivers.
#[derive(Debug, Clone)]
pub struct ForwardHandle {
    queue: mpsc::Sender<Export>,
    telemetry: Arc<Telemetry>,
}

/// A slot in the forward queue, taken before the export is accepted;
/// dropping it unused gives the slot back.
#[derive(Debug)]
pub struct Reservation<'a> {
    permit: mpsc::Permit<'a, Export>,
    telemetry: &'a Telemetry,
}

impl Reservation<'_> {
    /// Queues the accepted export.
    pub fn send(self, signal: Signal, body: Bytes) {
        self.telemetry.forward_queued();
        self.permit.send(Export { signal, body });
    }
}

impl ForwardHandle {
    /// Takes a slot without waiting; a full queue is counted as a refusal.
    pub fn reserve(&self) -> Result<Reservation<'_>, ForwardError> {
        match self.queue.try_reserve() {
            Ok(permit) => Ok(Reservation {
                permit,
                telemetry: &self.telemetry,
            }),
            Err(mpsc::error::TrySendError::Full(())) => {
                self.telemetry.forward_refused();
                Err(ForwardError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(())) => Err(ForwardError::Closed),
        }
    }
}

/// What one attempt to deliver an export came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The downstream took it (a partial success included: retrying cannot
    /// change which items it rejects).
    Delivered,
    /// Worth another attempt, after `after` if the downstream said so.
    Retry {
        /// The downstream's requested wait (`RetryInfo`, `Retry-After`).
        after: Option<Duration>,
        /// For the log.
        reason: String,
    },
    /// Retrying cannot help.
    Reject {
        /// For the log.
        reason: String,
    },
}

/// A downstream OTLP endpoint.
pub trait Downstream: Send + 'static {
    /// One attempt to deliver `export`.
    fn send(&mut self, export: &Export) -> impl Future<Output = Delivery> + Send;
}

/// What an OTLP/gRPC status means for a retry, as the OTLP specification
/// lists the codes; `RESOURCE_EXHAUSTED` is retryable only with `RetryInfo`.
pub fn classify_status(status: &Status) -> Delivery {
    let after = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    let reason = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Ok => Delivery::Delivered,
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Delivery::Retry { after, reason },
        Code::ResourceExhausted if after.is_some() => Delivery::Retry { after, reason },
        _ => Delivery::Reject { reason },
    }
}

/// What an OTLP/HTTP answer means for a retry: `429`, `502`, `503` and
/// `504` are retryable (with `Retry-After` in seconds honoured), any other
/// failure is not.
pub fn classify_http(status: u16, retry_after: Option<&str>) -> Delivery {
    match status {
        200..=299 => Delivery::Delivered,
        429 | 502 | 503 | 504 => Delivery::Retry {
            after: retry_after.and_then(parse_retry_after),
            reason: format!("HTTP {status}"),
        },
        _ => Delivery::Reject {
            reason: format!("HTTP {status}"),
        },
    }
}

/// `Retry-After` as delay-seconds (an HTTP-date is not honoured: the
/// backoff applies then).
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Exponential backoff for one export: the wait doubles from
/// `forward.initial_backoff` up to `forward.max_backoff`, with jitter, unless
/// the downstream asked for a wait of its own. Pure: the randomness is a
/// parameter.
#[derive(Debug, Clone)]
pub struct Backoff {
    interval: Duration,
    max: Duration,
}

impl Backoff {
    /// A fresh backoff starting at `initial`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            interval: initial,
            max,
        }
    }

    /// The wait before the next attempt: the downstream's `hint` when it gave
    /// one, else the current interval scaled by `0.5 + jitter` (`jitter` in
    /// `[0, 1)`, so 50% to 150%) and capped at the maximum. The interval
    /// doubles either way.
    pub fn next_delay(&mut self, hint: Option<Duration>, jitter: f64) -> Duration {
        let delay = match hint {
            Some(hint) => hint,
            None => self
                .interval
                .mul_f64(0.5 + jitter.clamp(0.0, 1.0))
                .min(self.max),
        };
        self.interval = self.interval.saturating_mul(2).min(self.max);
        delay
    }
}

/// Retry settings taken from [`ForwardConfig`].
#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    initial: Duration,
    max: Duration,
    max_elapsed: Duration,
}

/// The export being delivered and its retry state.
#[derive(Debug)]
struct InFlight {
    export: Export,
    first_attempt: Instant,
    backoff: Backoff,
    not_before: Option<Instant>,
}

/// The task that owns the forward queue and delivers it; see the module docs.
#[derive(Debug)]
pub struct Forwarder<D> {
    queue: mpsc::Receiver<Export>,
    downstream: D,
    policy: RetryPolicy,
    drain_timeout: Duration,
    telemetry: Arc<Telemetry>,
    /// Kept here, not in a local, so stopping a wait never loses it.
    current: Option<InFlight>,
    /// The last attempt failed: log recovery once, and failures once.
    failing: bool,
}

/// How [`Forwarder::deliver`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The queue is closed and empty.
    Empty,
    /// `stop` was cancelled while waiting.
    Stopped,
}

/// `future`, or `None` once `stop` (when given) is cancelled.
async fn unless<T>(stop: Option<&CancellationToken>, future: impl Future<Output = T>) -> Option<T> {
    match stop {
        None => Some(future.await),
        Some(stop) => tokio::select! {
            biased;
            () = stop.cancelled() => None,
            v = future => Some(v),
        },
    }
}

/// The forwarding task for `config` and the handle receivers use to feed
/// it; `None` when `forward.endpoint` is unset.
pub fn start(
    config: &ForwardConfig,
    telemetry: Arc<Telemetry>,
) -> Result<Option<(ForwardHandle, Forwarder<Transport>)>, ForwardSetupError> {
    let Some(endpoint) = &config.endpoint else {
        return Ok(None);
    };
    let transport = match config.protocol {
        ForwardProtocol::Grpc => Transport::Grpc(GrpcDownstream::new(endpoint, config.timeout)?),
        ForwardProtocol::HttpProtobuf => {
            Transport::Http(HttpDownstream::new(endpoint, config.timeout)?)
        }
    };
    tracing::info!(endpoint, protocol = ?config.protocol, queue_items = config.queue_items, "forwarding");
    Ok(Some(Forwarder::new(config, transport, telemetry)))
}

impl<D: Downstream> Forwarder<D> {
    /// A forwarder sending to `downstream`, and its handle.
    pub fn new(
        config: &ForwardConfig,
        downstream: D,
        telemetry: Arc<Telemetry>,
    ) -> (ForwardHandle, Self) {
        let (tx, queue) = mpsc::channel(config.queue_items);
        let handle = ForwardHandle {
            queue: tx,
            telemetry: telemetry.clone(),
        };
        let forwarder = Self {
            queue,
            downstream,
            policy: RetryPolicy {
                initial: config.initial_backoff,
                max: config.max_backoff,
                max_elapsed: config.max_elapsed,
            },
            drain_timeout: config.drain_timeout,
            telemetry,
            current: None,
            failing: false,
        };
        (handle, forwarder)
    }

    /// Delivers the queue until `drain` is cancelled; then takes nothing more
    /// and delivers what is queued for at most `forward.drain_timeout`,
    /// counting what is left as dropped.
    pub async fn run(mut self, drain: CancellationToken) {
        if self.deliver(Some(&drain)).await == Ended::Empty {
            return;
        }
        self.queue.close();
        let waiting = self.queue.len() + usize::from(self.current.is_some());
        tracing::info!(waiting, deadline = ?self.drain_timeout, "forward: draining the queue");
        if tokio::time::timeout(self.drain_timeout, self.deliver(None))
            .await
            .is_err()
        {
            let mut left = u64::from(self.current.take().is_some());
            while self.queue.try_recv().is_ok() {
                left += 1;
            }
            if left > 0 {
                self.telemetry
                    .forward_dropped(DroppedReason::Shutdown, left);
                tracing::warn!(
                    left,
                    "forward: drain deadline (forward.drain_timeout) passed; undelivered export requests dropped"
                );
            }
        } else {
            tracing::info!("forward: queue drained");
        }
    }

    /// Delivers queued exports one at a time; waits (never a send in
    /// progress) end when `stop` is cancelled.
    async fn deliver(&mut self, stop: Option<&CancellationToken>) -> Ended {
        loop {
            if self.current.is_none() {
                match unless(stop, self.queue.recv()).await {
                    None => return Ended::Stopped,
                    Some(None) => return Ended::Empty,
                    Some(Some(export)) => {
                        self.current = Some(InFlight {
                            export,
                            first_attempt: Instant::now(),
                            backoff: Backoff::new(self.policy.initial, self.policy.max),
                            not_before: None,
                        });
                    }
                }
            }
            let Some(flight) = self.current.as_mut() else {
                continue;
            };
            if let Some(at) = flight.not_before {
                if unless(stop, tokio::time::sleep_until(at)).await.is_none() {
                    return Ended::Stopped;
                }
                flight.not_before = None;
            }
            let delivery = self.downstream.send(&flight.export).await;
            match delivery {
                Delivery::Delivered => {
                    if self.failing {
                        self.failing = false;
                        tracing::info!("forward: downstream accepts again");
                    }
                    self.telemetry.forward_sent();
                    self.current = None;
                }
                Delivery::Reject { reason } => {
                    tracing::warn!(%reason, signal = ?flight.export.signal, "forward: downstream rejected an export request (not retryable); dropped");
                    self.telemetry.forward_dropped(DroppedReason::Rejected, 1);
                    self.current = None;
                }
                Delivery::Retry { after, reason } => {
                    let delay = flight.backoff.next_delay(after, rand::random::<f64>());
                    let now = Instant::now();
                    let elapsed = now.saturating_duration_since(flight.first_attempt);
                    if elapsed + delay > self.policy.max_elapsed {
                        tracing::warn!(%reason, ?elapsed, ?delay, "forward: export request undelivered within forward.max_elapsed; dropped");
                        self.telemetry.forward_dropped(DroppedReason::Expired, 1);
                        self.current = None;
                    } else {
                        if !self.failing {
                            self.failing = true;
                            tracing::warn!(%reason, ?delay, "forward: downstream failed; retrying with backoff");
                        } else {
                            tracing::debug!(%reason, ?delay, "forward: retrying");
                        }
                        flight.not_before = Some(now + delay);
                    }
                }
            }
        }
    }
}

/// The configured downstream.
#[derive(Debug)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc(GrpcDownstream),
    /// OTLP/HTTP, binary protobuf.
    Http(HttpDownstream),
}

impl Downstream for Transport {
    async fn send(&mut self, export: &Export) -> Delivery {
        match self {
            Transport::Grpc(d) => d.send(export).await,
            Transport::Http(d) => d.send(export).await,
        }
    }
}

/// Logs a downstream's `partial_success` (not retried: OTLP says so).
fn log_partial(signal: Signal, answer: &[u8]) {
    let (rejected, message) = match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(answer)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
        Signal::Logs => ExportLogsServiceResponse::decode(answer)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_log_records, p.error_message)),
        Signal::Metrics => ExportMetricsServiceResponse::decode(answer)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_data_points, p.error_message)),
    }
    .unwrap_or_default();
    if rejected > 0 || !message.is_empty() {
        tracing::warn!(
            rejected,
            %message,
            ?signal,
            "forward: downstream accepted an export request in part"
        );
    }
}

/// OTLP/gRPC downstream over one lazily connected tonic channel (it
/// reconnects by itself after the downstream comes back).
#[derive(Debug)]
pub struct GrpcDownstream {
    channel: Channel,
}

impl GrpcDownstream {
    /// A channel to `endpoint` with `timeout` per call and per connect.
    pub fn new(endpoint: &str, timeout: Duration) -> Result<Self, ForwardSetupError> {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| ForwardSetupError::Endpoint {
                endpoint: endpoint.to_owned(),
                message: e.to_string(),
            })?
            .timeout(timeout)
            .connect_timeout(timeout)
            .connect_lazy();
        Ok(Self { channel })
    }
}

impl Downstream for GrpcDownstream {
    async fn send(&mut self, export: &Export) -> Delivery {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        if let Err(e) = grpc.ready().await {
            return Delivery::Retry {
                after: None,
                reason: format!("connecting: {e}"),
            };
        }
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(export.signal.grpc_path());
        match grpc
            .unary(tonic::Request::new(export.body.clone()), path, BytesCodec)
            .await
        {
            Ok(answer) => {
                log_partial(export.signal, answer.get_ref());
                Delivery::Delivered
            }
            Err(status) => classify_status(&status),
        }
    }
}

/// OTLP/HTTP (binary protobuf) downstream.
#[derive(Debug)]
pub struct HttpDownstream {
    client: reqwest::Client,
    base: String,
}

impl HttpDownstream {
    /// A client for `endpoint` (`/v1/traces`, `/v1/logs`, `/v1/metrics` are
    /// appended)
    /// with `timeout` per request.
    pub fn new(endpoint: &str, timeout: Duration) -> Result<Self, ForwardSetupError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Self {
            client,
            base: endpoint.trim_end_matches('/').to_owned(),
        })
    }
}

impl Downstream for HttpDownstream {
    async fn send(&mut self, export: &Export) -> Delivery {
        let url = format!("{}{}", self.base, export.signal.http_path());
        let response = self
            .client
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(export.body.clone())
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Delivery::Retry {
                    after: None,
                    reason: format!("sending: {e}"),
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let delivery = classify_http(status, retry_after.as_deref());
        if delivery == Delivery::Delivered {
            if let Ok(body) = response.bytes().await {
                log_partial(export.signal, &body);
            }
        }
        delivery
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use tonic_types::ErrorDetails;

    /// Answers from a script and records when each attempt happened.
    #[derive(Debug, Clone, Default)]
    struct Scripted {
        answers: Arc<Mutex<VecDeque<Delivery>>>,
        attempts: Arc<Mutex<Vec<(Instant, Bytes)>>>,
    }

    impl Scripted {
        fn new(answers: impl IntoIterator<Item = Delivery>) -> Self {
            Self {
                answers: Arc::new(Mutex::new(answers.into_iter().collect())),
                attempts: Arc::default(),
            }
        }
        fn attempts(&self) -> Vec<(Instant, Bytes)> {
            self.attempts.lock().unwrap().clone()
        }
    }

    impl Downstream for Scripted {
        async fn send(&mut self, export: &Export) -> Delivery {
            self.attempts
                .lock()
                .unwrap()
                .push((Instant::now(), export.body.clone()));
            self.answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Delivery::Delivered)
        }
    }

    fn config(queue_items: usize) -> ForwardConfig {
        ForwardConfig {
            endpoint: Some("http://127.0.0.1:1".into()),
            queue_items,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            ..ForwardConfig::default()
        }
    }

    fn retry(after: Option<Duration>) -> Delivery {
        Delivery::Retry {
            after,
            reason: "test".into(),
        }
    }

    fn queue(handle: &ForwardHandle, body: &'static [u8]) {
        handle
            .reserve()
            .unwrap()
            .send(Signal::Traces, Bytes::from_static(body));
    }

    #[test]
    fn a_full_queue_refuses_and_counts_and_a_dropped_reservation_frees_its_slot() {
        let telemetry = Arc::new(Telemetry::default());
        let (handle, _forwarder) =
            Forwarder::new(&config(2), Scripted::default(), telemetry.clone());
        queue(&handle, b"a");
        let held = handle.reserve().unwrap();
        assert_eq!(handle.reserve().unwrap_err(), ForwardError::Full);
        assert_eq!(telemetry.forward().refused, 1);
        drop(held); // the pipeline refused the export: the slot comes back
        queue(&handle, b"b");
        assert_eq!(handle.reserve().unwrap_err(), ForwardError::Full);
        let f = telemetry.forward();
        assert_eq!((f.queue, f.refused), (2, 2));
    }

    #[test]
    fn grpc_status_codes_are_classified_as_otlp_says() {
        let with_info = tonic::Status::with_error_details(
            Code::Unavailable,
            "busy",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(3))),
        );
        assert_eq!(
            classify_status(&with_info),
            Delivery::Retry {
                after: Some(Duration::from_secs(3)),
                reason: "Unavailable: busy".into()
            }
        );
        assert!(matches!(
            classify_status(&Status::unavailable("down")),
            Delivery::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify_status(&Status::resource_exhausted("too big")),
            Delivery::Reject { .. }
        ));
        let throttled = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(500))),
        );
        assert!(matches!(
            classify_status(&throttled),
            Delivery::Retry { after: Some(d), .. } if d == Duration::from_millis(500)
        ));
        for code in [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::Unimplemented,
        ] {
            assert!(
                matches!(
                    classify_status(&Status::new(code, "no")),
                    Delivery::Reject { .. }
                ),
                "{code:?}"
            );
        }
    }

    #[test]
    fn http_answers_are_classified_and_retry_after_read() {
        assert_eq!(classify_http(200, None), Delivery::Delivered);
        assert_eq!(
            classify_http(503, Some(" 7 ")),
            Delivery::Retry {
                after: Some(Duration::from_secs(7)),
                reason: "HTTP 503".into()
            }
        );
        assert!(matches!(
            classify_http(429, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Delivery::Retry { after: None, .. }
        ));
        assert!(matches!(classify_http(502, None), Delivery::Retry { .. }));
        for status in [400, 401, 404, 413, 500] {
            assert!(
                matches!(classify_http(status, None), Delivery::Reject { .. }),
                "{status}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_jitters_and_honours_hints() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let waits: Vec<_> = (0..5).map(|_| b.next_delay(None, 0.5)).collect();
        assert_eq!(
            waits,
            [100, 200, 400, 500, 500]
                .map(Duration::from_millis)
                .to_vec()
        );
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.next_delay(None, 0.0), Duration::from_millis(50));
        assert_eq!(b.next_delay(None, 0.999), Duration::from_micros(299_800));
        // A server's wait wins, even past the cap.
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(3)), 0.5),
            Duration::from_secs(3)
        );
        assert_eq!(b.next_delay(None, 0.5), Duration::from_millis(800));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_honour_retry_info_then_deliver_in_order() {
        let telemetry = Arc::new(Telemetry::default());
        let downstream = Scripted::new([retry(Some(Duration::from_secs(3))), retry(None)]);
        let (handle, forwarder) =
            Forwarder::new(&config(10), downstream.clone(), telemetry.clone());
        queue(&handle, b"first");
        queue(&handle, b"second");
        let drain = CancellationToken::new();
        let task = tokio::spawn(forwarder.run(drain.clone()));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let attempts = downstream.attempts();
        let bodies: Vec<&[u8]> = attempts.iter().map(|(_, b)| b.as_ref()).collect();
        assert_eq!(bodies, [&b"first"[..], b"first", b"first", b"second"]);
        // The downstream asked for 3 s; then the backoff's second step
        // (200 ms, jittered 50% to 150%): the hint counted as a step.
        assert_eq!(attempts[1].0 - attempts[0].0, Duration::from_secs(3));
        let second_wait = attempts[2].0 - attempts[1].0;
        assert!(
            second_wait >= Duration::from_millis(100) && second_wait < Duration::from_millis(300),
            "{second_wait:?}"
        );
        let f = telemetry.forward();
        assert_eq!((f.sent, f.queue), (2, 0));
        drain.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn non_retryable_and_expired_exports_are_dropped_and_counted() {
        let telemetry = Arc::new(Telemetry::default());
        // First: rejected. Second: the downstream asks for longer than
        // max_elapsed. Third: delivered.
        let downstream = Scripted::new([
            Delivery::Reject {
                reason: "bad".into(),
            },
            retry(Some(Duration::from_secs(60))),
        ]);
        let (handle, forwarder) =
            Forwarder::new(&config(10), downstream.clone(), telemetry.clone());
        queue(&handle, b"rejected");
        queue(&handle, b"expired");
        queue(&handle, b"delivered");
        let drain = CancellationToken::new();
        let task = tokio::spawn(forwarder.run(drain.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(downstream.attempts().len(), 3);
        let f = telemetry.forward();
        assert_eq!((f.sent, f.queue), (1, 0));
        assert_eq!(
            f.dropped,
            vec![
                (DroppedReason::Rejected, 1),
                (DroppedReason::Expired, 1),
                (DroppedReason::Shutdown, 0)
            ]
        );
        drain.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_then_counts_what_is_left_at_the_deadline() {
        let telemetry = Arc::new(Telemetry::default());
        // Delivered on the first try, then the downstream is down for good.
        let downstream = Scripted::new(
            std::iter::once(Delivery::Delivered).chain(std::iter::repeat_n(retry(None), 1000)),
        );
        let (handle, forwarder) =
            Forwarder::new(&config(10), downstream.clone(), telemetry.clone());
        for _ in 0..4 {
            queue(&handle, b"x");
        }
        let drain = CancellationToken::new();
        let task = tokio::spawn(forwarder.run(drain.clone()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let started = Instant::now();
        drain.cancel();
        task.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(handle.reserve().unwrap_err(), ForwardError::Closed);
        let f = telemetry.forward();
        assert_eq!((f.sent, f.queue), (1, 0));
        assert_eq!(f.dropped[2], (DroppedReason::Shutdown, 3));
    }

    /// A tiny OTLP/HTTP downstream: answers from `statuses` in turn (then
    /// 200), recording the path and body of each request.
    async fn http_downstream(
        statuses: Vec<(u16, Option<&'static str>)>,
    ) -> (String, Arc<Mutex<Vec<(String, Bytes)>>>) {
        use axum::http::{StatusCode, Uri};
        let seen: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
        let script = Arc::new(Mutex::new(VecDeque::from(statuses)));
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, body: Bytes| {
            let record = record.clone();
            let script = script.clone();
            async move {
                record.lock().unwrap().push((uri.path().to_owned(), body));
                let (status, retry_after) =
                    script.lock().unwrap().pop_front().unwrap_or((200, None));
                let mut response = axum::response::IntoResponse::into_response(
                    StatusCode::from_u16(status).unwrap(),
                );
                if let Some(v) = retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", v.parse().unwrap());
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), seen)
    }

    #[tokio::test]
    async fn http_downstream_gets_the_bytes_and_its_retry_after_is_honoured() {
        let (endpoint, seen) = http_downstream(vec![(503, Some("1")), (400, None)]).await;
        let telemetry = Arc::new(Telemetry::default());
        let mut cfg = config(10);
        cfg.endpoint = Some(endpoint.clone());
        cfg.initial_backoff = Duration::from_millis(10);
        let downstream = HttpDownstream::new(&endpoint, Duration::from_secs(5)).unwrap();
        let (handle, forwarder) = Forwarder::new(&cfg, downstream, telemetry.clone());
        handle
            .reserve()
            .unwrap()
            .send(Signal::Traces, Bytes::from_static(b"traces"));
        handle
            .reserve()
            .unwrap()
            .send(Signal::Logs, Bytes::from_static(b"logs"));
        let started = std::time::Instant::now();
        let drain = CancellationToken::new();
        drain.cancel();
        forwarder.run(drain).await;
        // 503 + Retry-After: 1 -> a 1 s wait, then 400 -> rejected (the
        // logs request), then nothing more.
        assert!(started.elapsed() >= Duration::from_secs(1));
        let seen = seen.lock().unwrap().clone();
        let seen: Vec<(&str, &[u8])> = seen.iter().map(|(p, b)| (p.as_str(), b.as_ref())).collect();
        assert_eq!(
            seen,
            [
                ("/v1/traces", &b"traces"[..]),
                ("/v1/traces", b"traces"),
                ("/v1/logs", b"logs")
            ]
        );
        let f = telemetry.forward();
        assert_eq!((f.sent, f.queue), (1, 0));
        assert_eq!(f.dropped[0], (DroppedReason::Rejected, 1));
    }

    #[tokio::test]
    async fn grpc_downstream_retry_info_survives_the_wire() {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
            TraceService, TraceServiceServer,
        };
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

        #[derive(Debug, Clone, Default)]
        struct Busy(Arc<Mutex<u32>>);
        #[tonic::async_trait]
        impl TraceService for Busy {
            async fn export(
                &self,
                _: tonic::Request<ExportTraceServiceRequest>,
            ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
                let mut calls = self.0.lock().unwrap();
                *calls += 1;
                if *calls == 1 {
                    return Err(Status::with_error_details(
                        Code::ResourceExhausted,
                        "slow down",
                        ErrorDetails::with_retry_info(Some(Duration::from_millis(700))),
                    ));
                }
                Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
            }
        }
        let busy = Busy::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = TraceServiceServer::new(busy.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        let mut downstream =
            GrpcDownstream::new(&format!("http://{addr}"), Duration::from_secs(5)).unwrap();
        let export = Export {
            signal: Signal::Traces,
            body: ExportTraceServiceRequest::default().encode_to_vec().into(),
        };
        assert!(matches!(
            downstream.send(&export).await,
            Delivery::Retry { after: Some(d), .. } if d == Duration::from_millis(700)
        ));
        assert_eq!(downstream.send(&export).await, Delivery::Delivered);
        assert_eq!(*busy.0.lock().unwrap(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_with_a_healthy_downstream_delivers_everything() {
        let telemetry = Arc::new(Telemetry::default());
        let downstream = Scripted::default();
        let (handle, forwarder) =
            Forwarder::new(&config(10), downstream.clone(), telemetry.clone());
        let drain = CancellationToken::new();
        drain.cancel();
        for _ in 0..5 {
            queue(&handle, b"x");
        }
        forwarder.run(drain).await;
        assert_eq!(telemetry.forward().sent, 5);
        assert_eq!(downstream.attempts().len(), 5);
    }
}
