//! A short smoke of the load generator against the real binary: correctness
//! only (every acknowledged span is counted by the collector), no timing.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use modelgate_e2e::{eventually, metric, metric_sum, modelgate_command, Collector};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_smoke_every_acknowledged_span_is_counted() {
    let collector = Collector::start(&[]).await;
    let out = modelgate_command(None)
        .args([
            "loadgen",
            "--endpoint",
            &collector.grpc_url(),
            "--duration",
            "2s",
            "--connections",
            "2",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap();
    assert!(line.starts_with("loadgen: spans_per_s="), "{stdout}");
    let accepted: u64 = stdout
        .lines()
        .find(|l| l.starts_with("| spans accepted"))
        .and_then(|l| l.split('|').nth(2))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(accepted >= 512, "{stdout}");
    let counted = eventually(Duration::from_secs(10), || async {
        metric_sum(
            &collector.metrics().await,
            "modelgate_receiver_accepted_total",
            &[],
        )
        .filter(|v| *v as u64 == accepted)
    })
    .await;
    assert!(
        counted.is_some(),
        "collector counted {:?}, loadgen {accepted}",
        metric_sum(
            &collector.metrics().await,
            "modelgate_receiver_accepted_total",
            &[]
        )
    );
    let series = metric(&collector.metrics().await, "modelgate_series_active", &[]).unwrap();
    assert!(series >= 200.0, "{series}");
    assert!(collector.stop().await.success());
}
