//! Logs shipped by a stock OpenTelemetry Collector (filelog receiver with
//! `json_parser`, `otlphttp` exporter with gzip), running the example
//! configuration `examples/otel-collector/logs-to-modelgate.yaml` unchanged,
//! to modelgate running `examples/otel-collector/modelgate.yaml` (endpoint
//! and snapshot directory overridden), which forwards onward to a second
//! modelgate standing in for the backend: the lending incident's log lines
//! reach modelgate, become samples, and v1.3 fires; the malformed line is
//! counted, not fatal; the backend gets every record, the malformed one too.
//!
//! Then the agent configuration `examples/otel-collector/collector.yaml`,
//! unchanged (addresses from the environment), between real clients and
//! modelgate, with a second Collector behind modelgate as the backend:
//! traces, logs and metrics from `telemetrygen` and from the OpenTelemetry
//! SDK, and request log lines from a file, reach modelgate over OTLP/HTTP
//! (the `otlphttp` exporter) or OTLP/gRPC (the `otlp` exporter) and the
//! backend from modelgate's forwarder; every item is counted where it was
//! sent, by the Collector, by modelgate and by the backend, and none
//! arrives twice.
//!
//! The Collector is the project's own build (tests/otelcol, built by
//! scripts/build-otelcol), or the binary named by `OTELCOL_BIN`.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime};

use modelgate_e2e::otelcol::{telemetrygen, DebugText, Otelcol, Signal};
use modelgate_e2e::sdk::{self, Request};
use modelgate_e2e::{eventually, free_addr, metric, metric_sum, repo, Collector};

/// The incident's own eight lines (line 5 malformed), moved in time so that
/// the last one is now: modelgate judges a record at its own time, and one
/// older than `aggregate.allowed_lateness` is not judged at all. The lines
/// keep their spacing (17 minutes from the first to the last).
fn incident_lines() -> String {
    let original = include_str!("../../../examples/logs/kenya-lending-incident.jsonl");
    let last = humantime::parse_rfc3339("2026-11-20T17:19:58.115Z").unwrap();
    let shift = SystemTime::now().duration_since(last).unwrap();
    original
        .lines()
        .map(|line| {
            let Some(at) = line.find("\"timestamp\": \"") else {
                return format!("{line}\n");
            };
            let start = at + "\"timestamp\": \"".len();
            let end = start + line[start..].find('"').unwrap();
            let then = humantime::parse_rfc3339(&line[start..end]).unwrap();
            let now = humantime::format_rfc3339_millis(then + shift);
            format!("{}{now}{}\n", &line[..start], &line[end..])
        })
        .collect()
}

