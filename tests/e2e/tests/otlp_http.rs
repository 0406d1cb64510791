//! The OTLP/HTTP receiver, end to end: protobuf and JSON bodies, gzip, traces
//! and logs, each bad input with the status the OTLP specification gives it,
//! counted, and the server still serving.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::time::Duration;

use modelgate_e2e::{eventually, metric, metric_sum, Collector};
use modelgate_fixture::{request_of, SpanSpec};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn requests(version: &str, n: usize, ms: u64) -> ExportTraceServiceRequest {
    request_of((0..n).map(|_| SpanSpec::request("shop", "/checkout", version, ms)))
}

/// A `google.rpc.Status` body's message, protobuf or JSON.
fn status_message(content_type: &str, body: &[u8]) -> String {
    if content_type == JSON {
        let value: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(value["code"], 3, "{value}");
        return value["message"].as_str().unwrap().to_owned();
    }
    // google.rpc.Status: field 1 code, field 2 message.
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    RpcStatus::decode(body).unwrap().message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_in_protobuf_and_json_with_gzip_are_measured() {
    let collector = Collector::start(&[]).await;

    let (status, content_type, body) = collector
        .post_otlp(
            "/v1/traces",
            PROTOBUF,
            None,
            requests("v1", 30, 20).encode_to_vec(),
        )
        .await;
    assert_eq!((status, content_type.as_str()), (200, PROTOBUF));
    let response = ExportTraceServiceResponse::decode(body.as_slice()).unwrap();
    assert_eq!(response.partial_success, None);

    // JSON, gzipped, with one unusable span among them.
    let mut request = requests("v2", 30, 40);
    request.resource_spans.extend(
        request_of([SpanSpec::request("shop", "/checkout", "v2", 5).no_timestamps()])
            .resource_spans,
    );
    let json = serde_json::to_vec(&request).unwrap();
    let (status, content_type, body) = collector
        .post_otlp("/v1/traces", JSON, Some("gzip"), gzip(&json))
        .await;
    assert_eq!((status, content_type.as_str()), (200, JSON));
    let response: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let partial = &response["partialSuccess"];
    assert_eq!(partial["rejectedSpans"].as_i64(), Some(1), "{response}");
    assert!(
        partial["errorMessage"]
            .as_str()
            .unwrap()
            .contains("missing start_time_unix_nano"),
        "{response}"
    );

    let versions = eventually(Duration::from_secs(10), || async {
        let v = collector.json("/api/v1/versions?service=shop").await;
        let text = v.to_string();
        (text.contains("\"v1\"") && text.contains("\"v2\"")).then_some(v)
    })
    .await
    .expect("both versions are measured");
    assert!(versions.to_string().contains("/checkout"), "{versions}");
    let text = collector.metrics().await;
    assert_eq!(
        metric_sum(&text, "modelgate_receiver_accepted_total", &[]),
        Some(60.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_with_the_lending_mapping_become_samples_and_unmapped_ones_are_counted() {
    let collector = Collector::start(&[]).await;
    // Records count at their own time: now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_string();
    // What a stock collector sends after filelog + json_parser: the parsed
    // line in attributes, the raw line as the body.
    let record = |ms: u64, version: &str, status: &str| {
        serde_json::json!({
            "timeUnixNano": now,
            "body": {"stringValue": "raw line"},
            "attributes": [
                {"key": "endpoint", "value": {"stringValue": "/risk-score"}},
                {"key": "responseTimeMs", "value": {"doubleValue": ms}},
                {"key": "status", "value": {"stringValue": status}},
                {"key": "modelVersion", "value": {"stringValue": version}},
            ]
        })
    };
    let mut records: Vec<serde_json::Value> = (0..40)
        .map(|i| record(90 + i % 20, "v1.2", "OK"))
        .chain((0..40).map(|i| record(700 + i % 100, "v1.3", "Timeout")))
        .collect();
    records.push(serde_json::json!({"body": {"stringValue": "GC pause 12ms"}}));
    let logs = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "lending-api"}}]},
        "scopeLogs": [{"logRecords": records}]
    }]});
    let (status, _, body) = collector
        .post_otlp(
            "/v1/logs",
            JSON,
            Some("gzip"),
            gzip(&serde_json::to_vec(&logs).unwrap()),
        )
        .await;
    assert_eq!(status, 200);
    let response: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        response["partialSuccess"]["rejectedLogRecords"].as_i64(),
        Some(1),
        "{response}"
    );
    assert!(
        response["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("log record 81: no field \"responseTimeMs\""),
        "{response}"
    );

    // The same mapping through protobuf.
    let proto_logs: opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest =
        serde_json::from_value(logs).unwrap();
    let (status, content_type, body) = collector
        .post_otlp("/v1/logs", PROTOBUF, None, proto_logs.encode_to_vec())
        .await;
    assert_eq!((status, content_type.as_str()), (200, PROTOBUF));
    let response = ExportLogsServiceResponse::decode(body.as_slice()).unwrap();
    assert_eq!(response.partial_success.unwrap().rejected_log_records, 1);

    let text = collector.metrics().await;
    assert_eq!(
        metric(
            &text,
            "modelgate_receiver_refused_total",
            &[("reason", "unmapped_log")]
        ),
        Some(2.0)
    );
    // 160 mapped requests: the lending incident from its logs.
    let fired = eventually(Duration::from_secs(20), || async {
        let r = collector
            .json("/api/v1/regressions?service=lending-api")
            .await;
        r.to_string().contains("v1.3").then_some(r)
    })
    .await;
    assert!(fired.is_some(), "v1.3 regresses on its logs alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_otlp_http_answers_and_are_counted() {
    let collector = Collector::start(&[("MODELGATE_RECEIVER__MAX_MESSAGE_BYTES", "65536")]).await;

    // Garbage protobuf: 400 with a google.rpc.Status in protobuf.
    let (status, content_type, body) = collector
        .post_otlp("/v1/traces", PROTOBUF, None, vec![0xff; 64])
        .await;
    assert_eq!(status, 400);
    assert!(
        status_message(&content_type, &body).contains("invalid protobuf"),
        "{body:?}"
    );
    // Bad JSON: 400 with the Status in JSON.
    let (status, content_type, body) = collector
        .post_otlp("/v1/logs", JSON, None, b"{\"resourceLogs\": 7}".to_vec())
        .await;
    assert_eq!((status, content_type.as_str()), (400, JSON));
    assert!(status_message(&content_type, &body).contains("invalid OTLP/JSON"));
    // Not gzip although it says so.
    let (status, ..) = collector
        .post_otlp("/v1/traces", PROTOBUF, Some("gzip"), b"plain".to_vec())
        .await;
    assert_eq!(status, 400);
    // Unsupported content type and encoding.
    let (status, ..) = collector
        .post_otlp("/v1/traces", "text/plain", None, b"hi".to_vec())
        .await;
    assert_eq!(status, 415);
    let (status, ..) = collector
        .post_otlp("/v1/traces", PROTOBUF, Some("br"), b"hi".to_vec())
        .await;
    assert_eq!(status, 400);
    // Too large, plain and as a gzip bomb: 413, not retryable.
    let big = requests("v1", 2_000, 20).encode_to_vec();
    assert!(big.len() > 65_536);
    let (status, ..) = collector.post_otlp("/v1/traces", PROTOBUF, None, big).await;
    assert_eq!(status, 413);
    let (status, ..) = collector
        .post_otlp(
            "/v1/traces",
            PROTOBUF,
            Some("gzip"),
            gzip(&vec![0; 32 << 20]),
        )
        .await;
    assert_eq!(status, 413);
    // Wrong method and path.
    assert_eq!(
        reqwest::get(format!("http://{}/v1/traces", collector.http_addr))
            .await
            .unwrap()
            .status(),
        405
    );
    let (status, ..) = collector
        .post_otlp("/v1/profiles", PROTOBUF, None, Vec::new())
        .await;
    assert_eq!(status, 404);
    // An empty request is a success, and the server still serves.
    let (status, ..) = collector
        .post_otlp("/v1/traces", PROTOBUF, None, Vec::new())
        .await;
    assert_eq!(status, 200);
    let (status, ..) = collector
        .post_otlp(
            "/v1/traces",
            PROTOBUF,
            Some("gzip"),
            gzip(&requests("v1", 10, 20).encode_to_vec()),
        )
        .await;
    assert_eq!(status, 200);

    let text = collector.metrics().await;
    let refused = |reason| {
        metric(
            &text,
            "modelgate_receiver_refused_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(refused("too_large"), Some(2.0), "{text}");
    assert_eq!(refused("invalid_payload"), Some(5.0), "{text}");
}
