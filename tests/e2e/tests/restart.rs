//! Restart without amnesia: the real binary is killed with SIGKILL in the
//! middle of the lending incident and started again on the same snapshot
//! directory; the alert must still be firing (not pending again) and the
//! baseline still v1.2. A corrupt snapshot is refused by name and the
//! collector starts empty. Every wait is bounded.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use modelgate::replay::{replay, ReplayOptions, Scenario};
use modelgate_collector::snapshot::{FILE_NAME, MAGIC};
use modelgate_e2e::{eventually, Collector};
use serde_json::Value;

const ENDPOINTS: [&str; 2] = ["/risk-score", "/funding-approve"];

/// `judge.evaluation_interval` (the default, left as is here).
const EVALUATION_INTERVAL: Duration = Duration::from_secs(1);

/// `snapshot.interval` for these tests.
const SNAPSHOT_INTERVAL: &str = "1s";

fn env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("MODELGATE_SNAPSHOT__DIR", dir.display().to_string()),
        ("MODELGATE_SNAPSHOT__INTERVAL", SNAPSHOT_INTERVAL.to_owned()),
    ]
}

async fn start(env: &[(&'static str, String)]) -> Collector {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Collector::start(&env).await
}

/// The lending-api regressions as (endpoint, rule, candidate, baseline, state).
async fn regressions(collector: &Collector) -> Vec<(String, String, String, String, String)> {
    let json = collector
        .json("/api/v1/regressions?service=lending-api")
        .await;
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    json["regressions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        s(&r["endpoint"]),
                        s(&r["rule"]),
                        s(&r["candidate_version"]),
                        s(&r["baseline_version"]),
                        s(&r["state"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `rules` are firing for v1.3 against v1.2 on both endpoints.
fn all_firing(found: &[(String, String, String, String, String)], rules: &[&str]) -> bool {
    ENDPOINTS.iter().all(|ep| {
        rules.iter().all(|rule| {
            found.iter().any(|(e, r, c, b, state)| {
                e == ep && r == rule && c == "v1.3" && b == "v1.2" && state == "ALERT_STATE_FIRING"
            })
        })
    })
}

/// The baseline of each endpoint of lending-api, per `/api/v1/versions`.
async fn baselines(collector: &Collector) -> Vec<(String, String)> {
    let json = collector.json("/api/v1/versions?service=lending-api").await;
    let mut v: Vec<(String, String)> = json["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap_or_default().to_owned(),
                e["baseline_version"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_incident_keeps_the_alert_firing_and_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let env = env(dir.path());
    let first = start(&env).await;

    let scenario = Scenario::load("lending").unwrap();
    let options = ReplayOptions {
        endpoint: first.grpc_url(),
        rate: None,
        ..ReplayOptions::default()
    };
    let report = tokio::time::timeout(Duration::from_secs(30), replay(&scenario, &options))
        .await
        .expect("replay within 30 s")
        .unwrap();
    assert_eq!(report.failed, 0);

    let rules = ["sla", "relative", "errors"];
    let before = eventually(Duration::from_secs(20), || async {
        let found = regressions(&first).await;
        all_firing(&found, &rules).then_some(found)
    })
    .await
    .unwrap_or_else(|| panic!("not firing within 20 s; log:\n{}", first.log()));
    let baselines_before = baselines(&first).await;
    assert_eq!(
        baselines_before,
        vec![
            ("/funding-approve".to_owned(), "v1.2".to_owned()),
            ("/risk-score".to_owned(), "v1.2".to_owned())
        ]
    );
    // More than one snapshot interval, so a snapshot holds the firing state.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let file = dir.path().join(FILE_NAME);
    let bytes = std::fs::read(&file).expect("a snapshot was written");
    assert_eq!(&bytes[..8], &MAGIC);
    let first_log = first.kill9().await;
    assert!(
        !first_log.contains("snapshot refused"),
        "first run: {first_log}"
    );

    // Restart on the same directory.
    let spawned = Instant::now();
    let second = start(&env).await;
    let listening = Instant::now();
    let limit = 2 * EVALUATION_INTERVAL;
    let after = eventually(limit, || async {
        let found = regressions(&second).await;
        all_firing(&found, &rules).then_some(found)
    })
    .await;
    let firing_at = Instant::now();
    let after = after.unwrap_or_else(|| {
        panic!(
            "not firing within {limit:?} of the restart; before the crash: {before:?}\nlog:\n{}",
            second.log()
        )
    });
    println!(
        "restart: firing again {:.0} ms after the listening line ({:.0} ms after spawn), limit {} ms; {} regressions restored",
        firing_at.duration_since(listening).as_secs_f64() * 1e3,
        firing_at.duration_since(spawned).as_secs_f64() * 1e3,
        limit.as_millis(),
        after.len()
    );
    assert_eq!(baselines(&second).await, baselines_before);
    let verdict = second
        .json("/api/v1/verdict?service=lending-api&candidate=v1.3")
        .await;
    assert_eq!(
        verdict["outcome"], "VERDICT_OUTCOME_REGRESSION",
        "{verdict}"
    );

    // Judged again by the wall clock (two evaluations later): still firing,
    // and never through pending again (no hold re-accumulated).
    tokio::time::sleep(2 * EVALUATION_INTERVAL + Duration::from_millis(200)).await;
    let later = regressions(&second).await;
    assert!(all_firing(&later, &rules), "{later:?}");
    assert_eq!(baselines(&second).await, baselines_before);
    // The dashboard's history came back with its points from before the crash.
    let history = second.json("/api/v1/history?service=lending-api").await;
    let oldest = history["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["versions"].as_array().unwrap().iter())
        .filter_map(|v| v["points"][0]["unix_ms"].as_u64())
        .min()
        .expect("history points");
    let crash_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - spawned.elapsed().as_millis() as u64;
    assert!(
        oldest < crash_ms,
        "history starts at {oldest}, restart at {crash_ms}"
    );
    let log = second.log();
    assert!(log.contains("restored snapshot"), "{log}");
    assert!(!log.contains("regression alert pending"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("regression alert firing") && l.contains("candidate=v1.3")),
        "v1.3 fired anew instead of staying firing:\n{log}"
    );
    let status = tokio::time::timeout(Duration::from_secs(25), second.stop())
        .await
        .expect("stopped");
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_is_refused_by_name_and_the_collector_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    std::fs::write(&file, b"\x00\x17garbage, not a snapshot at all\xff\xfe").unwrap();
    let env = env(dir.path());
    let collector = start(&env).await;
    let refused = eventually(Duration::from_secs(5), || async {
        let log = collector.log();
        log.lines()
            .find(|l| l.contains("refused") && l.contains(&file.display().to_string()))
            .map(str::to_owned)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no refusal naming {} logged:\n{}",
            file.display(),
            collector.log()
        )
    });
    println!("corrupt snapshot: {refused}");
    assert!(refused.contains("ERROR"), "{refused}");
    assert!(refused.contains("not a modelgate snapshot"), "{refused}");
    assert_eq!(collector.get("/readyz").await, (200, "ready\n".to_owned()));
    assert!(regressions(&collector).await.is_empty());
    let versions = collector.json("/api/v1/versions").await;
    assert_eq!(
        versions["endpoints"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "{versions}"
    );
    // Kept aside for inspection, not destroyed.
    assert!(dir.path().join("modelgate.snapshot.refused").is_file());

    // A graceful stop writes a fresh, valid snapshot in its place.
    let status = tokio::time::timeout(Duration::from_secs(25), collector.stop())
        .await
        .expect("stopped");
    assert!(status.success(), "{status}");
    let bytes = std::fs::read(&file).expect("a snapshot at shutdown");
    assert_eq!(&bytes[..8], &MAGIC);
}
