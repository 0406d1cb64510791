//! Load generator: realistic OTLP trace batches, encoded once, sent over N
//! concurrent gRPC connections at full speed or a fixed rate for a bounded
//! time, reporting accepted spans per second and the Export call latency.
//!
//! Batches are built by [`batch`] (about ten attributes a span, a few
//! hundred series, several versions) and sent as raw bytes through
//! [`BytesCodec`], so the generator spends its time on the network, not on
//! encoding. It only sends to the endpoint it is given. [`render`] owns what
//! `modelgate loadgen` prints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{Body, StdError};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::Status;

use modelgate_collector::aggregate::Sketch;
use modelgate_collector::codec::BytesCodec;
use modelgate_collector::signal::Signal;

use crate::client::{normalize_url, ClientError, ClientOptions, GrpcOnly};
use crate::exit::Exit;

mod batch;
pub mod render;

/// One OTLP trace Export of `body` as it is (gzip-compressed on the wire
/// when `gzip`); the raw response bytes or the status.
pub async fn send_raw(channel: &Channel, body: Vec<u8>, gzip: bool) -> Result<Vec<u8>, Status> {
    send(channel.clone(), MetadataMap::new(), body, gzip).await
}

/// [`send_raw`] over any gRPC service (a [`GrpcOnly`] channel, say), with
/// `metadata` (the token) on the call.
async fn send<S>(
    channel: S,
    metadata: MetadataMap,
    body: Vec<u8>,
    gzip: bool,
) -> Result<Vec<u8>, Status>
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::Error: Into<StdError>,
    S::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <S::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    if gzip {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
    }
    grpc.ready().await.map_err(|e| {
        // UNAVAILABLE, as a connection that cannot carry the call is; the
        // transport's error kept as the source (a TLS failure is read there).
        let error: StdError = e.into();
        let mut status = Status::unavailable(crate::exit::message(error.as_ref()));
        status.set_source(Arc::from(error));
        status
    })?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(Signal::Traces.grpc_path());
    let mut request = tonic::Request::new(Bytes::from(body));
    *request.metadata_mut() = metadata;
    grpc.unary(request, path, BytesCodec)
        .await
        .map(|r| r.into_inner().to_vec())
}

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// Concurrent connections.
    pub connections: usize,
    /// How long to send.
    pub duration: Duration,
    /// Spans per second over all connections; `None`: as fast as answered.
    pub rate: Option<f64>,
    /// Spans per Export call.
    pub batch_spans: usize,
    /// Distinct (service, endpoint) pairs.
    pub endpoints: usize,
    /// Versions per endpoint.
    pub versions: usize,
    /// TLS trust, client certificate, token and extra headers.
    pub client: ClientOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4317".into(),
            connections: 4,
            duration: Duration::from_secs(10),
            rate: None,
            batch_spans: 512,
            endpoints: 60,
            versions: 5,
            client: ClientOptions::default(),
        }
    }
}

/// Why a load run could not start, or got no export through at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad options.
    #[error("loadgen: {0}")]
    Options(&'static str),
    /// The collector could not be reached, refused the credentials, or
    /// every export failed for one reason.
    #[error("loadgen: {0}")]
    Client(#[from] ClientError),
}

impl LoadError {
    /// The exit code this failure means.
    pub const fn exit(&self) -> Exit {
        match self {
            LoadError::Options(_) => Exit::Usage,
            LoadError::Client(e) => e.exit(),
        }
    }
}

/// What a load run achieved.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Spans in Export calls that succeeded.
    pub spans_accepted: u64,
    /// Spans the collector reported in `partial_success.rejected_spans`.
    pub spans_rejected: u64,
    /// Export calls that failed, and their spans.
    pub calls_failed: u64,
    /// Export calls that succeeded.
    pub calls_ok: u64,
    /// Bytes per encoded batch (average).
    pub batch_bytes: usize,
    /// Wall time spent sending.
    pub elapsed: Duration,
    /// Export call latency, milliseconds.
    pub latency_ms: Sketch,
    /// Why the first failed call failed.
    pub first_failure: Option<ClientError>,
}

