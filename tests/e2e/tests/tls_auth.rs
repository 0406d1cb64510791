//! TLS and bearer-token authentication, driving the real binary: a
//! self-signed certificate made at test time (rcgen), the token from a file,
//! and real clients on all three listeners (OTLP/gRPC + query API,
//! OTLP/HTTP, admin). Also: the API's write operations, refused without a
//! configured token and effective with it; modelgate's own clients (gate,
//! replay, loadgen) over TLS with the token, by flags and by the OTLP
//! exporter variables, with a client certificate, and the exit code of each
//! missing or wrong credential.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use modelgate::client::ClientOptions;
use modelgate::replay::{replay, ReplayOptions, Scenario};
use modelgate_e2e::{eventually, metric, modelgate_command, run_modelgate, Collector, Run};
use modelgate_fixture::{request_of, SpanSpec};
use modelgate_proto::v1 as pb;
use modelgate_proto::v1::query_client::QueryClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use serde_json::json;
use tonic::Code;

const TOKEN: &str = "e2e-token-0123456789";

/// A scratch directory with a fresh self-signed certificate for
/// `localhost` and 127.0.0.1, its key and a token file.
struct Secrets {
    dir: PathBuf,
    cert_pem: String,
}

impl Secrets {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("modelgate-e2e-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        let cert_pem = certified.cert.pem();
        std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
        Self { dir, cert_pem }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spans(
    version: &str,
    ms: u64,
    n: usize,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    request_of((0..n).map(|_| SpanSpec::request("lending-api", "/risk-score", version, ms)))
}

/// v2's firing `rule` alert in `/api/v1/regressions`.
async fn firing(collector: &Collector, rule: &str) -> Option<serde_json::Value> {
    let r = collector.json("/api/v1/regressions").await;
    r["regressions"].as_array().and_then(|a| {
        a.iter()
            .find(|x| x["candidate_version"] == "v2" && x["rule"] == rule)
            .cloned()
    })
}

async fn secured(secrets: &Secrets, extra: &[(&str, &str)]) -> Collector {
    let (cert, key, token) = (
        secrets.path("cert.pem"),
        secrets.path("key.pem"),
        secrets.path("token"),
    );
    let mut env = vec![
        ("MODELGATE_TLS__CERT", cert.as_str()),
        ("MODELGATE_TLS__KEY", key.as_str()),
        ("MODELGATE_AUTH__TOKEN_FILE", token.as_str()),
    ];
    env.extend_from_slice(extra);
    Collector::start_tls(&env, &secrets.cert_pem).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_token_guard_every_listener() {
    let secrets = Secrets::new("guard");
    let mut collector = secured(&secrets, &[]).await;
    assert!(collector.log().contains("tls=true"), "{}", collector.log());

    // Plaintext to a TLS port is refused, on all three.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for addr in [collector.admin, collector.http_addr] {
        let err = plain
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .expect_err("plaintext HTTP to a TLS port must fail");
        assert!(!err.is_status(), "{err:?}");
    }
    let plain_grpc = tonic::transport::Endpoint::from_shared(format!("http://{}", collector.grpc))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let err = TraceServiceClient::new(plain_grpc)
        .export(spans("v1", 20, 1))
        .await
        .expect_err("plaintext gRPC to a TLS port must fail");
    assert_ne!(err.code(), Code::Ok, "{err:?}");

    // Probes stay open over TLS; data does not.
    assert_eq!(collector.get("/healthz").await.0, 200);
    assert_eq!(collector.get("/readyz").await.0, 200);
    for wrong in [None, Some("not-the-token")] {
        collector.set_token(wrong);
        for path in ["/api/v1/versions", "/api/v1/regressions", "/metrics"] {
            let mut request = collector.http_client().get(collector.admin_url(path));
            if let Some(token) = wrong {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 401, "{path} with {wrong:?}");
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert!(challenge.starts_with("Bearer"), "{challenge:?}");
        }
        let (status, _, _) = collector
            .post_otlp(
                "/v1/traces",
                "application/x-protobuf",
                None,
                spans("v1", 20, 1).encode_to_vec(),
            )
            .await;
        assert_eq!(status, 401, "OTLP/HTTP with {wrong:?}");
        let channel = collector.grpc_channel().await.unwrap();
        let err = TraceServiceClient::new(channel.clone())
            .export(collector.grpc_request(spans("v1", 20, 1)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        let err = QueryClient::new(channel)
            .list_versions(collector.grpc_request(pb::ListVersionsRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }

    // The right token works on each.
    collector.set_token(Some(TOKEN));
    let channel = collector.grpc_channel().await.unwrap();
    TraceServiceClient::new(channel.clone())
        .export(collector.grpc_request(spans("v1", 20, 5)))
        .await
        .unwrap();
    let (status, _, body) = collector
        .post_otlp(
            "/v1/traces",
            "application/x-protobuf",
            None,
            spans("v1", 20, 5).encode_to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let seen = eventually(Duration::from_secs(10), || async {
        let v = collector.json("/api/v1/versions").await;
        (v["endpoints"][0]["versions"][0]["count"].as_str() == Some("10")).then_some(v)
    })
    .await;
    assert!(
        seen.is_some(),
        "{}",
        collector.json("/api/v1/versions").await
    );
    let versions = QueryClient::new(channel)
        .list_versions(collector.grpc_request(pb::ListVersionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(versions.endpoints.len(), 1);
    assert_eq!(collector.get("/metrics").await.0, 200);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_a_configured_token() {
    // No token configured: writes are refused, reads are open.
    let collector = Collector::start(&[]).await;
    let (status, body) = collector
        .post_json(
            "/api/v1/baseline",
            &json!({"service": "lending-api", "version": "v1"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("auth.token"), "{body}");
    let (status, body) = collector
        .post_json(
            "/api/v1/alerts/ack",
            &json!({"service": "lending-api", "endpoint": "/risk-score", "candidate": "v2", "rule": "sla"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let mut query = QueryClient::new(collector.grpc_channel().await.unwrap());
    let err = query
        .set_baseline(pb::SetBaselineRequest {
            service: "lending-api".into(),
            endpoint: String::new(),
            version: "v1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("auth.token"), "{err:?}");
    let err = query
        .acknowledge_alert(pb::AcknowledgeAlertRequest {
            service: "lending-api".into(),
            endpoint: "/risk-score".into(),
            candidate_version: "v2".into(),
            rule: "sla".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(collector.get("/api/v1/versions").await.0, 200);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_token_a_baseline_is_set_and_an_alert_acknowledged() {
    let secrets = Secrets::new("writes");
    let mut collector = secured(
        &secrets,
        &[
            ("MODELGATE_JUDGE__EVALUATION_INTERVAL", "100ms"),
            ("MODELGATE_JUDGE__ALERTS__HOLD", "0s"),
        ],
    )
    .await;
    collector.set_token(Some(TOKEN));
    let channel = collector.grpc_channel().await.unwrap();
    let mut traces = TraceServiceClient::new(channel.clone());
    // v1 fast, then v2 slow beside it: v1 is the baseline, v2 fires sla.
    traces
        .export(collector.grpc_request(spans("v1", 20, 30)))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), || async {
        let v = collector.json("/api/v1/versions").await;
        (v["endpoints"][0]["baseline_version"] == "v1").then_some(())
    })
    .await
    .expect("v1 becomes the baseline");
    traces
        .export(collector.grpc_request(spans("v2", 900, 30)))
        .await
        .unwrap();
    let alert = eventually(Duration::from_secs(15), || firing(&collector, "sla"))
        .await
        .unwrap_or_else(|| panic!("no sla alert for v2; log:\n{}", collector.log()));
    assert_eq!(alert["acknowledged"], false, "{alert}");

    // Without the token: refused even though one is configured.
    collector.set_token(None);
    let (status, _) = collector
        .post_json(
            "/api/v1/alerts/ack",
            &json!({"service": "lending-api", "endpoint": "/risk-score", "candidate": "v2", "rule": "sla"}),
        )
        .await;
    assert_eq!(status, 401);
    let err = QueryClient::new(channel.clone())
        .set_baseline(collector.grpc_request(pb::SetBaselineRequest {
            service: "lending-api".into(),
            endpoint: String::new(),
            version: "v2".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    collector.set_token(Some(TOKEN));

    // Acknowledge over JSON: marked in the regressions.
    let (status, body) = collector
        .post_json(
            "/api/v1/alerts/ack",
            &json!({"service": "lending-api", "endpoint": "/risk-score", "candidate": "v2", "rule": "sla"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let alert = firing(&collector, "sla").await.expect("still firing");
    assert_eq!(alert["acknowledged"], true, "{alert}");
    // Nothing to acknowledge: 404; a bad rule: 400.
    let (status, body) = collector
        .post_json(
            "/api/v1/alerts/ack",
            &json!({"service": "lending-api", "endpoint": "/risk-score", "candidate": "v9", "rule": "sla"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = collector
        .post_json(
            "/api/v1/alerts/ack",
            &json!({"service": "lending-api", "endpoint": "/risk-score", "candidate": "v2", "rule": "slow"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // A phase this service has no alert of: 404; no such phase: 400.
    let (status, body) = collector
        .post_json(
            "/api/v1/alerts/ack",
            &json!({"service": "lending-api", "endpoint": "/risk-score", "candidate": "v2", "rule": "sla", "phase": "queue"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = collector
        .post_json(
            "/api/v1/alerts/ack",
            &json!({"service": "lending-api", "endpoint": "/risk-score", "candidate": "v2", "rule": "sla", "phase": "decode"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("unknown phase"), "{body}");

    // Set the baseline to v2 over JSON: visible in versions at once.
    let (status, body) = collector
        .post_json(
            "/api/v1/baseline",
            &json!({"service": "lending-api", "version": "v2"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["endpoints"][0]["baseline_version"], "v2", "{answer}");
    let versions = collector.json("/api/v1/versions").await;
    assert_eq!(
        versions["endpoints"][0]["baseline_version"], "v2",
        "{versions}"
    );
    let verdict = collector
        .json("/api/v1/verdict?service=lending-api&candidate=v1")
        .await;
    assert_eq!(
        verdict["endpoints"][0]["baseline_version"], "v2",
        "{verdict}"
    );

    // And back to v1 over gRPC.
    let answer = QueryClient::new(channel.clone())
        .set_baseline(collector.grpc_request(pb::SetBaselineRequest {
            service: "lending-api".into(),
            endpoint: "/risk-score".into(),
            version: "v1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.endpoints[0].baseline_version, "v1");
    // gRPC acknowledge of the (re-judged) sla alert of v2.
    eventually(Duration::from_secs(10), || firing(&collector, "sla"))
        .await
        .expect("sla still firing");
    let acked = QueryClient::new(channel)
        .acknowledge_alert(collector.grpc_request(pb::AcknowledgeAlertRequest {
            service: "lending-api".into(),
            endpoint: "/risk-score".into(),
            candidate_version: "v2".into(),
            rule: "sla".into(),
            phase: "request".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(acked.regressions.iter().all(|r| r.acknowledged));
    assert!(!acked.regressions.is_empty());
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificate_files_are_refused_at_start_and_named() {
    let secrets = Secrets::new("bad");
    std::fs::write(secrets.dir.join("garbage.pem"), "not a key").unwrap();
    let cert = secrets.path("cert.pem");
    let garbage = secrets.path("garbage.pem");
    for (cert, key, named_key, named_path) in [
        (
            cert.as_str(),
            "/nonexistent/key.pem",
            "tls.key",
            "/nonexistent/key.pem",
        ),
        (
            "/nonexistent/cert.pem",
            garbage.as_str(),
            "tls.cert",
            "/nonexistent/cert.pem",
        ),
        (cert.as_str(), garbage.as_str(), "tls.key", garbage.as_str()),
    ] {
        let output = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::from(modelgate_command(None))
                .args([
                    "--grpc-listen",
                    "127.0.0.1:0",
                    "--http-listen",
                    "127.0.0.1:0",
                ])
                .args(["--admin-listen", "127.0.0.1:0"])
                .env("MODELGATE_TLS__CERT", cert)
                .env("MODELGATE_TLS__KEY", key)
                .output(),
        )
        .await
        .expect("modelgate must exit")
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{stderr}");
        assert!(stderr.contains(named_key), "{named_key}: {stderr}");
        assert!(stderr.contains(named_path), "{named_path}: {stderr}");
    }
}

#[test]
fn default_listeners_bind_localhost() {
    let output = modelgate_command(None).arg("config").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    for addr in ["127.0.0.1:4317", "127.0.0.1:4318", "127.0.0.1:9464"] {
        assert!(text.contains(addr), "{addr} missing from:\n{text}");
    }
    assert!(!text.contains("0.0.0.0"), "{text}");
}

/// The longest a client run may take in these tests.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// v1 alone, then v2 beside it three times slower than the 150 ms SLA.
const SLOW_CANARY: &str = r#"
name: slow-canary
service: checkout
rate: 2000
seed: 7
phases:
  - name: baseline
    requests: 300
    traffic:
      - version: v1
        endpoints: [/pay]
        latency_ms: { dist: uniform, min: 20, max: 30 }
  - name: canary
    requests: 300
    traffic:
      - version: v1
        endpoints: [/pay]
        latency_ms: { dist: uniform, min: 20, max: 30 }
      - version: v2
        endpoints: [/pay]
        latency_ms: { dist: uniform, min: 400, max: 500 }
"#;

/// `modelgate gate` on the slow canary's v2, held to the 150 ms SLA: exit 1
/// once the collector at `url` is reached.
fn gate_on_v2(url: &str) -> Vec<&str> {
    vec![
        "gate",
        "--url",
        url,
        "--service",
        "checkout",
        "--candidate",
        "v2",
        "--sla",
        "150ms",
        "--min-samples",
        "50",
        "--wait",
        "20s",
    ]
}

/// `modelgate <args>` with `env`, quietly.
async fn client(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut env = env.to_vec();
    env.push(("MODELGATE_LOG", "warn"));
    run_modelgate(args, &env, CLIENT_TIMEOUT).await
}

/// The spans a loadgen run got accepted, from its table.
fn loadgen_accepted(run: &Run) -> u64 {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("| spans accepted / rejected | "))
        .and_then(|rest| rest.split(" / ").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no accepted count\n{run}"))
}

async fn accepted(collector: &Collector) -> f64 {
    metric(
        &collector.metrics().await,
        "modelgate_receiver_accepted_total",
        &[],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_speaks_tls_and_the_token() {
    let secrets = Secrets::new("clients");
    let mut collector = secured(&secrets, &[]).await;
    collector.set_token(Some(TOKEN));
    let url = collector.grpc_url();
    assert!(url.starts_with("https://"), "{url}");
    let (ca, token) = (secrets.path("cert.pem"), secrets.path("token"));
    std::fs::write(secrets.dir.join("scenario.yaml"), SLOW_CANARY).unwrap();
    let scenario_file = secrets.path("scenario.yaml");

    // replay, the library, with the credentials of the flags.
    let report = replay(
        &Scenario::parse("slow-canary", SLOW_CANARY).unwrap(),
        &ReplayOptions {
            endpoint: url.clone(),
            client: ClientOptions {
                ca_file: Some(ca.clone().into()),
                token_file: Some(token.clone().into()),
                ..ClientOptions::default()
            },
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((report.requests, report.failed), (600, 0));
    eventually(Duration::from_secs(20), || async {
        (accepted(&collector).await == 600.0).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("600 spans not accepted; log:\n{}", collector.log()));

    // replay, the binary, with nothing but the OTLP exporter variables.
    let headers = format!("authorization=Bearer%20{TOKEN}");
    let run = client(
        &[
            "replay",
            &scenario_file,
            "--endpoint",
            &url,
            "--rate",
            "5000",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
            ("OTEL_EXPORTER_OTLP_HEADERS", &headers),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("sent 600 requests"), "{run}");
    assert!(run.stdout.contains("0 spans failed"), "{run}");

    // loadgen, the binary: flags, then the traces signal's variables.
    let load = [
        "loadgen",
        "--endpoint",
        &url,
        "--duration",
        "1s",
        "--connections",
        "1",
        "--batch",
        "50",
        "--rate",
        "2000",
    ];
    let mut with_flags = load.to_vec();
    with_flags.extend(["--ca-file", &ca, "--token-file", &token]);
    let run = client(&with_flags, &[]).await;
    assert_eq!(run.code, 0, "{run}");
    assert!(loadgen_accepted(&run) > 0, "{run}");
    let run = client(
        &load,
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", &ca),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", &headers),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert!(loadgen_accepted(&run) > 0, "{run}");

    // gate, the binary: v2 breaks the SLA, exit 1.
    let question = gate_on_v2(&url);
    let mut with_credentials = question.clone();
    with_credentials.extend(["--ca-file", &ca, "--token-file", &token]);
    let run = client(&with_credentials, &[]).await;
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout.starts_with("checkout v2: REGRESSION (exit 1)"),
        "{run}"
    );

    // Every missing or wrong credential: its own exit code, said at once.
    let before = accepted(&collector).await;
    std::fs::write(secrets.dir.join("wrong-token"), "not-the-token").unwrap();
    std::fs::write(secrets.dir.join("garbage.pem"), "not a certificate").unwrap();
    let (wrong, garbage) = (secrets.path("wrong-token"), secrets.path("garbage.pem"));
    let plain = url.replacen("https://", "http://", 1);
    for (extra, code, said) in [
        (vec!["--ca-file", &ca], 77, "pass --token-file"),
        (
            vec!["--ca-file", &ca, "--token-file", &wrong],
            77,
            "check the token",
        ),
        (vec!["--token-file", &token], 69, "--ca-file"),
        (
            vec!["--ca-file", &ca, "--token-file", "/nonexistent/token"],
            78,
            "--token-file /nonexistent/token",
        ),
        (
            vec!["--ca-file", &garbage, "--token-file", &token],
            78,
            "--ca-file",
        ),
    ] {
        let mut args = question.clone();
        args.extend(extra.iter().copied());
        let run = client(&args, &[]).await;
        assert_eq!(run.code, code, "{extra:?}: {run}");
        assert!(
            run.stderr.contains(said),
            "{extra:?}: {said} missing\n{run}"
        );
        assert!(run.elapsed < Duration::from_secs(10), "{extra:?}: {run}");
    }
    // Plaintext to the TLS port: no answer within the wait, 69.
    let run = client(
        &[
            "gate",
            "--url",
            &plain,
            "--service",
            "checkout",
            "--candidate",
            "v2",
            "--wait",
            "1s",
            "--token-file",
            &token,
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 69, "{run}");
    // replay and loadgen fail at once, with the same codes.
    for (args, code) in [
        (
            vec![
                "replay",
                &scenario_file,
                "--endpoint",
                &url,
                "--ca-file",
                &ca,
            ],
            77,
        ),
        (
            vec![
                "loadgen",
                "--endpoint",
                &url,
                "--duration",
                "1s",
                "--ca-file",
                &ca,
            ],
            77,
        ),
        (
            vec![
                "loadgen",
                "--endpoint",
                &url,
                "--duration",
                "1s",
                "--token-file",
                &token,
            ],
            69,
        ),
    ] {
        let run = client(&args, &[]).await;
        assert_eq!(run.code, code, "{args:?}: {run}");
        assert!(run.elapsed < Duration::from_secs(10), "{args:?}: {run}");
    }
    assert_eq!(
        accepted(&collector).await,
        before,
        "nothing of a refused client got in"
    );
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_present_a_certificate_to_a_collector_that_requires_one() {
    let secrets = Secrets::new("mtls");
    // A client CA and a client certificate it issued.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let client_ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = rcgen::CertificateParams::new(vec!["release-pipeline".to_owned()])
        .unwrap()
        .signed_by(&client_key, &client_ca)
        .unwrap();
    std::fs::write(secrets.dir.join("client-ca.pem"), client_ca.pem()).unwrap();
    std::fs::write(secrets.dir.join("client.pem"), client_cert.pem()).unwrap();
    std::fs::write(secrets.dir.join("client.key"), client_key.serialize_pem()).unwrap();
    let client_ca_path = secrets.path("client-ca.pem");
    let collector = secured(&secrets, &[("MODELGATE_TLS__CLIENT_CA", &client_ca_path)]).await;
    let url = collector.grpc_url();
    let (ca, token) = (secrets.path("cert.pem"), secrets.path("token"));
    let (cert, key) = (secrets.path("client.pem"), secrets.path("client.key"));

    let report = replay(
        &Scenario::parse("slow-canary", SLOW_CANARY).unwrap(),
        &ReplayOptions {
            endpoint: url.clone(),
            client: ClientOptions {
                ca_file: Some(ca.clone().into()),
                client_cert: Some(cert.clone().into()),
                client_key: Some(key.clone().into()),
                token_file: Some(token.clone().into()),
                headers: Vec::new(),
            },
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.failed, 0);
    let mut question = gate_on_v2(&url);
    question.extend(["--ca-file", &ca, "--token-file", &token]);
    let mut with_certificate = question.clone();
    with_certificate.extend(["--client-cert", &cert, "--client-key", &key]);
    let run = client(&with_certificate, &[]).await;
    assert_eq!(run.code, 1, "{run}");
    // loadgen takes the certificate from the OTLP exporter's variables.
    let run = client(
        &[
            "loadgen",
            "--endpoint",
            &url,
            "--duration",
            "1s",
            "--connections",
            "1",
            "--batch",
            "50",
            "--rate",
            "1000",
            "--ca-file",
            &ca,
            "--token-file",
            &token,
        ],
        &[
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &key),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert!(loadgen_accepted(&run) > 0, "{run}");
    // Without one: refused, exit 77, naming the flags.
    let run = client(&question, &[]).await;
    assert_eq!(run.code, 77, "{run}");
    assert!(run.stderr.contains("--client-cert"), "{run}");
    // Half a pair is a usage error.
    let mut half = question.clone();
    half.extend(["--client-cert", &cert]);
    let run = client(&half, &[]).await;
    assert_eq!(run.code, 64, "{run}");
    drop(collector);
}
