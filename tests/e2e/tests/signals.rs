//! Every OTLP signal on both transports, end to end: traces, logs and
//! metrics over OTLP/gRPC (`TraceService`, `LogsService`,
//! `MetricsService`) and OTLP/HTTP (`/v1/traces`, `/v1/logs`,
//! `/v1/metrics`; protobuf and JSON, gzip) into the real binary, which
//! answers each as the OTLP specification says, counts each per signal,
//! judges what it can read (logs over gRPC like logs over HTTP; histogram
//! points as requests) and forwards every accepted export, unchanged, to a
//! downstream that records what it got.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use modelgate_e2e::{eventually, metric, Collector};
use modelgate_fixture::{
    attr_str, metrics_request_of, request_of, HistogramSpec, SpanSpec, HTTP_SERVER_BOUNDS_S,
};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// What the downstream received, per signal, as decoded requests.
#[derive(Debug, Clone, Default)]
struct Downstream {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    logs: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Downstream {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.traces.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Downstream {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.logs.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Downstream {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

async fn start_downstream(downstream: &Downstream) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(downstream.clone()))
        .add_service(LogsServiceServer::new(downstream.clone()))
        .add_service(MetricsServiceServer::new(downstream.clone()))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    addr
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Lending-format request log records of `service` (the parsed line in
/// attributes, as a Collector's `json_parser` leaves it), and one record
/// that is not a request log.
fn lending_logs(service: &str) -> ExportLogsServiceRequest {
    let kv = |key: &str, value: Value| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    };
    let s = |v: &str| Value::StringValue(v.into());
    let mut records: Vec<LogRecord> = (0..40)
        .map(|i| {
            let (version, ms, status) = if i % 2 == 0 {
                ("v1.2", 90 + i, "OK")
            } else {
                ("v1.3", 700 + i, "Timeout")
            };
            LogRecord {
                time_unix_nano: now_nanos(),
                attributes: vec![
                    kv("endpoint", s("/risk-score")),
                    kv("responseTimeMs", Value::IntValue(ms)),
                    kv("status", s(status)),
                    kv("modelVersion", s(version)),
                ],
                ..LogRecord::default()
            }
        })
        .collect();
    records.push(LogRecord {
        time_unix_nano: now_nanos(),
        body: Some(AnyValue {
            value: Some(s("GET /healthz 200")),
        }),
        ..LogRecord::default()
    });
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s(service))],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

/// `http.server.request.duration` points of `service`: `n` requests of
/// each version, v2 twice as slow.
fn histograms(service: &str, n: usize) -> ExportMetricsServiceRequest {
    let point = |version: &str, seconds: f64| {
        HistogramSpec::of_values(
            service,
            "http.server.request.duration",
            "s",
            &HTTP_SERVER_BOUNDS_S,
            &vec![seconds; n],
        )
        .attr(attr_str("http.route", "/quote"))
        .attr(attr_str("model.version", version))
    };
    metrics_request_of([point("v1", 0.04), point("v2", 0.09)])
}

/// A metrics export whose one point's buckets do not add up to its count.
fn bad_histogram() -> ExportMetricsServiceRequest {
    let mut request = histograms("broken", 3);
    request.resource_metrics[0].scope_metrics[0]
        .metrics
        .truncate(1);
    if let Some(Data::Histogram(h)) =
        &mut request.resource_metrics[0].scope_metrics[0].metrics[0].data
    {
        h.data_points[0].count = 7;
    }
    request
}

fn accepted(text: &str, signal: &str) -> f64 {
    metric(
        text,
        "modelgate_receiver_accepted_total",
        &[("signal", signal)],
    )
    .unwrap_or(-1.0)
}

fn refused(text: &str, reason: &str) -> f64 {
    metric(
        text,
        "modelgate_receiver_refused_total",
        &[("reason", reason)],
    )
    .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signal_on_both_transports_is_answered_counted_judged_and_forwarded() {
    let downstream = Downstream::default();
    let forward_to = start_downstream(&downstream).await;
    let collector = Collector::start(&[
        (
            "MODELGATE_FORWARD__ENDPOINT",
            &format!("http://{forward_to}"),
        ),
        ("MODELGATE_FORWARD__PROTOCOL", "grpc"),
    ])
    .await;
    let channel = collector.grpc_channel().await.unwrap();

    // ---- OTLP/gRPC: the three services. ----
    let spans = request_of((0..10).map(|_| SpanSpec::request("shop", "/checkout", "v1", 30)));
    let answer = TraceServiceClient::new(channel.clone())
        .export(spans.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.partial_success, None);

    let grpc_logs = lending_logs("lending-grpc");
    let answer = LogsServiceClient::new(channel.clone())
        .export(grpc_logs.clone())
        .await
        .unwrap()
        .into_inner();
    let partial = answer.partial_success.unwrap();
    assert_eq!(partial.rejected_log_records, 1, "{partial:?}");
    assert!(
        partial.error_message.contains("log record 41"),
        "{partial:?}"
    );

    let grpc_metrics = histograms("quotes-grpc", 30);
    let mut metrics_client = MetricsServiceClient::new(channel.clone());
    let answer = metrics_client
        .export(grpc_metrics.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.partial_success, None);
    let answer = metrics_client
        .export(bad_histogram())
        .await
        .unwrap()
        .into_inner();
    let partial = answer.partial_success.unwrap();
    assert_eq!(partial.rejected_data_points, 1, "{partial:?}");
    assert!(
        partial
            .error_message
            .contains("the buckets hold 3 requests but count is 7"),
        "{partial:?}"
    );
    // gzip on gRPC, as the Collector's otlp exporter sends it.
    let answer = MetricsServiceClient::new(channel.clone())
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .export(histograms("quotes-grpc-gzip", 5))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.partial_success, None);

    // ---- OTLP/HTTP: metrics in protobuf and gzipped JSON, logs. ----
    let http_metrics = histograms("quotes-http", 30);
    let (status, content_type, body) = collector
        .post_otlp("/v1/metrics", PROTOBUF, None, http_metrics.encode_to_vec())
        .await;
    assert_eq!((status, content_type.as_str()), (200, PROTOBUF));
    assert_eq!(
        ExportMetricsServiceResponse::decode(body.as_slice()).unwrap(),
        ExportMetricsServiceResponse::default()
    );
    let json_metrics = histograms("quotes-json", 30);
    let (status, content_type, body) = collector
        .post_otlp(
            "/v1/metrics",
            JSON,
            Some("gzip"),
            gzip(&serde_json::to_vec(&json_metrics).unwrap()),
        )
        .await;
    assert_eq!((status, content_type.as_str()), (200, JSON), "{body:?}");
    let (status, _, body) = collector
        .post_otlp(
            "/v1/metrics",
            JSON,
            None,
            serde_json::to_vec(&bad_histogram()).unwrap(),
        )
        .await;
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        answer["partialSuccess"]["rejectedDataPoints"].as_i64(),
        Some(1),
        "{answer}"
    );
    let http_logs = lending_logs("lending-http");
    let (status, _, _) = collector
        .post_otlp("/v1/logs", PROTOBUF, None, http_logs.encode_to_vec())
        .await;
    assert_eq!(status, 200);
    // Refusals, as for the other signals.
    let (status, _, _) = collector
        .post_otlp("/v1/metrics", JSON, None, b"{not json".to_vec())
        .await;
    assert_eq!(status, 400);
    let (status, _, _) = collector
        .post_otlp("/v1/metrics", "text/plain", None, b"x".to_vec())
        .await;
    assert_eq!(status, 415);

