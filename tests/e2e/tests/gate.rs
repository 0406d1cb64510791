//! `modelgate gate`, the release gate, end to end: the real binary run as a
//! child process against a running collector fed by `modelgate::replay`,
//! each exit code (0 pass, 1 regression, 2 inconclusive; 64 usage, 69
//! connection, 77 authentication and 78 configuration are here and in
//! `tls_auth.rs`) and the JSON output; plus the verdict overrides refused
//! with their names on both APIs. Every child and every wait is bounded in
//! time.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use modelgate::replay::{replay, ReplayOptions, Scenario};
use modelgate_e2e::{eventually, metric_sum, run_modelgate, Collector, Run};
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::query_client::QueryClient;

/// The longest a gate run may take in these tests (its --wait is shorter).
const GATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `modelgate gate <args>` to completion (bounded), quietly.
async fn gate(args: &[&str]) -> Run {
    let mut all = vec!["gate"];
    all.extend_from_slice(args);
    run_modelgate(&all, &[("MODELGATE_LOG", "warn")], GATE_TIMEOUT).await
}

/// `modelgate gate --url <url> --service <service> --candidate <candidate>
/// <rest>`.
async fn gate_for(url: &str, service: &str, candidate: &str, rest: &[&str]) -> Run {
    let mut args = vec!["--url", url, "--service", service, "--candidate", candidate];
    args.extend_from_slice(rest);
    gate(&args).await
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON: {e}\n{run}"))
}

