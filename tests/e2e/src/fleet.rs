//! A fleet for the tests and benchmarks that need many services at once
//! (the dashboard at 100 services, `/metrics` at 100,000 series): services
//! `svc-000`, `svc-001`, ... with `endpoints` endpoints each, every endpoint
//! with baseline `v1` and candidate `v2`, spans timed now.
//!
//! Each service is given a [`Health`] by its index, so a test knows what the
//! judge must find: the first [`CRITICAL`] services' candidates are far over
//! the SLA, the next [`WARNING`] a little slower than their baseline and
//! near the SLA, the next [`INCONCLUSIVE`] have too few candidate requests
//! to judge, the rest are as fast as their baseline.

use std::time::Duration;

use modelgate_fixture::{attr_int, attr_str};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};

use crate::Collector;

/// Services whose candidate regresses badly.
pub const CRITICAL: usize = 5;
/// Services after those whose candidate is a little slow.
pub const WARNING: usize = 10;
/// Services after those whose candidate has too few requests.
pub const INCONCLUSIVE: usize = 10;

/// What the judge must find for a service's candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// p95 about 400 ms: over the 150 ms SLA.
    Critical,
    /// About 130 ms against a 100 ms baseline: over the SLA's warning
    /// fraction and the relative rule's warning factor, under critical.
    Warning,
    /// Two requests per endpoint in all: below every rule's minimum.
    Inconclusive,
    /// As fast as the baseline.
    Pass,
}

/// The health of service `index`.
pub fn health(index: usize) -> Health {
    match index {
        i if i < CRITICAL => Health::Critical,
        i if i < CRITICAL + WARNING => Health::Warning,
        i if i < CRITICAL + WARNING + INCONCLUSIVE => Health::Inconclusive,
        _ => Health::Pass,
    }
}

/// The name of service `index`.
pub fn service(index: usize) -> String {
    format!("svc-{index:03}")
}

/// The name of endpoint `index`.
pub fn endpoint(index: usize) -> String {
    format!("/api/op{index}")
}

/// The fleet's shape.
#[derive(Debug, Clone, Copy)]
pub struct Fleet {
    /// Services.
    pub services: usize,
    /// Endpoints per service (two versions each).
    pub endpoints: usize,
    /// Requests per series and round.
    pub per_series: usize,
    /// Outcomes per series (1 to 3): request `k` of a round is ok, an
    /// error (HTTP 500) or a timeout (HTTP 504) as `k % outcomes` is 0, 1
    /// or 2, so each series has a latency histogram per outcome.
    pub outcomes: usize,
}

impl Fleet {
    /// Series (service, endpoint, version): two versions per endpoint.
    pub fn series(&self) -> usize {
        self.services * self.endpoints * 2
    }

    /// Round `round` of the fleet's requests, ending around `now_nanos`, as
    /// export requests of at most `batch` spans. Round 0 holds baselines
    /// only, so `v1` is seen first and is every endpoint's incumbent
    /// baseline.
    pub fn round(
        &self,
        round: u64,
        now_nanos: u64,
        batch: usize,
    ) -> Vec<ExportTraceServiceRequest> {
        let mut requests = Vec::new();
        let mut spans: Vec<(usize, Span)> = Vec::new();
        let mut id = round << 40;
        for s in 0..self.services {
            let health = health(s);
            for e in 0..self.endpoints {
                for version in ["v1", "v2"] {
                    let n = match (version, health) {
                        (_, _) if round == 0 && version == "v2" => 0,
                        ("v2", Health::Inconclusive) => usize::from(round == 1) * 2,
                        _ => self.per_series,
                    };
                    for k in 0..n {
                        // A deterministic spread of +-5 ms around the level.
                        let jitter = (k * 7 + e * 3) % 11;
                        let level = match (version, health) {
                            ("v2", Health::Critical) => 400,
                            ("v2", Health::Warning) => 130,
                            (_, Health::Warning) => 100,
                            _ => 50,
                        };
                        let duration_ms = (level + jitter - 5) as u64;
                        id += 1;
                        let status = [200, 500, 504][k % self.outcomes.clamp(1, 3)];
                        spans.push((
                            s,
                            request_span(id, s, e, version, duration_ms, status, now_nanos),
                        ));
                        if spans.len() >= batch {
                            requests.push(export(std::mem::take(&mut spans)));
                        }
                    }
                }
            }
        }
        if !spans.is_empty() {
            requests.push(export(spans));
        }
        requests
    }

    /// Sends rounds `rounds` (a round every `every`) to `collector` over
    /// gRPC; returns the spans sent.
    pub async fn feed(
        &self,
        collector: &Collector,
        rounds: std::ops::Range<u64>,
        every: Duration,
    ) -> usize {
        let channel = collector.grpc_channel().await.expect("gRPC channel");
        let mut client = TraceServiceClient::new(channel)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20);
        let mut sent = 0;
        let mut tick = tokio::time::interval(every);
        for round in rounds {
            tick.tick().await;
            for request in self.round(round, now_nanos(), 5_000) {
                sent += request
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum::<usize>();
                client
                    .export(collector.grpc_request(request))
                    .await
                    .expect("export accepted");
            }
        }
        sent
    }
}

/// Now, unix nanoseconds.
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn request_span(
    id: u64,
    service: usize,
    endpoint_index: usize,
    version: &str,
    duration_ms: u64,
    status: i64,
    now_nanos: u64,
) -> Span {
    let route = endpoint(endpoint_index);
    let end = now_nanos - (id % 1000) * 1_000;
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&(service as u64).to_be_bytes());
    trace_id[8..].copy_from_slice(&id.to_be_bytes());
    Span {
        trace_id: trace_id.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        name: route.clone(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: end - duration_ms * 1_000_000,
        end_time_unix_nano: end,
        attributes: vec![
            attr_str("http.route", &route),
            attr_str("model.version", version),
            attr_int("http.response.status_code", status),
        ],
        ..Span::default()
    }
}

/// One export request, a `ResourceSpans` per run of one service's spans.
fn export(spans: Vec<(usize, Span)>) -> ExportTraceServiceRequest {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    let mut last = None;
    for (s, span) in spans {
        if last != Some(s) {
            resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![attr_str("service.name", &service(s))],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans::default()],
                ..ResourceSpans::default()
            });
            last = Some(s);
        }
        if let Some(scope) = resource_spans
            .last_mut()
            .and_then(|r| r.scope_spans.last_mut())
        {
            scope.spans.push(span);
        }
    }
    ExportTraceServiceRequest { resource_spans }
}
