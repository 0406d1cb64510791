//! The lending incident and an A/A replay, end to end: the real binary, the
//! real `opentelemetry-otlp` exporter (through `modelgate::replay`), and the
//! answers read back over Prometheus text, JSON and gRPC.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use modelgate::replay::{replay, ReplayOptions, Scenario};
use modelgate_e2e::{eventually, metric, metric_sum, Collector};
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::query_client::QueryClient;

const ENDPOINTS: [&str; 2] = ["/risk-score", "/funding-approve"];

fn options(collector: &Collector) -> ReplayOptions {
    ReplayOptions {
        endpoint: collector.grpc_url(),
        rate: None,
        ..ReplayOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lending_incident_fires_for_v13_against_v12_on_both_endpoints() {
    let collector = Collector::start(&[]).await;
    assert_eq!(collector.get("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(collector.get("/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(
        collector.get("/api/v1/verdict?service=x").await.0,
        400,
        "candidate is required"
    );
    assert_eq!(collector.get("/nowhere").await.0, 404);
    let mut query = QueryClient::connect(collector.grpc_url()).await.unwrap();
    let mut alerts = query
        .watch_alerts(pb::WatchAlertsRequest {
            service: "lending-api".into(),
        })
        .await
        .unwrap()
        .into_inner();

    let scenario = Scenario::load("lending").unwrap();
    // v1.3 starts after the first phase's requests at the scenario's rate.
    let v13_starts = Duration::from_secs_f64(scenario.phases[0].requests as f64 / scenario.rate);
    let started = Instant::now();
    let sender = tokio::spawn({
        let options = options(&collector);
        async move { replay(&scenario, &options).await }
    });

    // Prometheus: regression_active = 1 for v1.3 vs v1.2 on both endpoints.
    let fired = eventually(Duration::from_secs(20), || async {
        let text = collector.metrics().await;
        ENDPOINTS
            .iter()
            .all(|ep| {
                metric(
                    &text,
                    "modelgate_regression_active",
                    &[
                        ("endpoint", ep),
                        ("candidate_version", "v1.3"),
                        ("baseline_version", "v1.2"),
                        ("rule", "sla"),
                    ],
                ) == Some(1.0)
            })
            .then_some(text)
    })
    .await;
    let text = fired.unwrap_or_else(|| panic!("no alert within 20 s; log:\n{}", collector.log()));
    println!(
        "lending: sla alert firing on both endpoints {:.1} s after the first v1.3 request",
        started.elapsed().saturating_sub(v13_starts).as_secs_f64()
    );
    let report = sender.await.unwrap().unwrap();
    assert_eq!(report.failed, 0);
    assert_eq!(report.requests, 500);
    // The other rules fire too, and nothing fires for v1.2.
    let text = eventually(Duration::from_secs(10), || async {
        let text = collector.metrics().await;
        ENDPOINTS
            .iter()
            .all(|ep| {
                ["relative", "errors"].iter().all(|rule| {
                    metric(
                        &text,
                        "modelgate_regression_active",
                        &[
                            ("endpoint", ep),
                            ("candidate_version", "v1.3"),
                            ("rule", rule),
                        ],
                    ) == Some(1.0)
                })
            })
            .then_some(text)
    })
    .await
    .unwrap_or(text);
    for ep in ENDPOINTS {
        for rule in ["relative", "errors"] {
            assert_eq!(
                metric(
                    &text,
                    "modelgate_regression_active",
                    &[
                        ("endpoint", ep),
                        ("candidate_version", "v1.3"),
                        ("baseline_version", "v1.2"),
                        ("rule", rule)
                    ]
                ),
                Some(1.0),
                "{ep} {rule}\n{text}"
            );
        }
        // The baseline is held to the absolute rules, and never breached
        // them: it has no alert rows (they appear from a first breach).
        assert_eq!(
            metric(
                &text,
                "modelgate_regression_active",
                &[("endpoint", ep), ("candidate_version", "v1.2")]
            ),
            None,
            "{text}"
        );
        assert!(
            metric(
                &text,
                "modelgate_request_duration_seconds_count",
                &[
                    ("endpoint", ep),
                    ("model_version", "v1.3"),
                    ("outcome", "timeout")
                ]
            )
            .unwrap()
                > 0.0
        );
    }
    assert!(
        metric(
            &text,
            "modelgate_alerts_total",
            &[("candidate_version", "v1.3")]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        metric_sum(&text, "modelgate_receiver_accepted_total", &[]),
        Some(500.0)
    );

    // JSON API.
    let json = collector
        .json("/api/v1/regressions?service=lending-api")
        .await;
    let regressions = json["regressions"].as_array().unwrap();
    for ep in ENDPOINTS {
        for rule in ["sla", "relative", "errors"] {
            let r = regressions
                .iter()
                .find(|r| r["endpoint"] == ep && r["rule"] == rule)
                .unwrap_or_else(|| panic!("{ep} {rule} not in {json}"));
            assert_eq!(r["candidate_version"], "v1.3");
            assert_eq!(r["baseline_version"], "v1.2");
            assert_eq!(r["state"], "ALERT_STATE_FIRING");
            assert!(!r["evidence"]["detail"].as_str().unwrap().is_empty());
        }
    }
    assert!(
        regressions.iter().all(|r| r["candidate_version"] == "v1.3"),
        "{json}"
    );
    let versions = collector
        .json("/api/v1/versions?service=lending-api&endpoint=/risk-score")
        .await;
    let eps = versions["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0]["baseline_version"], "v1.2");
    let v13 = eps[0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "v1.3")
        .unwrap();
    let p95 = v13["p95_ms"].as_f64().unwrap();
    assert!((700.0..=830.0).contains(&p95), "{v13}");
    assert!(v13["timeout_rate"].as_f64().unwrap() > 0.6, "{v13}");
    let verdict = collector
        .json("/api/v1/verdict?service=lending-api&candidate=v1.3")
        .await;
    assert_eq!(
        verdict["outcome"], "VERDICT_OUTCOME_REGRESSION",
        "{verdict}"
    );
    assert_eq!(verdict["endpoints"].as_array().unwrap().len(), 2);

    // gRPC API: the same regressions, a verdict, and the alert stream.
    let grpc = query
        .list_regressions(pb::ListRegressionsRequest {
            service: "lending-api".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc.regressions.len(), regressions.len());
    assert!(grpc
        .regressions
        .iter()
        .all(|r| r.candidate_version == "v1.3" && r.baseline_version == "v1.2"));
    let verdict = query
        .get_verdict(pb::GetVerdictRequest {
            service: "lending-api".into(),
            candidate_version: "v1.3".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verdict.outcome(), pb::VerdictOutcome::Regression);
    let v12 = query
        .get_verdict(pb::GetVerdictRequest {
            service: "lending-api".into(),
            candidate_version: "v1.2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(v12.outcome(), pb::VerdictOutcome::Regression, "{v12:?}");
    let mut firing = 0;
    while firing < 6 {
        let event = tokio::time::timeout(Duration::from_secs(10), alerts.message())
            .await
            .expect("alert events within 10 s")
            .unwrap()
            .expect("stream open");
        let r = event.regression.unwrap();
        assert_eq!(r.candidate_version, "v1.3");
        if r.state() == pb::AlertState::Firing {
            firing += 1;
        }
    }
    let status = collector.stop().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aa_replay_of_thousands_of_requests_fires_nothing() {
    let collector = Collector::start(&[]).await;
    let scenario = Scenario::load("aa").unwrap();
    let report = replay(
        &scenario,
        &ReplayOptions {
            rate: Some(3000.0),
            ..options(&collector)
        },
    )
    .await
    .unwrap();
    assert_eq!(report.failed, 0);
    assert_eq!(report.requests, 6000);
    // Every sample in, and several evaluations over all of it.
    eventually(Duration::from_secs(20), || async {
        (metric_sum(
            &collector.metrics().await,
            "modelgate_receiver_accepted_total",
            &[],
        ) == Some(6000.0))
        .then_some(())
    })
    .await
    .expect("all spans accepted");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let text = collector.metrics().await;
    let judged: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("modelgate_regression_active{"))
        .collect();
    // v1 and v2 start together on two endpoints: the one whose first
    // request came first on the service (v1, unless the machine delayed
    // its sends) is the baseline on both. Per endpoint sla, errors,
    // relative and fanout on the candidate (8 alerts), and the candidate
    // across both endpoints (4): 12 alerts, each with a warning and a
    // critical row. The baseline never breached its absolute rules: no
    // rows of its own.
    assert_eq!(judged.len(), 24, "{judged:#?}");
    let candidate = |v: &str| format!("candidate_version=\"{v}\"");
    assert!(
        ["v1", "v2"]
            .iter()
            .any(|v| judged.iter().all(|l| l.contains(&candidate(v)))),
        "one candidate on every row: {judged:#?}"
    );
    assert!(judged.iter().all(|l| l.ends_with(" 0")), "{judged:#?}");
    assert!(
        !text.contains("modelgate_alerts_total{")
            || text
                .lines()
                .filter(|l| l.starts_with("modelgate_alerts_total{"))
                .all(|l| l.ends_with(" 0")),
        "{text}"
    );
    let json = collector.json("/api/v1/regressions").await;
    assert_eq!(json["regressions"].as_array().unwrap().len(), 0, "{json}");
    assert!(!collector.log().contains("firing"), "{}", collector.log());
    let versions = collector.json("/api/v1/versions?service=aa-api").await;
    let total: u64 = versions["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["versions"].as_array().unwrap().iter())
        .map(|v| v["count"].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 6000);
    assert!(collector.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecommerce_release_is_flagged_with_fanout_evidence_and_the_patch_is_not() {
    let collector = Collector::start(&[]).await;
    let scenario = Scenario::load("ecommerce").unwrap();
    let report = replay(&scenario, &options(&collector)).await.unwrap();
    assert_eq!(report.failed, 0);
    let firing = |json: &serde_json::Value, endpoint: &str, version: &str, rule: &str| {
        json["regressions"].as_array().unwrap().iter().any(|r| {
            r["endpoint"] == endpoint
                && r["candidate_version"] == version
                && r["rule"] == rule
                && r["baseline_version"] == "v2.7"
        })
    };
    let json = eventually(Duration::from_secs(20), || async {
        let json = collector.json("/api/v1/regressions?service=shop-api").await;
        (firing(&json, "/recommendations", "v2.8", "fanout")
            && firing(&json, "/product", "v2.8", "fanout"))
        .then_some(json)
    })
    .await
    .unwrap_or_else(|| panic!("no fanout alert for v2.8; log:\n{}", collector.log()));
    let fanout = json["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["endpoint"] == "/recommendations" && r["rule"] == "fanout")
        .unwrap();
    let evidence = &fanout["evidence"];
    println!("ecommerce fanout evidence: {}", evidence["detail"]);
    assert!(
        evidence["candidate_value"].as_f64().unwrap() > 10.0,
        "{evidence}"
    );
    assert!(
        (evidence["baseline_value"].as_f64().unwrap() - 2.0).abs() < 0.01,
        "{evidence}"
    );
    assert!(
        evidence["candidate_events"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert!(
        evidence["detail"]
            .as_str()
            .unwrap()
            .contains("database calls per request"),
        "{evidence}"
    );
    // /cart was not slowed and its query count did not change.
    assert!(!firing(&json, "/cart", "v2.8", "fanout"), "{json}");
    // The patched version: judged against v2.7, nothing fires.
    let regressions = json["regressions"].as_array().unwrap();
    assert!(
        regressions
            .iter()
            .all(|r| r["candidate_version"] != "v2.8.1"),
        "{json}"
    );
    let verdict = collector
        .json("/api/v1/verdict?service=shop-api&candidate=v2.8.1")
        .await;
    assert_ne!(
        verdict["outcome"], "VERDICT_OUTCOME_REGRESSION",
        "{verdict}"
    );
    let text = collector.metrics().await;
    assert_eq!(
        metric(
            &text,
            "modelgate_regression_verdict",
            &[
                ("endpoint", "/product"),
                ("candidate_version", "v2.8.1"),
                ("rule", "fanout"),
                ("verdict", "pass")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "modelgate_db_calls_per_request",
            &[("endpoint", "/product"), ("model_version", "v2.8.1")]
        )
        .unwrap()
            < 2.5
    );
    assert!(collector.stop().await.success());
}
