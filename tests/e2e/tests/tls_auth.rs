//! TLS and bearer-token authentication, driving the real binary: a
//! self-signed certificate made at test time (rcgen), the token from a file,
//! and real clients on all three listeners (OTLP/gRPC + query API,
//! OTLP/HTTP, admin). Also: the API's write operations, refused without a
//! configured token and effective with it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use modelgate_e2e::{eventually, modelgate_command, Collector};
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
        assert!(!output.status.success(), "{stderr}");
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