fn options(collector: &Collector, rate: Option<f64>) -> ReplayOptions {
    ReplayOptions {
        endpoint: collector.grpc_url(),
        rate,
        ..ReplayOptions::default()
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
    let run = gate_for(&url, "lending-api", "v1.3", &["--wait", "20s"]).await;
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
    let run = gate_for(
        &url,
        "lending-api",
        "v1.3",
        &[
            "--sla",
            "150ms",
            "--min-samples",
            "50",
            "--wait",
            "20s",
            "--format",
            "json",
        ],
    )
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
    let run = gate_for(
        &url,
        "lending-api",
        "v1.4",
        &["--min-samples", "20", "--wait", "2s"],
    )
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
    let run = gate_for(
        &url,
        "lending-api",
        "v9.9",
        &["--wait", "1s", "--format", "json"],
    )
    .await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("unknown to the collector"), "{run}");
    let doc = json(&run);
    assert_eq!(doc["decision"], "inconclusive");
    assert_eq!(doc["verdict"]["endpoints"].as_array().unwrap().len(), 0);

    // Exit 64 (usage): an override the collector refuses, named; not retried.
    let run = gate_for(
        &url,
        "lending-api",
        "v1.3",
        &["--sla", "0ms", "--wait", "30s"],
    )
    .await;
    assert_eq!(run.code, 64, "{run}");
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

    let run = gate_for(
        &url,
        "aa-api",
        candidate,
        &[
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
        ],
    )
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
    let run = gate_for(
        &url,
        "aa-api",
        candidate,
        &["--endpoint", "/predict", "--wait", "20s"],
    )
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
async fn unreachable_collector_is_a_connection_error() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = gate_for(&url, "lending-api", "v1.3", &["--wait", "2s"]).await;
    assert_eq!(run.code, 69, "{run}");
    assert!(
        run.stderr
            .contains(&format!("modelgate gate: collector unreachable at {url}")),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");
    assert!(run.elapsed < Duration::from_secs(10), "{run}");
    let run = gate_for(
        &url,
        "lending-api",
        "v1.3",
        &["--wait", "0s", "--format", "json"],
    )
    .await;
    assert_eq!(run.code, 69, "{run}");
    let doc = json(&run);
    assert_eq!(doc["decision"], "inconclusive");
    assert_eq!(doc["exit_code"], 69);
    assert!(doc["verdict"].is_null());
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("collector unreachable"),
        "{doc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_and_the_wrong_port_are_told_apart() {
    let collector = Collector::start(&[]).await;
    let base = ["--service", "lending-api", "--candidate", "v1.3"];
    // 64: what clap refuses (it would exit 2, the code of inconclusive).
    for (args, said) in [
        (vec!["--bogus"], "--bogus"),
        (vec!["--wait", "soon"], "--wait"),
        (vec!["--min-samples", "0"], "--min-samples"),
        (vec!["--format", "yaml"], "--format"),
        (vec!["--url", "ftp://127.0.0.1:4317"], "http:// or https://"),
    ] {
        let mut all: Vec<&str> = base.to_vec();
        all.extend(args.iter().copied());
        let run = gate(&all).await;
        assert_eq!(run.code, 64, "{args:?}: {run}");
        assert!(run.stderr.contains(said), "{args:?}: {run}");
    }
    let run = gate(&["--candidate", "v1.3"]).await;
    assert_eq!(run.code, 64, "{run}");
    assert!(run.stderr.contains("--service"), "{run}");
    // Help is not an error.
    let run = gate(&["--help"]).await;
    assert_eq!(run.code, 0, "{run}");
    for needle in [
        "EXIT CODES",
        "64",
        "69",
        "77",
        "78",
        "--token-file",
        "--ca-file",
    ] {
        assert!(run.stdout.contains(needle), "{needle} missing\n{run}");
    }

    // 69, named: the admin port and the OTLP/HTTP port instead of gRPC;
    // not retried for the whole wait.
    for (addr, named) in [
        (collector.admin, "this is modelgate's admin port"),
        (collector.http_addr, "this is modelgate's OTLP/HTTP port"),
    ] {
        let url = format!("http://{addr}");
        let mut all: Vec<&str> = base.to_vec();
        all.extend(["--url", &url, "--wait", "30s"]);
        let run = gate(&all).await;
        assert_eq!(run.code, 69, "{run}");
        assert!(run.stderr.contains(named), "{run}");
        assert!(run.stderr.contains("OTLP/gRPC port"), "{run}");
        assert!(!run.stderr.contains("compression flag"), "{run}");
        assert!(run.elapsed < Duration::from_secs(10), "{run}");
    }
    assert!(collector.stop().await.success());
}

/// v2 is 1.25x slower than v1 everywhere: significant, past the warning
/// factor (1.2x) and the 20 ms minimum difference, short of the critical
/// factor (1.5x); the gate holds it to a 1 s SLA, far away.
const MILD: &str = r#"
name: mild
description: "v2 1.25x slower than v1"
service: mild-api
seed: 11
phases:
  - name: v1 and v2 side by side
    requests: 6000
    traffic:
      - version: v1
        endpoints: [/predict]
        latency_ms: { dist: lognormal, median: 200, p95: 300 }
      - version: v2
        endpoints: [/predict]
        latency_ms: { dist: lognormal, median: 250, p95: 375 }
"#;

/// One version only: nothing to compare it with.
const SOLO: &str = r#"
name: solo
description: "v1 alone"
service: solo-api
seed: 12
phases:
  - name: v1 alone
    requests: 2000
    traffic:
      - version: v1
        endpoints: [/predict]
        latency_ms: { dist: lognormal, median: 50, p95: 90 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warning_fails_the_gate_only_on_request_and_no_baseline_is_inconclusive() {
    let collector = Collector::start(&[]).await;
    let url = collector.grpc_url();
    for yaml in [MILD, SOLO] {
        let scenario = Scenario::parse("test", yaml).unwrap();
        let report = replay(&scenario, &options(&collector, Some(4000.0)))
            .await
            .unwrap();
        assert_eq!(report.failed, 0);
    }
    all_accepted(&collector, 8000.0).await;
    /// The gate on v2 against v1, held to a 1 s SLA, for 3 s at most.
    async fn mild(url: &str, rest: &[&str]) -> Run {
        let args = [&["--baseline", "v1", "--sla", "1s", "--wait", "3s"], rest].concat();
        gate_for(url, "mild-api", "v2", &args).await
    }

    // Default --fail-on critical: printed as a warning, watched for the
    // whole wait (it might grow critical), exit 0.
    let run = mild(&url, &[]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout.starts_with("mild-api v2: WARNING (exit 0)"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("/predict (baseline v1): REGRESSION warning"),
        "{run}"
    );
    // Asked until the last poll the wait leaves room for (1 s apart), not once.
    assert!(run.elapsed >= Duration::from_secs(2), "{run}");

    // --fail-on warning: exit 1 at once.
    let run = mild(&url, &["--fail-on", "warning", "--format", "json"]).await;
    assert_eq!(run.code, 1, "{run}");
    let doc = json(&run);
    assert_eq!(doc["decision"], "regression", "{doc}");
    assert_eq!(doc["fail_on"], "warning");
    assert_eq!(doc["verdict"]["severity"], "SEVERITY_WARNING", "{doc}");
    assert_eq!(doc["polls"], 1, "{doc}");

    // A bad severity is a usage error naming the choices.
    let run = mild(&url, &["--fail-on", "severe"]).await;
    assert_eq!(run.code, 64, "{run}");
    assert!(run.stderr.contains("warning or critical"), "{run}");

    // No baseline distinct from the candidate: inconclusive, saying so.
    let run = gate_for(&url, "solo-api", "v1", &["--wait", "3s"]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stdout.contains("/predict (baseline none)"), "{run}");
    assert!(
        run.stderr
            .contains("no baseline distinct from \"v1\" on /predict"),
        "{run}"
    );
    assert!(collector.stop().await.success());
}
