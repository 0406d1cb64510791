//! The lending incident judged from metrics alone, end to end: no span and
//! no log record reaches modelgate, only histogram points.
//!
//! - From the OpenTelemetry SDK's `http.server.request.duration` (seconds,
//!   the semantic conventions' advised buckets, cumulative), exported by
//!   `opentelemetry-otlp` over OTLP/gRPC straight to modelgate.
//! - From the spanmetrics connector of the project's own Collector build
//!   (`tests/otelcol`), running `examples/otel-collector/spanmetrics-to-modelgate.yaml`
//!   unchanged, fed with the incident's spans by `modelgate replay`: the
//!   Collector sends modelgate its `traces.span.metrics.duration` (ms,
//!   the connector's default buckets, cumulative) and nothing else.
//!
//! Either way v1.3 fires against v1.2 on both endpoints; every verdict
//! states how many of its requests were read from buckets and how precise
//! their latencies are; fanout, which needs spans, says inconclusive; v1.2
//! never fires.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use modelgate::replay::{replay, ReplayOptions, Scenario};
use modelgate_e2e::otelcol::Otelcol;
use modelgate_e2e::sdk::{self, Request};
use modelgate_e2e::{eventually, free_addr, metric, metric_sum, repo, Collector};

const ENDPOINTS: [&str; 2] = ["/risk-score", "/funding-approve"];

/// The incident as the scenario file has it: 200 requests of v1.2 alone
/// (85 to 119 ms), then 300 of v1.2 and v1.3 side by side, v1.3 at 700 to
/// 819 ms with 80% timeouts; in batches of 100, one export each.
fn incident() -> Vec<Vec<Request>> {
    // Both versions on both endpoints: the route alternates every request,
    // the version (beside v1.2) every other.
    let request = |i: usize, version: &str| {
        let route = ENDPOINTS[i % 2];
        if version == "v1.2" {
            Request::new(route, version, 85 + (i % 35) as u64)
        } else {
            let mut r = Request::new(route, version, 700 + (i % 120) as u64);
            r.timed_out = !i.is_multiple_of(5);
            r
        }
    };
    let mut batches: Vec<Vec<Request>> = (0..2)
        .map(|b| (0..100).map(|i| request(b * 100 + i, "v1.2")).collect())
        .collect();
    for b in 0..3 {
        batches.push(
            (0..100)
                .map(|i| request(b * 100 + i, if i % 4 < 2 { "v1.2" } else { "v1.3" }))
                .collect(),
        );
    }
    batches
}

/// The critical regressions of v1.3 against v1.2, once there is one on
/// each endpoint.
async fn v13_fires_on_both_endpoints(collector: &Collector) -> Option<Vec<serde_json::Value>> {
    let r = collector
        .json("/api/v1/regressions?service=lending-api&min_severity=critical")
        .await;
    let found: Vec<serde_json::Value> = r["regressions"]
        .as_array()?
        .iter()
        .filter(|x| x["candidate_version"] == "v1.3" && x["baseline_version"] == "v1.2")
        .cloned()
        .collect();
    ENDPOINTS
        .iter()
        .all(|ep| found.iter().any(|x| x["endpoint"] == *ep))
        .then_some(found)
}

