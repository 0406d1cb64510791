//! `modelgate gate`, the release gate, end to end: the real binary run as a
//! child process against a running collector fed by `modelgate::replay`,
//! each exit code (0 pass, 1 regression, 2 inconclusive) and the JSON
//! output; plus the verdict overrides refused with their names on both APIs.
//! Every child and every wait is bounded in time.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use modelgate::replay::{replay, ReplayOptions, Scenario};
use modelgate_e2e::{eventually, metric_sum, modelgate_command, Collector};
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::query_client::QueryClient;

/// The longest a gate run may take in these tests (its --wait is shorter).
const GATE_TIMEOUT: Duration = Duration::from_secs(60);

struct Gate {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} after {:.1}s\n--- stdout\n{}--- stderr\n{}",
            self.code,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `modelgate gate <args>` to completion (bounded).
async fn gate(args: &[&str]) -> Gate {
    let started = Instant::now();
    let child = tokio::process::Command::from(modelgate_command(None))
        .arg("gate")
        .args(args)
        .env("MODELGATE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn modelgate gate");
    let out = tokio::time::timeout(GATE_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("modelgate gate {args:?} ran over {GATE_TIMEOUT:?}"))
        .unwrap();
    Gate {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

fn json(run: &Gate) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON: {e}\n{run}"))
}

fn options(collector: &Collector, rate: Option<f64>) -> ReplayOptions {
    ReplayOptions {
        endpoint: collector.grpc_url(),
        rate,
        seed: None,
    }
}

async fn all_accepted(collector: &Collector, n: f64) {
    eventually(Duration::from_secs(20), || async {
        (metric_sum(
            &collector.metrics().await,
            "modelgate_receiver_accepted_total",
            &[],
        ) == Some(n))
        .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{n} spans not accepted; log:\n{}", collector.log()));
}

/// A handful of requests of a new version: far too few to judge.
const CANARY: &str = r#"
name: canary
description: "v1.4 on a handful of requests"
service: lending-api
rate: 100
seed: 3
phases:
  - name: v1.4 canary
    requests: 4
    traffic:
      - version: v1.4
        endpoints: [/risk-score]
        latency_ms: { dist: uniform, min: 85, max: 119 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lending_v13_fails_the_gate_and_too_little_traffic_is_inconclusive() {
    let collector = Collector::start(&[]).await;
    let url = collector.grpc_url();
    let report = replay(
        &Scenario::load("lending").unwrap(),
        &options(&collector, None),
    )
    .await
    .unwrap();
    assert_eq!(report.failed, 0);
    let canary = Scenario::parse("canary", CANARY).unwrap();
    assert_eq!(
        replay(&canary, &options(&collector, None))
            .await
            .unwrap()
            .failed,
        0
    );
    all_accepted(&collector, 504.0).await;

    // Exit 1 with the collector's own thresholds, text.
    let run = gate(&[
        "--url",
        &url,
        "--service",
        "lending-api",
        "--candidate",
        "v1.3",
        "--wait",
        "20s",
    ])
    .await;
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout
            .starts_with("lending-api v1.3: REGRESSION (exit 1)"),
        "{run}"
    );
    for needle in [
        "/risk-score (baseline v1.2): REGRESSION",
        "/funding-approve (baseline v1.2): REGRESSION",
        "sla       REGRESSION",
        "relative  REGRESSION",
        "over the 150 ms limit",
    ] {
        assert!(run.stdout.contains(needle), "{needle} missing\n{run}");
    }
    println!("gate on v1.3:\n{}", run.stdout);

    // Exit 1 with the gate's own thresholds, as JSON.
    let run = gate(&[
        "--url",
        &url,
        "--service",
        "lending-api",
        "--candidate",
        "v1.3",
        "--sla",
        "150ms",
        "--min-samples",
        "50",
        "--wait",
        "20s",
        "--format",
        "json",
    ])
    .await;
    assert_eq!(run.code, 1, "{run}");
    let doc = json(&run);
    assert_eq!(doc["decision"], "regression", "{doc}");
    assert_eq!(doc["exit_code"], 1);
    assert_eq!(doc["verdict"]["outcome"], "VERDICT_OUTCOME_REGRESSION");
    let endpoints = doc["verdict"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "{doc}");
    for e in endpoints {
        assert_eq!(e["baseline_version"], "v1.2");
        let sla = e["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == "sla")
            .unwrap_or_else(|| panic!("no sla rule in {e}"));
        assert_eq!(sla["outcome"], "VERDICT_OUTCOME_REGRESSION", "{e}");
        assert_eq!(sla["evidence"]["threshold"], 150.0);
        assert!(sla["evidence"]["candidate_value"].as_f64().unwrap() > 700.0);
        assert_eq!(sla["evidence"]["test"], "binomial");
        assert!(sla["evidence"]["e_value"].as_f64().unwrap() > 1.0);
    }

    // Exit 2: v1.4 sent four requests; the gate wants 20 and waits 2 s.
    let run = gate(&[
        "--url",
        &url,
        "--service",
        "lending-api",
        "--candidate",
        "v1.4",
        "--min-samples",
        "20",
        "--wait",
        "2s",
    ])
    .await;
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr
            .contains("modelgate gate: inconclusive: not enough evidence within 2s"),
        "{run}"
    );
    assert!(run.stderr.contains("20 needed"), "{run}");
    assert!(run.stdout.contains("INCONCLUSIVE"), "{run}");
    assert!(run.elapsed < Duration::from_secs(10), "{run}");

    // Exit 2: a version the collector never saw.
    let run = gate(&[
        "--url",
        &url,
        "--service",
        "lending-api",
        "--candidate",
        "v9.9",
        "--wait",
        "1s",
        "--format",
        "json",
    ])
    .await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("unknown to the collector"), "{run}");
    let doc = json(&run);
    assert_eq!(doc["decision"], "inconclusive");
    assert_eq!(doc["verdict"]["endpoints"].as_array().unwrap().len(), 0);

    // Exit 2: an override the collector refuses, named; not retried.
    let run = gate(&[
        "--url",
        &url,
        "--service",
        "lending-api",
        "--candidate",
        "v1.3",
        "--sla",
        "0ms",
        "--wait",
        "30s",
    ])
    .await;
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr.contains("InvalidArgument") && run.stderr.contains("sla_limit_ms"),
        "{run}"
    );
    assert!(run.elapsed < Duration::from_secs(10), "{run}");

    // The same overrides on the JSON API: applied, or refused by name.
    let v = collector
        .json("/api/v1/verdict?service=lending-api&candidate=v1.3&endpoint=/risk-score&sla=10s&min_samples=10")
        .await;
    let rules = v["endpoints"][0]["rules"].as_array().unwrap();
    let sla = rules.iter().find(|r| r["rule"] == "sla").unwrap();
    assert_eq!(sla["evidence"]["threshold"], 10000.0, "{v}");
    // Within the limit, but 87 requests cannot show that a p95 breach would
    // have been caught: not a pass.
    assert_eq!(sla["outcome"], "VERDICT_OUTCOME_INCONCLUSIVE", "{v}");
    let needed: u64 = sla["evidence"]["power"]["candidate_needed"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(needed > 87, "{v}");
    assert_eq!(sla["evidence"]["power"]["sufficient"], false, "{v}");
    assert_eq!(
        v["outcome"], "VERDICT_OUTCOME_REGRESSION",
        "relative still fires: {v}"
    );
    for (query, name) in [
        ("sla=0ms", "sla:"),
        ("sla=fast", "sla:"),
        ("min_samples=0", "min_samples:"),
        ("min_samples=-3", "min_samples"),
    ] {
        let (status, body) = collector
            .get(&format!(
                "/api/v1/verdict?service=lending-api&candidate=v1.3&{query}"
            ))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(name), "{query}: {body}");
    }
    // And on gRPC.
    let mut query = QueryClient::connect(url.clone()).await.unwrap();
    let refused = query
        .get_verdict(pb::GetVerdictRequest {
            service: "lending-api".into(),
            candidate_version: "v1.3".into(),
            min_samples: Some(0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().starts_with("min_samples:"), "{refused:?}");
    assert!(collector.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aa_candidate_passes_the_gate() {
    let collector = Collector::start(&[]).await;
    let url = collector.grpc_url();
    let report = replay(
        &Scenario::load("aa").unwrap(),
        &options(&collector, Some(3000.0)),
    )
    .await
    .unwrap();
    assert_eq!(report.failed, 0);
    all_accepted(&collector, 6000.0).await;
    // Each endpoint chose its own baseline (v1 or v2, by traffic): the JSON
    // run names v1 as the baseline of both; the text run below takes the
    // collector's baseline of /predict.
    let versions = eventually(Duration::from_secs(10), || async {
        let v = collector
            .json("/api/v1/versions?service=aa-api&endpoint=/predict")
            .await;
        (v["endpoints"][0]["baseline_version"] != "").then_some(v)
    })
    .await
    .expect("a baseline on /predict");
    let own_baseline = versions["endpoints"][0]["baseline_version"]
        .as_str()
        .unwrap()
        .to_owned();
    let (baseline, candidate) = ("v1", "v2");

    let run = gate(&[
        "--url",
        &url,
        "--service",
        "aa-api",
        "--candidate",
        candidate,
        "--baseline",
        baseline,
        "--sla",
        "150ms",
        "--min-samples",
        "500",
        "--wait",
        "20s",
        "--format",
        "json",
    ])
    .await;
    assert_eq!(run.code, 0, "{run}");
    let doc = json(&run);
    assert_eq!(doc["decision"], "pass", "{doc}");
    assert_eq!(doc["exit_code"], 0);
    assert_eq!(doc["candidate"], candidate);
    assert_eq!(doc["verdict"]["outcome"], "VERDICT_OUTCOME_PASS");
    let endpoints = doc["verdict"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "{doc}");
    for e in endpoints {
        assert_eq!(e["baseline_version"], baseline);
        let rules = e["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 4, "{e}");
        for r in rules {
            assert_eq!(r["outcome"], "VERDICT_OUTCOME_PASS", "{r}");
            let n: u64 = r["evidence"]["candidate_count"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(n >= 500, "{r}");
        }
    }

    // The collector's own thresholds, baseline and stored judgements, as
    // text, on one endpoint.
    let candidate = if own_baseline == "v1" { "v2" } else { "v1" };
    let run = gate(&[
        "--url",
        &url,
        "--service",
        "aa-api",
        "--candidate",
        candidate,
        "--endpoint",
        "/predict",
        "--wait",
        "20s",
    ])
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout
            .starts_with(&format!("aa-api {candidate}: PASS (exit 0)")),
        "{run}"
    );
    assert!(
        run.stdout
            .contains(&format!("/predict (baseline {own_baseline}): PASS")),
        "{run}"
    );
    assert!(!run.stdout.contains("/embed"), "{run}");
    println!("gate on the A/A candidate:\n{}", run.stdout);
    assert!(collector.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_collector_is_inconclusive() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = gate(&[
        "--url",
        &url,
        "--service",
        "lending-api",
        "--candidate",
        "v1.3",
        "--wait",
        "2s",
    ])
    .await;
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr.contains(&format!(
            "modelgate gate: inconclusive: collector unreachable at {url}"
        )),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");
    assert!(run.elapsed < Duration::from_secs(10), "{run}");
    let run = gate(&[
        "--url",
        &url,
        "--service",
        "lending-api",
        "--candidate",
        "v1.3",
        "--wait",
        "0s",
        "--format",
        "json",
    ])
    .await;
    assert_eq!(run.code, 2, "{run}");
    let doc = json(&run);
    assert_eq!(doc["decision"], "inconclusive");
    assert!(doc["verdict"].is_null());
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("collector unreachable"),
        "{doc}"
    );
}
