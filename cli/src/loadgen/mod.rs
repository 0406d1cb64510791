//! Load generator: realistic OTLP trace batches, encoded once, sent over N
//! concurrent gRPC connections at full speed or a fixed rate for a bounded
//! time, reporting accepted spans per second and the Export call latency.
//!
//! Batches are built by [`batch`] (about ten attributes a span, a few
//! hundred series, several versions) and sent as raw bytes through
//! [`BytesCodec`], so the generator spends its time on the network, not on
//! encoding. It only sends to the endpoint it is given.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic::Status;

use modelgate_collector::aggregate::Sketch;
use modelgate_collector::codec::BytesCodec;
use modelgate_collector::receive::Signal;

mod batch;

/// One OTLP trace Export of `body` as it is (gzip-compressed on the wire
/// when `gzip`); the raw response bytes or the status.
pub async fn send_raw(channel: &Channel, body: Vec<u8>, gzip: bool) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    if gzip {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
    }
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(Signal::Traces.grpc_path());
    grpc.unary(tonic::Request::new(Bytes::from(body)), path, BytesCodec)
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
        }
    }
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad options.
    #[error("loadgen: {0}")]
    Options(&'static str),
    /// The endpoint could not be reached.
    #[error("loadgen: cannot connect to {endpoint}: {message}")]
    Connect {
        /// Where.
        endpoint: String,
        /// Why.
        message: String,
    },
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

/// Sends for `options.duration` and reports.
pub async fn run(options: &LoadOptions) -> Result<LoadReport, LoadError> {
    if options.connections == 0 || options.batch_spans == 0 {
        return Err(LoadError::Options(
            "connections and batch size must be at least 1",
        ));
    }
    let encoded = Arc::new(batches(options, 32));
    let batch_bytes = encoded.iter().map(Vec::len).sum::<usize>() / encoded.len();
    let accepted = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(Sketch::new()));
    // Calls per second per connection when a rate is set.
    let interval = options.rate.map(|r| {
        let calls = (r / options.batch_spans as f64 / options.connections as f64).max(1e-3);
        Duration::from_secs_f64(1.0 / calls)
    });
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut tasks = Vec::with_capacity(options.connections);
    for c in 0..options.connections {
        let channel = Channel::from_shared(options.endpoint.clone())
            .map_err(|e| LoadError::Connect {
                endpoint: options.endpoint.clone(),
                message: e.to_string(),
            })?
            .connect()
            .await
            .map_err(|e| LoadError::Connect {
                endpoint: options.endpoint.clone(),
                message: e.to_string(),
            })?;
        let (encoded, accepted, rejected, failed, ok, latency) = (
            encoded.clone(),
            accepted.clone(),
            rejected.clone(),
            failed.clone(),
            ok.clone(),
            latency.clone(),
        );
        let spans = options.batch_spans as u64;
        tasks.push(tokio::spawn(async move {
            let mut ticker = interval.map(|every| {
                let mut t = tokio::time::interval(every);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            let mut local = Sketch::new();
            let mut i = c;
            while Instant::now() < deadline {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let body = encoded[i % encoded.len()].clone();
                i += 1;
                let sent = Instant::now();
                match send_raw(&channel, body, false).await {
                    Ok(response) => {
                        local.record(sent.elapsed().as_secs_f64() * 1e3);
                        ok.fetch_add(1, Ordering::Relaxed);
                        let refused = ExportTraceServiceResponse::decode(response.as_slice())
                            .ok()
                            .and_then(|r| r.partial_success)
                            .map_or(0, |p| p.rejected_spans.max(0) as u64);
                        accepted.fetch_add(spans - refused.min(spans), Ordering::Relaxed);
                        rejected.fetch_add(refused, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let Ok(mut all) = latency.lock() {
                all.merge(&local);
            }
        }));
    }
    for task in tasks {
        // A panicked sender only loses its own counts.
        let _ = task.await;
    }
    let latency_ms = latency.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(LoadReport {
        spans_accepted: accepted.load(Ordering::Relaxed),
        spans_rejected: rejected.load(Ordering::Relaxed),
        calls_failed: failed.load(Ordering::Relaxed),
        calls_ok: ok.load(Ordering::Relaxed),
        batch_bytes,
        elapsed: started.elapsed(),
        latency_ms,
    })
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