/// What both ways must show once v1.3 fired.
async fn judged_from_histograms_alone(collector: &Collector, how: &str, started: Instant) {
    let fired = eventually(Duration::from_secs(60), || {
        v13_fires_on_both_endpoints(collector)
    })
    .await;
    let Some(fired) = fired else {
        let all = collector
            .json("/api/v1/regressions?service=lending-api")
            .await;
        let versions = collector.json("/api/v1/versions?service=lending-api").await;
        panic!(
            "{how}: v1.3 did not fire on both endpoints\nregressions: {all}\nversions: {versions}\nmetrics:\n{}\nlog:\n{}",
            collector.metrics().await,
            collector.log()
        );
    };
    println!(
        "{how}: v1.3 firing against v1.2 on both endpoints {:.1} s after the first export",
        started.elapsed().as_secs_f64()
    );
    // The latency rules state the buckets' precision; the error rule
    // counts outcomes, which buckets do not blur.
    let latency = fired.iter().filter(|r| r["evidence"]["unit"] == "ms");
    assert!(latency.clone().count() >= 2, "{fired:?}");
    for regression in latency {
        let detail = regression["evidence"]["detail"].as_str().unwrap();
        assert!(
            detail.contains("read from histogram buckets, their latencies known within"),
            "{how}: {regression}"
        );
        // uint64 is a string in the JSON mapping of protobuf.
        let binned: u64 = regression["evidence"]["binned_requests"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(binned > 0, "{how}: {regression}");
    }
    // Only metrics came in.
    let metrics = collector.metrics().await;
    assert!(
        metric(
            &metrics,
            "modelgate_receiver_accepted_total",
            &[("signal", "metrics")]
        )
        .unwrap()
            > 0.0,
        "{metrics}"
    );
    for signal in ["traces", "logs"] {
        assert_eq!(
            metric(
                &metrics,
                "modelgate_receiver_accepted_total",
                &[("signal", signal)]
            ),
            Some(0.0),
            "{how}: {signal}"
        );
    }
    // The baseline never fires; fanout cannot judge histograms.
    let all = collector
        .json("/api/v1/regressions?service=lending-api")
        .await;
    assert!(
        all["regressions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["candidate_version"] != "v1.2"),
        "{how}: {all}"
    );
    let verdict = collector
        .json("/api/v1/verdict?service=lending-api&candidate=v1.3")
        .await;
    assert_eq!(
        verdict["outcome"], "VERDICT_OUTCOME_REGRESSION",
        "{verdict}"
    );
    let text = verdict.to_string();
    assert!(
        text.contains("were read from histogram buckets, which carry no database calls"),
        "{how}: fanout must say inconclusive: {verdict}"
    );
    assert!(
        metric_sum(
            &metrics,
            "modelgate_receiver_refused_total",
            &[("reason", "invalid_point")]
        ) == Some(0.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_from_sdk_http_server_histograms_fires_v13_on_both_endpoints() {
    let collector = Collector::start(&[]).await;
    let started = Instant::now();
    sdk::export_request_histograms(&collector.grpc_url(), "lending-api", &incident()).await;
    judged_from_histograms_alone(&collector, "SDK http.server.request.duration", started).await;
    // Explicit buckets of the semantic conventions: v1.2's (100 ms,
    // 250 ms] is known to 43%, v1.3's (750 ms, 1 s] to 14%.
    let r = collector
        .json("/api/v1/regressions?service=lending-api&min_severity=critical")
        .await;
    let relative = r["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["rule"] == "relative" && x["endpoint"] == "/risk-score")
        .unwrap();
    let error = relative["evidence"]["binned_error"].as_f64().unwrap();
    assert!((error - 150.0 / 350.0).abs() < 0.01, "{relative}");
    assert!(collector.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_through_the_spanmetrics_connector_fires_v13_on_both_endpoints() {
    let collector = Collector::start(&[]).await;
    let (agent_grpc, agent_http, agent_metrics) = (free_addr(), free_addr(), free_addr());
    let otelcol = Otelcol::start(
        &repo().join("examples/otel-collector/spanmetrics-to-modelgate.yaml"),
        &[
            ("OTLP_GRPC_ENDPOINT", &agent_grpc.to_string()),
            ("OTLP_HTTP_ENDPOINT", &agent_http.to_string()),
            ("OTELCOL_METRICS_PORT", &agent_metrics.port().to_string()),
            ("MODELGATE_GRPC", &collector.grpc.to_string()),
            ("SPANMETRICS_FLUSH_INTERVAL", "1s"),
        ],
    )
    .await;
    let started = Instant::now();
    let scenario = Scenario::load("lending").unwrap();
    let report = replay(
        &scenario,
        &ReplayOptions {
            endpoint: format!("http://{agent_grpc}"),
            rate: None,
            seed: None,
            client: Default::default(),
        },
    )
    .await
    .unwrap();
    assert_eq!(report.failed, 0);
    judged_from_histograms_alone(&collector, "spanmetrics connector", started).await;
    otelcol.stop().await;
    assert!(collector.stop().await.success());
}