    // ---- Counted per signal. ----
    // Spans: 10. Log records: 2 x 41. Data points: 2 + 1 + 2 (gRPC), 2 + 2
    // + 1 (HTTP); the two bad ones refused.
    let counted = eventually(Duration::from_secs(10), || async {
        let text = collector.metrics().await;
        (accepted(&text, "metrics") == 8.0).then_some(text)
    })
    .await;
    let Some(text) = counted else {
        panic!("metrics not counted:\n{}", collector.metrics().await);
    };
    assert_eq!(accepted(&text, "traces"), 10.0, "{text}");
    assert_eq!(accepted(&text, "logs"), 80.0, "{text}");
    assert_eq!(refused(&text, "invalid_point"), 2.0, "{text}");
    assert_eq!(refused(&text, "unmapped_log"), 2.0, "{text}");
    assert_eq!(refused(&text, "invalid_payload"), 2.0, "{text}");

    // ---- Judged: histogram points are requests of their series; logs over
    // gRPC are the same requests as logs over HTTP. ----
    let versions = |service: &'static str| {
        let collector = &collector;
        async move {
            let v = collector
                .json(&format!("/api/v1/versions?service={service}"))
                .await;
            let found = v["endpoints"].as_array()?.first()?["versions"]
                .as_array()?
                .iter()
                .map(|x| {
                    (
                        x["version"].clone(),
                        x["count"].clone(),
                        x["p95_ms"].clone(),
                    )
                })
                .collect::<Vec<_>>();
            (found.len() == 2).then_some(found)
        }
    };
    for service in ["quotes-grpc", "quotes-http", "quotes-json"] {
        let found = eventually(Duration::from_secs(10), || versions(service))
            .await
            .unwrap_or_else(|| panic!("{service}: no versions"));
        assert_eq!(found[0].1, "30", "{service}: {found:?}");
        assert_eq!(found[1].1, "30", "{service}: {found:?}");
    }
    let over_grpc = eventually(Duration::from_secs(10), || versions("lending-grpc")).await;
    let over_http = eventually(Duration::from_secs(10), || versions("lending-http")).await;
    assert!(over_grpc.is_some(), "logs over gRPC were not judged");
    assert_eq!(over_grpc, over_http, "logs over gRPC and over HTTP differ");

    // ---- Forwarded: every accepted export, as it was sent. ----
    let counts = || {
        (
            downstream.traces.lock().unwrap().len(),
            downstream.logs.lock().unwrap().len(),
            downstream.metrics.lock().unwrap().len(),
        )
    };
    let all_forwarded = eventually(Duration::from_secs(20), || async {
        (counts() == (1, 2, 6)).then_some(())
    })
    .await;
    if all_forwarded.is_none() {
        let (t, l, m) = counts();
        panic!(
            "the downstream got {t} trace, {l} logs and {m} metrics exports\n{}",
            collector.metrics().await
        );
    }
    assert_eq!(downstream.traces.lock().unwrap()[0], spans);
    let logs = downstream.logs.lock().unwrap().clone();
    assert!(logs.contains(&grpc_logs) && logs.contains(&http_logs));
    let metrics = downstream.metrics.lock().unwrap().clone();
    for sent in [&grpc_metrics, &http_metrics, &json_metrics] {
        assert!(metrics.contains(sent), "not forwarded as sent: {sent:?}");
    }
    // A partly refused export is forwarded whole (both of them): refusing
    // items is about modelgate's reading of them, not the backend's.
    let partly = metrics
        .iter()
        .filter(|m| format!("{m:?}").contains("\"broken\""))
        .count();
    assert_eq!(partly, 2);
    assert!(collector.stop().await.success());
}
