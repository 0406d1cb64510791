//! Spans without a route, end to end: only `url.path`, with an id in every
//! path (`/users/18273/profile`, `/orders/<uuid>`). Without templates each
//! id would be an endpoint of its own (thousands of series of one request,
//! none ever judged, a huge `/metrics`); with them the ids collapse into
//! one templated endpoint each, a candidate twice as slow fires there, and
//! `/metrics` stays small.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use modelgate_e2e::{eventually, metric, Collector};
use modelgate_fixture::{attr_str, request_of, SpanSpec};
use prost::Message;

/// Requests per version per endpoint, every one with an id of its own.
const N: u64 = 1_500;

/// A request to a raw path, no route.
fn raw(path: &str, version: &str, ms: u64) -> SpanSpec {
    SpanSpec::server("accounts", "GET", ms)
        .attr(attr_str("url.path", path))
        .attr(attr_str("model.version", version))
}

/// A UUID made of `i`.
fn uuid(i: u64) -> String {
    format!("3f2b8c1e-9a4d-4e6f-8b7a-{i:012x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_collapse_into_one_templated_endpoint_where_a_2x_slower_candidate_fires() {
    let collector = Collector::start(&[]).await;
    // v1 first (the baseline): 40 ms on both; then v2, 80 ms on the user
    // profiles and unchanged on orders.
    for (version, users_ms, offset) in [("v1", 40, 0), ("v2", 80, N)] {
        let spans: Vec<SpanSpec> = (0..N)
            .flat_map(|i| {
                let id = offset + i;
                [
                    raw(
                        &format!("/users/{}/profile", 18_000 + id),
                        version,
                        users_ms + i % 7,
                    ),
                    raw(
                        &format!("/orders/{}?expand=items", uuid(id)),
                        version,
                        40 + i % 7,
                    ),
                ]
            })
            .collect();
        for chunk in spans.chunks(500) {
            let (status, _, _) = collector
                .post_otlp(
                    "/v1/traces",
                    "application/x-protobuf",
                    None,
                    request_of(chunk.iter().cloned()).encode_to_vec(),
                )
                .await;
            assert_eq!(status, 200);
        }
    }

    let fired = eventually(Duration::from_secs(30), || async {
        let r = collector
            .json("/api/v1/regressions?service=accounts&min_severity=critical")
            .await;
        r["regressions"]
            .as_array()?
            .iter()
            .find(|x| {
                x["endpoint"] == "/users/{id}/profile"
                    && x["candidate_version"] == "v2"
                    && x["baseline_version"] == "v1"
                    && x["rule"] == "relative"
            })
            .cloned()
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no alert on the templated endpoint; log:\n{}",
            collector.log()
        )
    });
    println!("raw paths: {}", fired["evidence"]["detail"]);

    // Two endpoints of two versions each: four series, not 6,000.
    let versions = collector.json("/api/v1/versions?service=accounts").await;
    let mut endpoints: Vec<&str> = versions["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap())
        .collect();
    endpoints.sort_unstable();
    assert_eq!(
        endpoints,
        ["/orders/{id}", "/users/{id}/profile"],
        "{versions}"
    );
    // Orders did not slow down: nothing fires there.
    let all = collector.json("/api/v1/regressions?service=accounts").await;
    assert!(
        all["regressions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["endpoint"] != "/orders/{id}"),
        "{all}"
    );
    let text = collector.metrics().await;
    assert_eq!(metric(&text, "modelgate_series_active", &[]), Some(4.0));
    assert!(!text.contains("18001"), "a raw id reached /metrics");
    assert!(
        text.len() < 64 * 1024,
        "/metrics is {} bytes for four series",
        text.len()
    );
    println!(
        "raw paths: {} requests on {} distinct paths -> 2 endpoints, /metrics {} bytes",
        4 * N,
        4 * N,
        text.len()
    );
    assert!(collector.stop().await.success());
}
