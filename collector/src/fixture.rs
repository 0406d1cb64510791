//! One builder for OTLP trace payloads, shared by unit tests, end-to-end tests
//! and benchmarks, so every test speaks about spans the same way.
//!
//! It builds `opentelemetry-proto` messages directly (no SDK) because tests
//! also need spans an SDK would never send: no timestamps, end before start.
//! It is test support: the collector itself never calls it.

use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
};

/// 2026-11-20T17:00:00Z, the evening of the lending incident, in unix nanos.
pub const BASE_TIME_NANOS: u64 = 1_763_658_000_000_000_000;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A string attribute.
pub fn attr_str(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// An integer attribute.
pub fn attr_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

/// One span and the resource of the service that emitted it.
#[derive(Debug, Clone)]
pub struct SpanSpec {
    service: String,
    resource_attrs: Vec<KeyValue>,
    span: Span,
}

impl SpanSpec {
    fn new(service: &str, name: &str, duration_ms: u64, kind: SpanKind, parent: bool) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let start = BASE_TIME_NANOS + id * 1_000;
        let mut trace_id = [0u8; 16];
        trace_id[8..].copy_from_slice(&id.to_be_bytes());
        Self {
            service: service.to_owned(),
            resource_attrs: Vec::new(),
            span: Span {
                trace_id: trace_id.to_vec(),
                span_id: id.to_be_bytes().to_vec(),
                parent_span_id: if parent {
                    (id + 1).to_be_bytes().to_vec()
                } else {
                    Vec::new()
                },
                name: name.to_owned(),
                kind: kind as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + duration_ms * 1_000_000,
                ..Span::default()
            },
        }
    }

    /// A SERVER span with no parent.
    pub fn server(service: &str, name: &str, duration_ms: u64) -> Self {
        Self::new(service, name, duration_ms, SpanKind::Server, false)
    }

    /// An INTERNAL span with a parent.
    pub fn internal(service: &str, name: &str, duration_ms: u64) -> Self {
        Self::new(service, name, duration_ms, SpanKind::Internal, true)
    }

    /// A CLIENT span with a parent.
    pub fn client(service: &str, name: &str, duration_ms: u64) -> Self {
        Self::new(service, name, duration_ms, SpanKind::Client, true)
    }

    /// Adds a span attribute.
    pub fn attr(mut self, kv: KeyValue) -> Self {
        self.span.attributes.push(kv);
        self
    }

    /// Adds a resource attribute.
    pub fn resource_attr(mut self, kv: KeyValue) -> Self {
        self.resource_attrs.push(kv);
        self
    }

    /// The common request span: `http.route` and `model.version` set.
    pub fn request(service: &str, route: &str, version: &str, duration_ms: u64) -> Self {
        Self::server(service, route, duration_ms)
            .attr(attr_str("http.route", route))
            .attr(attr_str("model.version", version))
    }

    /// Removes the parent: a root span.
    pub fn root(mut self) -> Self {
        self.span.parent_span_id.clear();
        self
    }

    /// Puts this span into the trace of `other`.
    pub fn same_trace_as(mut self, other: &SpanSpec) -> Self {
        self.span.trace_id.clone_from(&other.span.trace_id);
        self
    }

    /// Status ERROR.
    pub fn status_error(mut self) -> Self {
        self.span.status = Some(Status {
            code: StatusCode::Error as i32,
            message: "failed".into(),
        });
        self
    }

    /// Swaps start and end, which no honest SDK sends.
    pub fn end_before_start(mut self) -> Self {
        let s = &mut self.span;
        s.end_time_unix_nano = s.start_time_unix_nano.saturating_sub(1_000_000);
        self
    }

    /// Clears both timestamps.
    pub fn no_timestamps(mut self) -> Self {
        self.span.start_time_unix_nano = 0;
        self.span.end_time_unix_nano = 0;
        self
    }

    /// An export request holding only this span.
    pub fn into_request(self) -> ExportTraceServiceRequest {
        request_of([self])
    }
}

/// An export request with one `ResourceSpans` per run of spans that share a
/// service and resource, in the given order.
pub fn request_of(specs: impl IntoIterator<Item = SpanSpec>) -> ExportTraceServiceRequest {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    let mut last: Option<(String, Vec<KeyValue>)> = None;
    for spec in specs {
        let same = last
            .as_ref()
            .is_some_and(|(s, r)| *s == spec.service && *r == spec.resource_attrs);
        if !same {
            let mut attributes = vec![attr_str("service.name", &spec.service)];
            attributes.extend(spec.resource_attrs.iter().cloned());
            resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans::default()],
                ..ResourceSpans::default()
            });
            last = Some((spec.service.clone(), spec.resource_attrs.clone()));
        }
        if let Some(scope) = resource_spans
            .last_mut()
            .and_then(|rs| rs.scope_spans.last_mut())
        {
            scope.spans.push(spec.span);
        }
    }
    ExportTraceServiceRequest { resource_spans }
}