/// The incident's lines, then the time-compressed incident at the present:
/// v1.2 alone, then v1.3 beside it, 7x slower, 80% timeouts.
fn incident_log() -> String {
    let mut log = incident_lines();
    let line = |endpoint: &str, ms: u64, status: &str, version: &str| {
        let now = humantime::format_rfc3339_millis(SystemTime::now());
        format!(
            "{{\"timestamp\": \"{now}\", \"endpoint\": \"{endpoint}\", \"lender\": \"lender-x\", \"responseTimeMs\": {ms}, \"status\": \"{status}\", \"modelVersion\": \"{version}\"}}\n"
        )
    };
    for i in 0..300_u64 {
        let endpoint = if i % 2 == 0 {
            "/risk-score"
        } else {
            "/funding-approve"
        };
        log.push_str(&line(endpoint, 85 + i % 35, "OK", "v1.2"));
        if i >= 100 {
            let status = if i % 5 == 0 { "OK" } else { "Timeout" };
            log.push_str(&line(endpoint, 700 + i % 120, status, "v1.3"));
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_collector_ships_the_incident_logs_in_protobuf_and_v13_fires() {
    ship_the_incident("proto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_collector_ships_the_incident_logs_in_otlp_json_and_v13_fires() {
    ship_the_incident("json").await;
}

/// The incident's own eight lines, nothing else, through a stock Collector:
/// two v1.3 requests per endpoint are too few for any rule on its own
/// endpoint, four across the service are plenty: the version-wide alert
/// fires, against v1.2, as the incident notes reasoned by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incidents_eight_lines_fire_the_version_wide_alert() {
    let dir = std::env::temp_dir().join(format!("modelgate-otelcol-eight-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let collector = Collector::start(&[]).await;
    let log_path = dir.join("lending.jsonl");
    std::fs::write(&log_path, incident_lines()).unwrap();
    let otelcol = Otelcol::spawn(
        &repo().join("examples/otel-collector/logs-to-modelgate.yaml"),
        &[
            ("LOG_FILE", log_path.to_str().unwrap()),
            ("MODELGATE_HTTP", &format!("http://{}", collector.http_addr)),
            ("SERVICE_NAME", "lending-api"),
            ("OTLP_ENCODING", "proto"),
        ],
    );
    let version_wide = eventually(Duration::from_secs(60), || async {
        let r = collector
            .json("/api/v1/regressions?service=lending-api&min_severity=critical")
            .await;
        r["regressions"]
            .as_array()?
            .iter()
            .find(|x| {
                x["endpoint"] == "*" && x["candidate_version"] == "v1.3" && x["rule"] == "sla"
            })
            .cloned()
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no version-wide alert for v1.3\n{}\n{}",
            collector.log(),
            otelcol.log()
        )
    });
    assert_eq!(version_wide["baseline_version"], "v1.2", "{version_wide}");
    assert_eq!(
        version_wide["severity"], "SEVERITY_CRITICAL",
        "{version_wide}"
    );
    let detail = version_wide["evidence"]["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains("4 of 4 requests above 150 ms"), "{detail}");
    // Nothing fires on one endpoint alone: two requests each are too few.
    let all = collector
        .json("/api/v1/regressions?service=lending-api")
        .await;
    assert!(
        all["regressions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["endpoint"] == "*"),
        "{all}"
    );
    let verdict = collector
        .json("/api/v1/verdict?service=lending-api&candidate=v1.3")
        .await;
    assert_eq!(
        verdict["outcome"], "VERDICT_OUTCOME_REGRESSION",
        "{verdict}"
    );
    assert_eq!(
        verdict["version_wide"]["baseline_version"], "v1.2",
        "{verdict}"
    );
    otelcol.stop().await;
    assert!(collector.stop().await.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whether the lending incident's v1.3 is firing on both endpoints.
async fn v13_firing(collector: &Collector) -> Option<serde_json::Value> {
    let r = collector
        .json("/api/v1/regressions?service=lending-api")
        .await;
    let text = r.to_string();
    (text.contains("v1.3") && text.contains("/risk-score") && text.contains("/funding-approve"))
        .then_some(r)
}

/// The receiver's accepted and `unmapped_log` counts.
async fn received(collector: &Collector) -> (Option<f64>, Option<f64>) {
    let metrics = collector.metrics().await;
    (
        metric_sum(&metrics, "modelgate_receiver_accepted_total", &[]),
        metric(
            &metrics,
            "modelgate_receiver_refused_total",
            &[("reason", "unmapped_log")],
        ),
    )
}

async fn ship_the_incident(encoding: &str) {
    let dir = std::env::temp_dir().join(format!(
        "modelgate-otelcol-{encoding}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let examples = repo().join("examples/otel-collector");
    let backend = Collector::start(&[]).await;
    let backend_url = format!("http://{}", backend.http_addr);
    let modelgate_config = examples.join("modelgate.yaml");
    let snapshots = dir.join("snapshots");
    let collector = Collector::start(&[
        ("MODELGATE_CONFIG", modelgate_config.to_str().unwrap()),
        ("MODELGATE_FORWARD__ENDPOINT", &backend_url),
        ("MODELGATE_SNAPSHOT__DIR", snapshots.to_str().unwrap()),
    ])
    .await;
    let log_path = dir.join("lending.jsonl");
    std::fs::File::create(&log_path)
        .unwrap()
        .write_all(incident_log().as_bytes())
        .unwrap();
    let config = examples.join("logs-to-modelgate.yaml");

    let started = Instant::now();
    // It logs warnings only: no "ready" line to wait for.
    let otelcol = Otelcol::spawn(
        &config,
        &[
            ("LOG_FILE", log_path.to_str().unwrap()),
            ("MODELGATE_HTTP", &format!("http://{}", collector.http_addr)),
            ("SERVICE_NAME", "lending-api"),
            ("OTLP_ENCODING", encoding),
        ],
    );

    let fired = eventually(Duration::from_secs(60), || v13_firing(&collector)).await;
    let metrics = collector.metrics().await;
    let fired = fired.unwrap_or_else(|| {
        panic!(
            "v1.3 did not fire on both endpoints from the shipped logs\nmetrics:\n{metrics}\nlog:\n{}\nthe Collector's log:\n{}",
            collector.log(),
            otelcol.log()
        )
    });
    println!(
        "v1.3 firing from logs shipped by the OpenTelemetry Collector ({encoding}) {:.1} s after it started",
        started.elapsed().as_secs_f64()
    );
    assert!(fired.to_string().contains("v1.2"), "{fired}");
    // 8 incident lines (one malformed) + 300 v1.2 + 200 v1.3 lines.
    let (accepted, unmapped) = received(&collector).await;
    assert_eq!(unmapped, Some(1.0), "the malformed line 5 is counted");
    assert!(
        accepted.is_some_and(|a| a >= 500.0),
        "accepted {accepted:?}"
    );

    // Forwarded onward: the backend sees the same records, the same alert.
    let delivered = eventually(Duration::from_secs(30), || async {
        let (a, u) = received(&backend).await;
        (a == received(&collector).await.0 && u == Some(1.0)).then_some(a)
    })
    .await;
    assert!(
        delivered.is_some(),
        "the backend got {:?}, modelgate accepted {:?}\nmodelgate metrics:\n{}",
        received(&backend).await,
        received(&collector).await,
        collector.metrics().await
    );
    // The backend judges what it got on its own clock (evaluation tick and
    // alert hold): wait for it, bounded.
    assert!(
        eventually(Duration::from_secs(30), || v13_firing(&backend))
            .await
            .is_some(),
        "the backend did not fire for v1.3 on what was forwarded"
    );
    let metrics = collector.metrics().await;
    assert_eq!(
        metric(&metrics, "modelgate_forward_refused_total", &[]),
        Some(0.0)
    );
    println!(
        "forwarded onward: the backend accepted {:?} records, unmapped {:?}; {:?} export requests sent",
        delivered.flatten(),
        received(&backend).await.1,
        metric(&metrics, "modelgate_forward_sent_total", &[])
    );
    otelcol.stop().await;
    assert!(collector.stop().await.success());
    assert!(
        snapshots.join("modelgate.snapshot").is_file(),
        "the example's snapshots are on"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// How the agent Collector sends each signal to modelgate (one exporter
/// for all three), and modelgate on to the backend Collector.
struct Route {
    /// `MODELGATE_TRACES_EXPORTER`, `MODELGATE_LOGS_EXPORTER` and
    /// `MODELGATE_METRICS_EXPORTER` of collector.yaml.
    exporter: &'static str,
    /// modelgate's `forward.protocol` to the backend.
    forward: &'static str,
}

const OVER_HTTP: Route = Route {
    exporter: "otlphttp/modelgate",
    forward: "http/protobuf",
};

const OVER_GRPC: Route = Route {
    exporter: "otlp/modelgate",
    forward: "grpc",
};

/// telemetrygen traces: each is a CLIENT span with one SERVER child.
const TG_TRACES: usize = 100;
/// telemetrygen log records: not request logs, so `unmapped_log` in
/// modelgate, forwarded all the same.
const TG_LOGS: usize = 150;
/// Requests the SDK records as spans, and logs as request log records.
const SDK_SPANS: usize = 120;
const SDK_LOGS: usize = 80;
/// Request log lines in the tailed file.
const FILE_LINES: usize = 40;
/// telemetrygen metrics: gauges, one data point each; not request
/// histograms, so read by nothing in modelgate, forwarded all the same.
const TG_METRICS: usize = 60;
/// Batches of requests the SDK measures in `http.server.request.duration`,
/// one export each (cumulative: every export holds each stream again).
const SDK_HISTOGRAM_BATCHES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_collector_sends_every_item_once_through_modelgate_over_otlp_http() {
    through_the_collector(&OVER_HTTP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_collector_sends_every_item_once_through_modelgate_over_otlp_grpc() {
    through_the_collector(&OVER_GRPC).await;
}

/// `n` requests alternating between two routes and two versions, v2 slower.
fn requests(n: usize) -> Vec<Request> {
    (0..n)
        .map(|i| {
            let route = if i % 2 == 0 { "/pay" } else { "/refund" };
            let (version, ms) = if i % 4 < 2 { ("v1", 40) } else { ("v2", 90) };
            Request::new(route, version, ms + (i % 7) as u64)
        })
        .collect()
}

/// The counts a backend should hold: per service, per signal.
/// (Metrics: the telemetrygen gauges; the SDK's points are counted as
/// the agent sent them, see [`through_the_collector`].)
fn expected(sdk_points: usize) -> BTreeMap<Signal, BTreeMap<String, usize>> {
    let of = |items: &[(&str, usize)]| {
        items
            .iter()
            .map(|(s, n)| ((*s).to_owned(), *n))
            .collect::<BTreeMap<_, _>>()
    };
    BTreeMap::from([
        (
            Signal::Traces,
            of(&[("tg-traces", 2 * TG_TRACES), ("sdk-checkout", SDK_SPANS)]),
        ),
        (
            Signal::Logs,
            of(&[
                ("tg-logs", TG_LOGS),
                ("sdk-lending", SDK_LOGS),
                ("file-lending", FILE_LINES),
            ]),
        ),
        (
            Signal::Metrics,
            of(&[("tg-metrics", TG_METRICS), ("sdk-quotes", sdk_points)]),
        ),
    ])
}

fn received_by(text: &DebugText) -> BTreeMap<Signal, BTreeMap<String, usize>> {
    [Signal::Traces, Signal::Logs, Signal::Metrics]
        .into_iter()
        .map(|s| (s, text.counts(s)))
        .collect()
}

/// The agent Collector's own count of `name` with `labels` (summed over
/// the attributes not named), 0 when absent.
async fn otelcol_metric(
    metrics_addr: std::net::SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_sum(&text, name, labels).unwrap_or(0.0)
}

async fn through_the_collector(route: &Route) {
    let dir = tempfile::tempdir().unwrap();
    let tests_otelcol = repo().join("tests/otelcol");
    let examples = repo().join("examples/otel-collector");

    // The backend: a second Collector writing what it receives to a file.
    let debug_file = dir.path().join("backend.txt");
    let (backend_grpc, backend_http) = (free_addr(), free_addr());
    let backend = Otelcol::start(
        &tests_otelcol.join("backend.yaml"),
        &[
            ("OTLP_GRPC_ENDPOINT", &backend_grpc.to_string()),
            ("OTLP_HTTP_ENDPOINT", &backend_http.to_string()),
            ("DEBUG_FILE", debug_file.to_str().unwrap()),
        ],
    )
    .await;

    // modelgate on the example configuration, forwarding to the backend.
    let forward_to = if route.forward == "grpc" {
        backend_grpc
    } else {
        backend_http
    };
    let snapshots = dir.path().join("snapshots");
    let modelgate = Collector::start(&[
        (
            "MODELGATE_CONFIG",
            examples.join("modelgate.yaml").to_str().unwrap(),
        ),
        (
            "MODELGATE_FORWARD__ENDPOINT",
            &format!("http://{forward_to}"),
        ),
        ("MODELGATE_FORWARD__PROTOCOL", route.forward),
        ("MODELGATE_SNAPSHOT__DIR", snapshots.to_str().unwrap()),
    ])
    .await;

    // The agent: collector.yaml as it is, its addresses from the environment.
    let log_file = dir.path().join("requests.jsonl");
    let mut lines = String::new();
    for (i, r) in requests(FILE_LINES).iter().enumerate() {
        lines.push_str(&format!(
            "{{\"endpoint\": \"{}\", \"responseTimeMs\": {}, \"status\": \"OK\", \"modelVersion\": \"{}\", \"line\": {i}}}\n",
            r.route,
            r.duration.as_millis(),
            r.version
        ));
    }
    std::fs::write(&log_file, lines).unwrap();
    let (agent_grpc, agent_http, agent_metrics) = (free_addr(), free_addr(), free_addr());
    let agent = Otelcol::start(
        &examples.join("collector.yaml"),
        &[
            ("OTLP_GRPC_ENDPOINT", &agent_grpc.to_string()),
            ("OTLP_HTTP_ENDPOINT", &agent_http.to_string()),
            ("OTELCOL_METRICS_PORT", &agent_metrics.port().to_string()),
            ("MODELGATE_HTTP", &format!("http://{}", modelgate.http_addr)),
            ("MODELGATE_GRPC", &modelgate.grpc.to_string()),
            ("MODELGATE_TRACES_EXPORTER", route.exporter),
            ("MODELGATE_LOGS_EXPORTER", route.exporter),
            ("MODELGATE_METRICS_EXPORTER", route.exporter),
            ("LOG_FILE", log_file.to_str().unwrap()),
            ("LOG_START_AT", "beginning"),
            ("SERVICE_NAME", "file-lending"),
        ],
    )
    .await;

    // The clients, at once: telemetrygen traces and metrics over gRPC and
    // logs over HTTP; the SDK's spans, request logs and request-duration
    // histograms over gRPC.
    let (agent_grpc_s, agent_http_s) = (agent_grpc.to_string(), agent_http.to_string());
    let (tg_traces, tg_logs) = (TG_TRACES.to_string(), TG_LOGS.to_string());
    let tg_metrics = TG_METRICS.to_string();
    let metrics_args = [
        "metrics",
        "--otlp-endpoint",
        &agent_grpc_s,
        "--otlp-insecure",
        "--service",
        "tg-metrics",
        "--metrics",
        &tg_metrics,
        "--rate",
        "0",
    ];
    let traces_args = [
        "traces",
        "--otlp-endpoint",
        &agent_grpc_s,
        "--otlp-insecure",
        "--service",
        "tg-traces",
        "--traces",
        &tg_traces,
        "--rate",
        "0",
    ];
    let logs_args = [
        "logs",
        "--otlp-http",
        "--otlp-endpoint",
        &agent_http_s,
        "--otlp-insecure",
        "--service",
        "tg-logs",
        "--logs",
        &tg_logs,
        "--rate",
        "0",
    ];
    let sdk_endpoint = format!("http://{agent_grpc}");
    let (sdk_spans, sdk_logs) = (requests(SDK_SPANS), requests(SDK_LOGS));
    let sdk_histograms: Vec<Vec<sdk::Request>> = (0..SDK_HISTOGRAM_BATCHES)
        .map(|_| requests(SDK_SPANS))
        .collect();
    tokio::join!(
        telemetrygen(&traces_args),
        telemetrygen(&logs_args),
        telemetrygen(&metrics_args),
        sdk::export_spans(&sdk_endpoint, "sdk-checkout", &sdk_spans),
        sdk::export_request_logs(&sdk_endpoint, "sdk-lending", &sdk_logs),
        sdk::export_request_histograms(&sdk_endpoint, "sdk-quotes", &sdk_histograms),
    );

    // The SDK's cumulative points: its four streams (two routes, two
    // versions) at every flush and once more at shutdown.
    let took_points = otelcol_metric(
        agent_metrics,
        "otelcol_receiver_accepted_metric_points",
        &[],
    )
    .await;
    let sdk_points = took_points as usize - TG_METRICS;
    assert_eq!(
        sdk_points,
        4 * (SDK_HISTOGRAM_BATCHES + 1),
        "the SDK's histograms"
    );
    let expected = expected(sdk_points);
    let arrived = eventually(Duration::from_secs(60), || async {
        (received_by(&DebugText::read(&debug_file)) == expected).then_some(())
    })
    .await;
    assert!(
        arrived.is_some(),
        "the backend holds {:?}, expected {expected:?}\nagent log:\n{}\nmodelgate metrics:\n{}",
        received_by(&DebugText::read(&debug_file)),
        agent.log(),
        modelgate.metrics().await
    );

    // Counted where they passed: the agent took and sent every item once...
    let spans = (2 * TG_TRACES + SDK_SPANS) as f64;
    let logs = (TG_LOGS + SDK_LOGS + FILE_LINES) as f64;
    let points = took_points;
    let exporter = [("exporter", route.exporter)];
    let sent = |name: &'static str| otelcol_metric(agent_metrics, name, &exporter);
    assert_eq!(
        (
            sent("otelcol_exporter_sent_spans").await,
            sent("otelcol_exporter_sent_log_records").await,
            sent("otelcol_exporter_sent_metric_points").await,
        ),
        (spans, logs, points),
        "the agent's exporters"
    );
    for failed in [
        "otelcol_exporter_send_failed_spans",
        "otelcol_exporter_send_failed_log_records",
        "otelcol_exporter_send_failed_metric_points",
    ] {
        assert_eq!(
            otelcol_metric(agent_metrics, failed, &[]).await,
            0.0,
            "{failed}"
        );
    }
    // ...modelgate accepted every span, request log and data point (the
    // gauges ignored, the histograms read), refused the telemetrygen
    // records as not request logs, and forwarded all of it...
    let metrics = modelgate.metrics().await;
    let mapped_logs = (SDK_LOGS + FILE_LINES) as f64;
    let accepted = |signal| {
        metric(
            &metrics,
            "modelgate_receiver_accepted_total",
            &[("signal", signal)],
        )
    };
    assert_eq!(
        (accepted("traces"), accepted("logs"), accepted("metrics")),
        (Some(spans), Some(mapped_logs), Some(points)),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "modelgate_receiver_refused_total",
            &[("reason", "invalid_point")]
        ),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "modelgate_receiver_refused_total",
            &[("reason", "unmapped_log")]
        ),
        Some(TG_LOGS as f64),
        "{metrics}"
    );
    for counter in ["modelgate_forward_refused_total", "modelgate_forward_queue"] {
        assert_eq!(
            metric(&metrics, counter, &[]),
            Some(0.0),
            "{counter}: {metrics}"
        );
    }
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("modelgate_forward_dropped_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // ...and judged them: the SDK's versions are series of their service,
    // from its spans and from its histograms alike.
    for service in ["sdk-checkout", "sdk-quotes"] {
        let versions = modelgate
            .json(&format!("/api/v1/versions?service={service}"))
            .await;
        for v in ["v1", "v2"] {
            assert!(
                versions.to_string().contains(&format!("\"{v}\"")),
                "{service}: {versions}"
            );
        }
    }

    // The backend once everything upstream has stopped and drained: the
    // same items, none twice.
    agent.stop().await;
    assert!(modelgate.stop().await.success());
    backend.stop().await;
    let text = DebugText::read(&debug_file);
    assert_eq!(received_by(&text), expected);
    for signal in [Signal::Traces, Signal::Logs, Signal::Metrics] {
        let twice = text.duplicates(signal);
        assert!(twice.is_empty(), "{signal:?} delivered twice: {twice:?}");
    }
    println!(
        "agent Collector -> modelgate via {}, forwarded over {}: {spans} spans, {logs} log records and {points} metric data points, each once at the backend",
        route.exporter, route.forward
    );
}
