//! The dashboard end to end: the real binary judges the replayed lending
//! incident, headless Chromium (`scripts/install-test-deps` installs it)
//! loads `/` from the admin port, runs the page's own script against
//! `/api/v1/history`, and the rendered DOM must show both versions, both
//! endpoints and the firing `sla` alert of v1.3. A screenshot is saved to
//! `${CARGO_TARGET_DIR:-target}/dashboard.png` for a human to look at.
//!
//! Every wait is bounded; a browser that hangs is killed with its whole
//! process group, and its profile directory is removed.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use modelgate::replay::{replay, ReplayOptions, Scenario};
use modelgate_e2e::{eventually, Collector, CHROMIUM, CHROMIUM_HEADLESS};

/// One browser run, start to exit.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);
/// The replay takes 5 s; the alert fires a few seconds into v1.3.
const FIRE_TIMEOUT: Duration = Duration::from_secs(60);
const ENDPOINTS: [&str; 2] = ["/risk-score", "/funding-approve"];

/// A fresh directory, removed on drop (also when the test panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "modelgate-dashboard-{tag}-{}-{}",
            std::process::id(),
            modelgate_collector::pipeline::now_ms()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs headless Chromium with `args` and a fresh profile; returns its
/// stdout. Killed (with everything it started) after [`BROWSER_TIMEOUT`].
async fn chromium(args: &[String]) -> String {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: run scripts/install-test-deps"
    );
    let profile = TempDir::new("profile");
    let mut command = tokio::process::Command::new(CHROMIUM);
    command
        .args(CHROMIUM_HEADLESS)
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills the renderers too.
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().expect("spawn chromium");
    let pid = child.id().expect("chromium pid");
    match tokio::time::timeout(BROWSER_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => {
            let output = output.expect("chromium output");
            assert!(
                output.status.success(),
                "chromium {args:?}: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            panic!("chromium {args:?} did not finish within {BROWSER_TIMEOUT:?}; killed");
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_lending_regression() {
    let collector = Collector::start(&[]).await;
    let (status, page) = collector.get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains("/dashboard.js"), "{page}");
    assert_eq!(collector.get("/dashboard.js").await.0, 200);
    assert_eq!(collector.get("/dashboard.css").await.0, 200);

    let scenario = Scenario::load("lending").unwrap();
    let options = ReplayOptions {
        endpoint: collector.grpc_url(),
        rate: None,
        ..ReplayOptions::default()
    };
    let report = replay(&scenario, &options).await.unwrap();
    assert_eq!(report.failed, 0);

    // The history API: both endpoints, both versions with points, the sla
    // alert of v1.3 firing.
    let history = eventually(FIRE_TIMEOUT, || async {
        let h = collector.json("/api/v1/history?service=lending-api").await;
        let firing = ENDPOINTS.iter().all(|ep| {
            h["active"].as_array().unwrap().iter().any(|r| {
                r["endpoint"] == *ep && r["rule"] == "sla" && r["candidate_version"] == "v1.3"
            })
        });
        firing.then_some(h)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no sla alert for v1.3 within {FIRE_TIMEOUT:?}; log:\n{}",
            collector.log()
        )
    });
    let endpoints = history["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "{history}");
    for ep in endpoints {
        let versions: Vec<&str> = ep["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["v1.2", "v1.3"], "{ep}");
        assert_eq!(ep["baseline_version"], "v1.2", "{ep}");
        for v in ep["versions"].as_array().unwrap() {
            let points = v["points"].as_array().unwrap();
            assert!(!points.is_empty(), "{v}");
            assert!(points.last().unwrap()["requests"].as_u64().unwrap() > 0);
        }
    }
    assert_eq!(
        collector.json("/api/v1/history?service=nobody").await["endpoints"],
        serde_json::json!([])
    );

    // The page, rendered by a real browser running its own script.
    let url = format!("http://{}/", collector.admin);
    let dom = chromium(&[
        "--virtual-time-budget=5000".into(),
        "--dump-dom".into(),
        url.clone(),
    ])
    .await;
    for text in [
        "v1.2",
        "v1.3",
        "/risk-score",
        "/funding-approve",
        "lending-api",
    ] {
        assert!(
            dom.contains(text),
            "{text} not in the rendered page:\n{dom}"
        );
    }
    assert!(
        dom.contains("class=\"regression firing\"")
            && dom.contains("data-rule=\"sla\" data-candidate=\"v1.3\""),
        "no firing sla alert of v1.3 in the rendered page:\n{dom}"
    );
    assert!(dom.contains("<svg"), "no chart drawn:\n{dom}");
    assert!(dom.contains("class=\"status live\""), "{dom}");

    // A screenshot for people.
    let png = target_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    chromium(&[
        "--virtual-time-budget=5000".into(),
        format!("--screenshot={}", png.display()),
        "--window-size=1400,1000".into(),
        url,
    ])
    .await;
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(
        bytes.len() > 1000,
        "{} is {} bytes",
        png.display(),
        bytes.len()
    );
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        png.display()
    );
    println!("dashboard screenshot: {}", png.display());

    collector.stop().await;
}