impl LoadReport {
    /// Accepted spans per second.
    pub fn spans_per_second(&self) -> f64 {
        self.spans_accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `count` distinct encoded batches of `options.batch_spans` spans: SERVER
/// spans with ten attributes over `endpoints` x `versions` series in three
/// services, latencies spread from 5 to 500 ms, 1% errors. They start now:
/// the collector counts a span at its own time and leaves out one older
/// than its `aggregate.allowed_lateness` (30 minutes by default), so the
/// batches are built when a run starts, never ahead of it.
pub fn batches(options: &LoadOptions, count: usize) -> Vec<Vec<u8>> {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    (0..count)
        .map(|b| {
            batch::request(
                b * options.batch_spans,
                options.batch_spans,
                options.endpoints,
                options.versions,
                start,
            )
            .encode_to_vec()
        })
        .collect()
}

/// How long connecting each connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends for `options.duration` and reports. Fails when a connection
/// cannot be made, or when not one Export call succeeded (with why the
/// first one failed).
pub async fn run(options: &LoadOptions) -> Result<LoadReport, LoadError> {
    if options.connections == 0 || options.batch_spans == 0 {
        return Err(LoadError::Options(
            "connections and batch size must be at least 1",
        ));
    }
    let credentials = options.client.load()?;
    let url = normalize_url(&options.endpoint)?;
    let endpoint = credentials.endpoint(&url)?.connect_timeout(CONNECT_TIMEOUT);
    let mut channels = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(e) => {
                let error = ClientError::from_transport(&e, &url);
                return Err(credentials.explain(error, &url).await.into());
            }
        };
        channels.push(GrpcOnly(channel));
    }
    let encoded = Arc::new(batches(options, 32));
    let batch_bytes = encoded.iter().map(Vec::len).sum::<usize>() / encoded.len();
    // Time between two calls of one connection when a rate is set.
    let interval = options.rate.map(|r| {
        let calls = (r / options.batch_spans as f64 / options.connections as f64).max(1e-3);
        Duration::from_secs_f64(1.0 / calls)
    });
    let started = Instant::now();
    let deadline = started + options.duration;
    let tasks: Vec<_> = channels
        .into_iter()
        .enumerate()
        .map(|(c, channel)| {
            let sender = Sender {
                channel,
                metadata: credentials.metadata().clone(),
                encoded: encoded.clone(),
                spans: options.batch_spans as u64,
                url: url.clone(),
                token_sent: credentials.sends_token(),
            };
            tokio::spawn(sender.run(c, interval, deadline))
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        // A panicked sender only loses its own counts.
        if let Ok(tally) = task.await {
            total.merge(tally);
        }
    }
    if total.ok == 0 {
        if let Some(failure) = total.first_failure {
            return Err(credentials.explain(failure, &url).await.into());
        }
    }
    Ok(LoadReport {
        spans_accepted: total.accepted,
        spans_rejected: total.rejected,
        calls_failed: total.failed,
        calls_ok: total.ok,
        batch_bytes,
        elapsed: started.elapsed(),
        latency_ms: total.latency_ms,
        first_failure: total.first_failure,
    })
}

/// One connection's sending loop.
struct Sender {
    channel: GrpcOnly,
    metadata: MetadataMap,
    encoded: Arc<Vec<Vec<u8>>>,
    /// Spans per batch.
    spans: u64,
    url: String,
    token_sent: bool,
}

/// What one connection achieved.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    accepted: u64,
    rejected: u64,
    latency_ms: Sketch,
    first_failure: Option<ClientError>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.latency_ms.merge(&other.latency_ms);
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }
}

impl Sender {
    /// Sends batch `first`, `first + 1`, ... until `deadline`, one call
    /// every `interval` when set, else as fast as answered.
    async fn run(self, first: usize, interval: Option<Duration>, deadline: Instant) -> Tally {
        let mut ticker = interval.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut tally = Tally::default();
        let mut i = first;
        while Instant::now() < deadline {
            if let Some(t) = ticker.as_mut() {
                t.tick().await;
            }
            let body = self.encoded[i % self.encoded.len()].clone();
            i += 1;
            let sent = Instant::now();
            match send(self.channel.clone(), self.metadata.clone(), body, false).await {
                Ok(response) => {
                    tally.latency_ms.record(sent.elapsed().as_secs_f64() * 1e3);
                    tally.ok += 1;
                    let refused = ExportTraceServiceResponse::decode(response.as_slice())
                        .ok()
                        .and_then(|r| r.partial_success)
                        .map_or(0, |p| p.rejected_spans.max(0) as u64);
                    tally.accepted += self.spans - refused.min(self.spans);
                    tally.rejected += refused;
                }
                Err(status) => {
                    tally.failed += 1;
                    if tally.first_failure.is_none() {
                        tally.first_failure = Some(ClientError::from_status(
                            &status,
                            &self.url,
                            self.token_sent,
                        ));
                    }
                }
            }
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    #[test]
    fn batches_are_realistic_and_spread_over_series() {
        let options = LoadOptions::default();
        let encoded = batches(&options, 4);
        let request = ExportTraceServiceRequest::decode(encoded[0].as_slice()).unwrap();
        let spans: Vec<_> = request
            .resource_spans
            .iter()
            .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter()))
            .collect();
        assert_eq!(spans.len(), 512);
        assert!(spans.iter().all(|s| s.attributes.len() == 10));
        let mut config = modelgate_collector::config::ExtractConfig::default();
        config.dimensions.clear();
        let mut samples = Vec::new();
        let mut interner = modelgate_collector::extract::Interner::default();
        for bytes in &encoded {
            let r = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
            modelgate_collector::extract::extract(&r, &config, &mut interner, &mut samples);
        }
        assert!(samples
            .iter()
            .all(|s| s.kind != modelgate_collector::extract::SampleKind::DbCall));
        let series: std::collections::HashSet<_> =
            samples.iter().map(|s| s.series.clone()).collect();
        assert!(series.len() >= 200, "{} series", series.len());
    }
}
