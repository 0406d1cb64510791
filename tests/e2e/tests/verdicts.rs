//! Verdicts a release process can act on, end to end on the release binary:
//! - the same records give the same baselines and verdicts whether they
//!   arrive live one by one, in one shuffled batch, or through
//!   `modelgate analyze`;
//! - a rolled-back candidate's alerts resolve with the reason
//!   `no_traffic`, its regression verdict holds, and only an operator's
//!   reset clears it.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use modelgate_e2e::{eventually, modelgate_command, Collector};
use serde_json::{json, Value};

/// A lending log line of the incident's format at `time_ms`.
fn line(time_ms: u64, endpoint: &str, ms: u64, status: &str, version: &str) -> Value {
    let at = UNIX_EPOCH + Duration::from_millis(time_ms);
    json!({
        "timestamp": humantime::format_rfc3339_millis(at).to_string(),
        "endpoint": endpoint,
        "responseTimeMs": ms,
        "status": status,
        "modelVersion": version,
    })
}

/// Four minutes of the lending incident ending now: v1.2 on both
/// endpoints throughout, v1.3 beside it for the last two minutes, 3x
/// slower with most requests timing out.
fn records() -> Vec<Value> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let start = now - 240_000;
    let mut out = Vec::new();
    for i in 0..480_u64 {
        let t = start + i * 500;
        let endpoint = if i % 2 == 0 {
            "/risk-score"
        } else {
            "/funding-approve"
        };
        out.push(line(t, endpoint, 90 + i * 7 % 40, "OK", "v1.2"));
        if i >= 240 && i % 3 == 0 {
            let status = if i % 5 == 0 { "OK" } else { "Timeout" };
            out.push(line(t + 100, endpoint, 300 + i * 13 % 90, status, "v1.3"));
        }
    }
    out
}

/// An OTLP/JSON logs export of `lines`, as attributes (the way a
/// Collector's `json_parser` leaves them).
fn export(lines: &[Value]) -> Vec<u8> {
    let attr = |k: &str, v: &Value| match v {
        Value::Number(n) => json!({"key": k, "value": {"intValue": n.to_string()}}),
        other => json!({"key": k, "value": {"stringValue": other.as_str().unwrap()}}),
    };
    let records: Vec<Value> = lines
        .iter()
        .map(|l| {
            let attributes: Vec<Value> = l
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| attr(k, v))
                .collect();
            json!({"attributes": attributes})
        })
        .collect();
    serde_json::to_vec(&json!({
        "resourceLogs": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "lending-api"}}]},
            "scopeLogs": [{"logRecords": records}]
        }]
    }))
    .unwrap()
}

