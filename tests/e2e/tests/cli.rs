//! The command line: help, a bad configuration refused with its key (exit
//! 78), usage errors (64), the effective configuration printed with the
//! listen flags wherever they stand, `validate`, the Kubernetes service-link
//! variables, replay of a scenario file.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use modelgate_e2e::{modelgate_command, Collector};

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = modelgate_command(None);
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A file in the temp directory, removed when the test ends.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn to_str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_file(name: &str, text: &str) -> TempFile {
    let path = std::env::temp_dir().join(format!("modelgate-e2e-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    TempFile(path)
}

#[test]
fn help_documents_configuration_and_commands() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for needle in [
        "replay",
        "--config",
        "MODELGATE_JUDGE__SLA__LIMIT",
        "4317",
        "/metrics",
        "judge",
    ] {
        assert!(out.contains(needle), "{needle} missing from --help:\n{out}");
    }
    // Every section of `modelgate config` is listed with its keys (the list
    // is made from the defaults, so it cannot drift), within 80 columns.
    let (code, config, _) = run(&["config"], &[]);
    assert_eq!(code, 0);
    for section in config.lines().filter(|l| !l.starts_with([' ', '-', '#'])) {
        let name = section.trim_end_matches(|c| c != ':').trim_end_matches(':');
        assert!(
            out.contains(&format!("{name} (")) || out.contains(&format!("{name};")),
            "section {name} missing from --help:\n{out}"
        );
    }
    for key in [
        "max_bytes_in_flight",
        "drain_timeout",
        "client_ca",
        "metrics.*",
    ] {
        assert!(out.contains(key), "{key} missing from --help:\n{out}");
    }
    let mut sections = out
        .lines()
        .skip_while(|l| !l.contains("Sections"))
        .take_while(|l| !l.contains("A bad key"));
    assert!(sections.all(|l| l.len() <= 80), "{out}");
}

#[test]
fn bad_config_file_is_refused_naming_key_and_problem() {
    let path = temp_file("bad.yaml", "judge:\n  sla:\n    limit: soon\n");
    let (code, _, err) = run(&["--config", path.to_str()], &[]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("judge.sla.limit"), "{err}");
    let path = temp_file("typo.yaml", "aggregate:\n  max_seris: 10\n");
    let (code, _, err) = run(&["--config", path.to_str()], &[]);
    assert_eq!(code, 78);
    assert!(err.contains("max_seris"), "{err}");
    let (code, _, err) = run(&["config"], &[("MODELGATE_AGGREGATE__WINDOW", "2h")]);
    assert_eq!(code, 78);
    assert!(err.contains("aggregate.baseline_horizon"), "{err}");
    let (code, _, err) = run(&["--config", "/nonexistent/modelgate.yaml"], &[]);
    assert_eq!(code, 78);
    assert!(err.contains("/nonexistent/modelgate.yaml"), "{err}");
    // A flag the binary does not know is a usage error, not 2.
    let (code, _, err) = run(&["--grpc-listen", "not-an-address"], &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--grpc-listen"), "{err}");
}

#[test]
fn validate_checks_file_variables_flags_and_the_files_they_name() {
    let ok = temp_file("valid.yaml", "judge:\n  sla:\n    limit: 200ms\n");
    let (code, out, err) = run(
        &[
            "validate",
            "--config",
            ok.to_str(),
            "--admin-listen",
            "127.0.0.1:19999",
        ],
        &[("MODELGATE_AGGREGATE__MAX_SERIES", "500")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("configuration valid"), "{out}");
    assert!(out.contains("admin 127.0.0.1:19999"), "{out}");
    // Each layer's mistake is named, exit 78.
    let bad = temp_file("invalid.yaml", "judge:\n  sla:\n    quantile: 2\n");
    for (args, env, named) in [
        (
            vec!["validate", "--config", bad.to_str()],
            vec![],
            "judge.sla.quantile",
        ),
        (
            vec!["validate"],
            vec![("MODELGATE_JUDGE__SLA__LIMIT", "fast")],
            "judge.sla.limit",
        ),
        (
            vec!["validate"],
            vec![
                ("MODELGATE_TLS__CERT", "/nonexistent/cert.pem"),
                ("MODELGATE_TLS__KEY", "/nonexistent/key.pem"),
            ],
            "/nonexistent/cert.pem",
        ),
        (
            vec!["validate"],
            vec![("MODELGATE_AUTH__TOKEN_FILE", "/nonexistent/token")],
            "/nonexistent/token",
        ),
    ] {
        let (code, out, err) = run(&args, &env);
        assert_eq!(code, 78, "{args:?} {env:?}: {out}{err}");
        assert!(err.to_lowercase().contains(named), "{named} missing: {err}");
    }
    let (code, _, err) = run(&["validate", "--http-listen", "nowhere"], &[]);
    assert_eq!(code, 64, "{err}");
}

/// What the kubelet sets in every pod of a namespace holding a Service
/// named `modelgate` (ports otlp-grpc 4317) and one named `modelgate-admin`.
const SERVICE_LINKS: [(&str, &str); 10] = [
    ("MODELGATE_PORT", "tcp://10.96.0.10:4317"),
    ("MODELGATE_SERVICE_HOST", "10.96.0.10"),
    ("MODELGATE_SERVICE_PORT", "4317"),
    ("MODELGATE_SERVICE_PORT_OTLP_GRPC", "4317"),
    ("MODELGATE_PORT_4317_TCP", "tcp://10.96.0.10:4317"),
    ("MODELGATE_PORT_4317_TCP_PROTO", "tcp"),
    ("MODELGATE_PORT_4317_TCP_PORT", "4317"),
    ("MODELGATE_PORT_4317_TCP_ADDR", "10.96.0.10"),
    ("MODELGATE_ADMIN_SERVICE_HOST", "10.96.0.11"),
    ("MODELGATE_ADMIN_PORT_9464_TCP_ADDR", "10.96.0.11"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_kubernetes_service_link_variables_set() {
    // `run` with the listen flags after it, as a container's args would be.
    let mut env = SERVICE_LINKS.to_vec();
    env.push(("MODELGATE_LOG", "debug,h2=info,hyper=info,tower=info"));
    let collector = Collector::start_with_args(&["run"], &env).await;
    assert_eq!(collector.get("/readyz").await.0, 200);
    let log = collector.log();
    assert!(
        log.contains("MODELGATE_PORT_4317_TCP_ADDR") && log.contains("service link"),
        "a debug line names each ignored variable:\n{log}"
    );
    assert!(collector.stop().await.success());
    let (code, out, err) = run(&["validate"], &SERVICE_LINKS);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&["config"], &SERVICE_LINKS);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("grpc_listen: 127.0.0.1:4317"), "{out}");
}

#[test]
fn listen_flags_work_before_and_after_the_subcommand_and_show_in_config() {
    for args in [
        vec!["--grpc-listen", "127.0.0.1:5317", "config"],
        vec!["config", "--grpc-listen", "127.0.0.1:5317"],
        // After the subcommand wins.
        vec![
            "--grpc-listen",
            "127.0.0.1:6317",
            "config",
            "--grpc-listen",
            "127.0.0.1:5317",
        ],
    ] {
        let (code, out, err) = run(&args, &[]);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            out.contains("grpc_listen: 127.0.0.1:5317"),
            "{args:?}: {out}"
        );
    }
    let (code, out, err) = run(
        &[
            "config",
            "--http-listen",
            "127.0.0.1:5318",
            "--admin-listen",
            "127.0.0.1:5464",
        ],
        &[("MODELGATE_RECEIVER__HTTP_LISTEN", "127.0.0.1:7318")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("http_listen: 127.0.0.1:5318"),
        "flags win over variables: {out}"
    );
    assert!(out.contains("listen: 127.0.0.1:5464"), "{out}");
}

#[test]
fn config_prints_effective_settings() {
    let path = temp_file("ok.yaml", "judge:\n  sla:\n    limit: 200ms\n");
    let (code, out, err) = run(
        &["--config", path.to_str(), "config"],
        &[("MODELGATE_AGGREGATE__MAX_SERIES", "500")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("limit: 200ms"), "{out}");
    assert!(out.contains("max_series: 500"), "{out}");
}

#[test]
fn replay_of_a_bad_scenario_names_the_key() {
    let path = temp_file("scenario.yaml", "name: s\nservice: svc\nphases:\n  - name: p\n    requests: 3\n    traffic:\n      - version: v1\n        endpoints: []\n        latency_ms: { dist: uniform, min: 1, max: 2 }\n");
    let (code, _, err) = run(&["replay", path.to_str()], &[]);
    assert_eq!(code, 64);
    assert!(err.contains("phases[0].traffic[0].endpoints"), "{err}");
    let (code, _, err) = run(&["replay", "no-such-scenario"], &[]);
    assert_eq!(code, 64);
    assert!(err.contains("lending"), "{err}");
}

#[test]
fn analyze_of_the_incident_log_flags_v13_and_reports_line_5() {
    let log = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/logs/kenya-lending-incident.jsonl"
    );
    let (code, out, err) = run(&["analyze", log], &[]);
    assert_eq!(code, 1, "a regression exits 1\n{out}\n{err}");
    assert!(
        err.contains("kenya-lending-incident.jsonl:5: skipped: not JSON"),
        "{err}"
    );
    assert!(
        out.contains("* (all endpoints, baseline v1.2): v1.3 regression (critical)"),
        "{out}"
    );
    assert!(out.contains("4 of 4 requests above 150 ms"), "{out}");
    let (code, out, _) = run(&["analyze", "--format", "json", log], &[]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["malformed"][0]["line"], 5);
    let v13 = json["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["candidate_version"] == "v1.3")
        .unwrap();
    assert_eq!(v13["outcome"], "VERDICT_OUTCOME_REGRESSION", "{v13}");
    assert_eq!(v13["version_wide"]["baseline_version"], "v1.2", "{v13}");
    let (code, _, err) = run(&["analyze", "/nonexistent.jsonl"], &[]);
    assert_eq!(code, 70);
    assert!(err.contains("/nonexistent.jsonl"), "{err}");
}
