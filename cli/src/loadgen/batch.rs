//! The load generator's OTLP batches: realistic request spans (about ten
//! attributes each, a few hundred series, several versions), built here
//! rather than with the tests' `modelgate-fixture`, which is a
//! dev-dependency only and must never be compiled into the release binary.
//!
//! Only what a load run sends: SERVER spans with no parent, one
//! `ResourceSpans` per run of spans of one service, as an SDK batches them.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};

const SERVICES: [&str; 3] = ["checkout", "lending-api", "search"];

fn attr(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    attr(key, Value::StringValue(value.to_owned()))
}

fn int(key: &str, value: i64) -> KeyValue {
    attr(key, Value::IntValue(value))
}

/// Span `n` of a run over `endpoints` x `versions` series in three services:
/// its service and the span. Latencies spread from 5 to 500 ms, 1% errors.
/// Span `n` starts `n` microseconds after `start_unix_nanos`.
fn request_span(
    n: usize,
    endpoints: usize,
    versions: usize,
    start_unix_nanos: u64,
) -> (&'static str, Span) {
    let service = SERVICES[n % SERVICES.len()];
    let route = format!("/api/v1/op{}", (n / SERVICES.len()) % endpoints.max(1));
    let version = format!("v1.{}", (n / 7) % versions.max(1));
    let status = if n % 100 == 99 { 500 } else { 200 };
    let duration_ms = 5 + (n * 7919 % 495) as u64;
    let id = n as u64 + 1;
    let mut trace_id = [0u8; 16];
    trace_id[8..].copy_from_slice(&id.to_be_bytes());
    let start = start_unix_nanos + id * 1_000;
    let span = Span {
        trace_id: trace_id.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        name: route.clone(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + duration_ms * 1_000_000,
        attributes: vec![
            text("http.route", &route),
            text("model.version", &version),
            text("http.request.method", "POST"),
            int("http.response.status_code", status),
            text("server.address", "api.internal"),
            int("server.port", 8443),
            text("url.scheme", "https"),
            text("network.protocol.version", "2"),
            text("user_agent.original", "lender-sdk/2.3"),
            text("client.address", "10.1.2.3"),
        ],
        ..Span::default()
    };
    (service, span)
}

/// Spans `first .. first + spans` of the run as one export request, the
/// run starting at `start_unix_nanos`.
pub(super) fn request(
    first: usize,
    spans: usize,
    endpoints: usize,
    versions: usize,
    start_unix_nanos: u64,
) -> ExportTraceServiceRequest {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    let mut last_service = None;
    for n in first..first + spans {
        let (service, span) = request_span(n, endpoints, versions, start_unix_nanos);
        if last_service != Some(service) {
            resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        text("service.name", service),
                        text("deployment.environment.name", "production"),
                    ],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans::default()],
                ..ResourceSpans::default()
            });
            last_service = Some(service);
        }
        if let Some(scope) = resource_spans
            .last_mut()
            .and_then(|rs| rs.scope_spans.last_mut())
        {
            scope.spans.push(span);
        }
    }
    ExportTraceServiceRequest { resource_spans }
}