async fn send(collector: &Collector, lines: &[Value]) {
    let (status, _, body) = collector
        .post_otlp("/v1/logs", "application/json", None, export(lines))
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// What a release process reads of a verdict: outcome and severity, per
/// endpoint and version-wide with their baselines.
fn essence(verdict: &Value) -> Value {
    let scope = |s: &Value| {
        json!({
            "endpoint": s["endpoint"],
            "baseline": s["baseline_version"],
            "outcome": s["outcome"],
            "severity": s["severity"],
            "rules": s["rules"].as_array().map(|rules| rules.iter().map(|r| json!([r["rule"], r["outcome"], r["severity"]])).collect::<Vec<_>>()),
        })
    };
    json!({
        "candidate": verdict["candidate_version"],
        "outcome": verdict["outcome"],
        "severity": verdict["severity"],
        "endpoints": verdict["endpoints"].as_array().unwrap().iter().map(scope).collect::<Vec<_>>(),
        "version_wide": scope(&verdict["version_wide"]),
    })
}

async fn verdicts(collector: &Collector) -> Vec<Value> {
    let mut out = Vec::new();
    for v in ["v1.2", "v1.3"] {
        let verdict = collector
            .json(&format!(
                "/api/v1/verdict?service=lending-api&candidate={v}"
            ))
            .await;
        out.push(essence(&verdict));
    }
    out
}

async fn baselines(collector: &Collector) -> Vec<(String, String)> {
    baselines_in(&collector.json("/api/v1/versions?service=lending-api").await)
}

/// (endpoint, baseline) of each endpoint of a `/api/v1/versions` answer.
fn baselines_in(versions: &serde_json::Value) -> Vec<(String, String)> {
    versions["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap().to_owned(),
                e["baseline_version"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_records_give_the_same_verdicts_live_in_one_batch_and_offline() {
    let records = records();

    // Live: one record per export, in time order.
    let live = Collector::start(&[]).await;
    for r in &records {
        send(&live, std::slice::from_ref(r)).await;
    }
    // In one batch, shuffled (a fixed permutation: a stride prime to the
    // length), the broken version's records first.
    let batch = Collector::start(&[]).await;
    let n = records.len();
    let mut shuffled: Vec<Value> = (0..n).map(|i| records[i * 7919 % n].clone()).collect();
    shuffled.sort_by_key(|r| r["modelVersion"] != "v1.3");
    send(&batch, &shuffled).await;

    // Offline, through `modelgate analyze`, with the service the
    // collectors take from the resource.
    let dir = std::env::temp_dir().join(format!("modelgate-verdicts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("records.jsonl");
    let text: String = records
        .iter()
        .map(|r| format!("{}\n", serde_json::to_string(&json!({"resourceLogs": serde_json::from_slice::<Value>(&export(std::slice::from_ref(r))).unwrap()["resourceLogs"]})).unwrap()))
        .collect();
    std::fs::write(&file, text).unwrap();
    let output = modelgate_command(None)
        .args(["analyze", "--format", "json", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "v1.3 regressed: exit 1");
    let offline: Value = serde_json::from_slice(&output.stdout).unwrap();
    let offline_verdicts: Vec<Value> = ["v1.2", "v1.3"]
        .iter()
        .map(|v| {
            essence(
                offline["verdicts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["candidate_version"] == *v)
                    .unwrap(),
            )
        })
        .collect();
    let offline_baselines = baselines_in(&offline);

    // The live collectors judge on their tick: wait until both have.
    let settled = eventually(Duration::from_secs(20), || async {
        let (a, b) = (verdicts(&live).await, verdicts(&batch).await);
        (a == offline_verdicts && b == offline_verdicts).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "verdicts differ\nlive:    {:#}\nbatch:   {:#}\noffline: {:#}",
        json!(verdicts(&live).await),
        json!(verdicts(&batch).await),
        json!(offline_verdicts)
    );
    for c in [&live, &batch] {
        assert_eq!(baselines(c).await, offline_baselines);
    }
    assert!(
        offline_baselines.iter().all(|(_, b)| b == "v1.2"),
        "{offline_baselines:?}"
    );
    let v13 = &offline_verdicts[1];
    assert_eq!(v13["outcome"], "VERDICT_OUTCOME_REGRESSION", "{v13}");
    assert_eq!(v13["version_wide"]["baseline"], "v1.2", "{v13}");
    std::fs::remove_dir_all(&dir).unwrap();
    live.stop().await;
    batch.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_candidate_resolves_with_its_reason_and_its_verdict_holds() {
    let collector =
        Collector::start(&[("MODELGATE_JUDGE__ALERTS__NO_TRAFFIC_RESOLVE", "4s")]).await;
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    // v1.2, then v1.3 beside it, slow: it fires.
    let mut i = 0_u64;
    let fired = eventually(Duration::from_secs(30), || {
        i += 1;
        let t = now();
        let mut lines: Vec<Value> = (0..10)
            .map(|k| line(t, "/risk-score", 90 + k * 3, "OK", "v1.2"))
            .collect();
        if i > 3 {
            lines.extend((0..5).map(|k| line(t, "/risk-score", 700 + k * 9, "Timeout", "v1.3")));
        }
        let collector = &collector;
        async move {
            send(collector, &lines).await;
            let r = collector
                .json("/api/v1/regressions?service=lending-api&min_severity=critical")
                .await;
            r["regressions"]
                .as_array()?
                .iter()
                .any(|x| x["candidate_version"] == "v1.3")
                .then_some(())
        }
    })
    .await;
    assert!(fired.is_some(), "v1.3 never fired\n{}", collector.log());

    // Rolled back: only v1.2 from now on.
    let resolved = eventually(Duration::from_secs(30), || {
        let t = now();
        let lines: Vec<Value> = (0..10)
            .map(|k| line(t, "/risk-score", 90 + k * 3, "OK", "v1.2"))
            .collect();
        let collector = &collector;
        async move {
            send(collector, &lines).await;
            let r = collector
                .json("/api/v1/regressions?service=lending-api")
                .await;
            let firing = r["regressions"]
                .as_array()?
                .iter()
                .any(|x| x["candidate_version"] == "v1.3");
            (!firing).then_some(r)
        }
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "v1.3 still firing after its traffic stopped\n{}",
            collector.log()
        )
    });
    let held = &resolved["held"][0];
    assert_eq!(held["candidate_version"], "v1.3", "{resolved}");
    assert_eq!(held["severity"], "SEVERITY_CRITICAL", "{resolved}");
    let log = collector.log();
    assert!(
        log.contains("regression alert resolved") && log.contains("no_traffic"),
        "{log}"
    );
    let verdict = collector
        .json("/api/v1/verdict?service=lending-api&candidate=v1.3")
        .await;
    assert_eq!(
        verdict["outcome"], "VERDICT_OUTCOME_REGRESSION",
        "{verdict}"
    );
    assert_eq!(verdict["held"], true, "{verdict}");

    // Only an operator clears it (writes need the token).
    let (status, body) = collector
        .post_json(
            "/api/v1/verdict/reset",
            &json!({"service": "lending-api", "candidate": "v1.3"}),
        )
        .await;
    assert_eq!(status, 403, "writes need a token: {body}");
    collector.stop().await;

    let token = "rollback-test-token";
    let mut collector = Collector::start(&[
        ("MODELGATE_JUDGE__ALERTS__NO_TRAFFIC_RESOLVE", "2s"),
        ("MODELGATE_AUTH__TOKEN", token),
    ])
    .await;
    collector.set_token(Some(token));
    let t = now();
    let mut lines: Vec<Value> = (0..30).map(|k| line(t, "/a", 90 + k, "OK", "v1")).collect();
    lines.extend((0..10).map(|k| line(t, "/a", 900 + k, "Timeout", "v2")));
    send(&collector, &lines).await;
    let held = eventually(Duration::from_secs(20), || async {
        let v = collector
            .json("/api/v1/verdict?service=lending-api&candidate=v2")
            .await;
        (v["held"] == true).then_some(v)
    })
    .await;
    assert!(
        held.is_some(),
        "no held verdict for v2\n{}",
        collector.log()
    );
    let (status, body) = collector
        .post_json(
            "/api/v1/verdict/reset",
            &json!({"service": "lending-api", "candidate": "v2"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = collector
        .post_json(
            "/api/v1/verdict/reset",
            &json!({"service": "lending-api", "candidate": "v2"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let verdict = collector
        .json("/api/v1/verdict?service=lending-api&candidate=v2")
        .await;
    assert_eq!(verdict["held"], false, "{verdict}");
    collector.stop().await;
}
