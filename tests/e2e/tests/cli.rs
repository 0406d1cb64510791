//! The command line: help, a bad configuration refused with its key, the
//! effective configuration printed, replay of a scenario file.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use modelgate_e2e::modelgate_command;

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
}

#[test]
fn bad_config_file_is_refused_naming_key_and_problem() {
    let path = temp_file("bad.yaml", "judge:\n  sla:\n    limit: soon\n");
    let (code, _, err) = run(&["--config", path.to_str()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("judge.sla.limit"), "{err}");
    let path = temp_file("typo.yaml", "aggregate:\n  max_seris: 10\n");
    let (code, _, err) = run(&["--config", path.to_str()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("max_seris"), "{err}");
    let (code, _, err) = run(&["config"], &[("MODELGATE_AGGREGATE__WINDOW", "2h")]);
    assert_eq!(code, 2);
    assert!(err.contains("aggregate.baseline_horizon"), "{err}");
    let (code, _, err) = run(&["--config", "/nonexistent/modelgate.yaml"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/modelgate.yaml"), "{err}");
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
    assert_eq!(code, 2);
    assert!(err.contains("phases[0].traffic[0].endpoints"), "{err}");
    let (code, _, err) = run(&["replay", "no-such-scenario"], &[]);
    assert_eq!(code, 2);
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
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.jsonl"), "{err}");
}
