//! The OpenTelemetry SDK as an application uses it, as an independent
//! OTLP client for the end-to-end tests: requests recorded as SERVER spans
//! through the SDK's batch span processor, or logged as request log records
//! in the lending format through its batch log processor, exported by
//! `opentelemetry-otlp` over OTLP/gRPC. Nothing here builds OTLP by hand:
//! what arrives is what the SDK makes.

use std::time::{Duration, SystemTime};

use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// One request the application served.
#[derive(Debug, Clone)]
pub struct Request {
    /// The route (`http.route`; `endpoint` in a log record).
    pub route: String,
    /// The model version that served it.
    pub version: String,
    /// How long it took.
    pub duration: Duration,
    /// Whether it timed out (status 504; `Timeout` in a log record).
    pub timed_out: bool,
}

impl Request {
    /// A request to `route` served by `version` in `ms` milliseconds.
    pub fn new(route: &str, version: &str, ms: u64) -> Self {
        Self {
            route: route.to_owned(),
            version: version.to_owned(),
            duration: Duration::from_millis(ms),
            timed_out: false,
        }
    }
}

fn resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_owned())
        .build()
}

/// Records `requests` as SERVER spans of `service`, ending now, and exports
/// them over OTLP/gRPC to `endpoint` (`http://host:port`); returns once the
/// SDK has flushed and shut down (bounded by its export timeout).
pub async fn export_spans(endpoint: &str, service: &str, requests: &[Request]) {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .build()
        .expect("an OTLP/gRPC span exporter");
    let provider = SdkTracerProvider::builder()
        .with_resource(resource(service))
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("modelgate-e2e");
    let end = SystemTime::now();
    for request in requests {
        let status = if request.timed_out { 504 } else { 200 };
        let mut span = tracer
            .span_builder(format!("POST {}", request.route))
            .with_kind(SpanKind::Server)
            .with_start_time(end - request.duration)
            .with_attributes([
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.route", request.route.clone()),
                KeyValue::new("http.response.status_code", status),
                KeyValue::new("model.version", request.version.clone()),
            ])
            .start(&tracer);
        if request.timed_out {
            span.set_status(Status::error("timeout"));
        }
        span.end_with_timestamp(end);
    }
    // The batch processor exports on its own thread, blocking it: flush
    // from a blocking task so the runtime's workers stay free for tonic.
    tokio::task::spawn_blocking(move || {
        provider.force_flush().expect("the SDK exported every span");
        provider.shutdown().expect("the SDK shut down");
    })
    .await
    .expect("flush task");
}

/// Logs `requests` as request log records of `service` in the lending
/// format (`endpoint`, `responseTimeMs`, `status`, `modelVersion`, and
/// `seq`, their index, which makes every record distinct) and exports them
/// over OTLP/gRPC to `endpoint`; returns once flushed and shut down.
pub async fn export_request_logs(endpoint: &str, service: &str, requests: &[Request]) {
    let exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .build()
        .expect("an OTLP/gRPC log exporter");
    let provider = SdkLoggerProvider::builder()
        .with_resource(resource(service))
        .with_batch_exporter(exporter)
        .build();
    let logger = provider.logger("modelgate-e2e");
    for (seq, request) in requests.iter().enumerate() {
        let mut record = logger.create_log_record();
        record.set_timestamp(SystemTime::now());
        record.set_severity_number(Severity::Info);
        record.set_body(format!("{} served", request.route).into());
        record.add_attribute("endpoint", request.route.clone());
        record.add_attribute(
            "responseTimeMs",
            i64::try_from(request.duration.as_millis()).unwrap_or(i64::MAX),
        );
        record.add_attribute("status", if request.timed_out { "Timeout" } else { "OK" });
        record.add_attribute("modelVersion", request.version.clone());
        record.add_attribute("seq", i64::try_from(seq).unwrap_or(i64::MAX));
        logger.emit(record);
    }
    tokio::task::spawn_blocking(move || {
        provider
            .force_flush()
            .expect("the SDK exported every log record");
        provider.shutdown().expect("the SDK shut down");
    })
    .await
    .expect("flush task");
}
