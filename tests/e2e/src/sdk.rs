//! The OpenTelemetry SDK as an application uses it, as an independent
//! OTLP client for the end-to-end tests: requests recorded as SERVER spans
//! through the SDK's batch span processor, logged as request log records
//! in the lending format through its batch log processor, or measured in
//! the `http.server.request.duration` histogram through its meter, exported
//! by `opentelemetry-otlp` over OTLP/gRPC. Nothing here builds OTLP by
//! hand: what arrives is what the SDK makes.

use std::time::{Duration, SystemTime};

use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
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

/// `http.server.request.duration`'s advised bucket bounds, seconds (the
/// semantic conventions' advice; the SDK's own default is for
/// milliseconds).
pub const HTTP_SERVER_BOUNDS_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Measures each batch of `batches` in the `http.server.request.duration`
/// histogram of `service` (seconds, the advised bounds, attributes
/// `http.route`, `model.version`, `http.response.status_code` and
/// `error.type` on a timeout) and exports after each batch over OTLP/gRPC
/// to `endpoint`, as the SDK's periodic reader would at its interval:
/// cumulative points, the SDK's default (the shutdown exports them once
/// more). Returns once shut down.
pub async fn export_request_histograms(endpoint: &str, service: &str, batches: &[Vec<Request>]) {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .build()
        .expect("an OTLP/gRPC metric exporter");
    // Exports when flushed, not on its own clock: the test decides when a
    // batch is over.
    let reader = PeriodicReader::builder(exporter)
        .with_interval(Duration::from_secs(3600))
        .build();
    let provider = SdkMeterProvider::builder()
        .with_resource(resource(service))
        .with_reader(reader)
        .build();
    let histogram = provider
        .meter("modelgate-e2e")
        .f64_histogram("http.server.request.duration")
        .with_unit("s")
        .with_boundaries(HTTP_SERVER_BOUNDS_S.to_vec())
        .build();
    for batch in batches {
        for request in batch {
            let status: i64 = if request.timed_out { 504 } else { 200 };
            let mut attributes = vec![
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.route", request.route.clone()),
                KeyValue::new("http.response.status_code", status),
                KeyValue::new("model.version", request.version.clone()),
            ];
            if request.timed_out {
                attributes.push(KeyValue::new("error.type", "timeout"));
            }
            histogram.record(request.duration.as_secs_f64(), &attributes);
        }
        let flushed = provider.clone();
        tokio::task::spawn_blocking(move || flushed.force_flush())
            .await
            .expect("flush task")
            .expect("the SDK exported the histograms");
    }
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .expect("shutdown task")
        .expect("the SDK shut down");
}
