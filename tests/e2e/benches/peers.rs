//! modelgate beside the peer a user would pick instead, side by side in
//! one run: the project's own OpenTelemetry Collector build running the
//! spanmetrics connector (per-route, per-version latency histograms from
//! spans, the usual way to get RED metrics out of a pipeline) over the same
//! spans at the same rate; then modelgate's own cost per metric data point.
//!
//! - Spans: `modelgate loadgen` (pinned to CPU 1) sends its pre-encoded
//!   batches (512 SERVER spans of ten attributes, 900 series) over OTLP/gRPC
//!   at a fixed rate to the peer under test (pinned to CPU 0): modelgate on
//!   its defaults (judge on), or the Collector with `otlp` receiver ->
//!   `spanmetrics` (dimensions `http.route`, `model.version`,
//!   `http.response.status_code`) -> `debug` exporter. Each peer's CPU time
//!   over the run gives CPU-seconds per million spans; its resident memory
//!   at the end and at its peak are read from `/proc`. The two alternate
//!   (modelgate, Collector, modelgate, Collector) so a drift of the
//!   machine's speed shows as a spread, not as a difference.
//! - Metric points: `http.server.request.duration` points (delta, the
//!   advised 15 buckets; 500 series of 5 versions, 50 routes and 2 status
//!   codes per export request), pre-encoded, sent by this process (pinned to
//!   CPU 1) over OTLP/gRPC `MetricsService` as fast as answered to modelgate
//!   (CPU 0): its CPU time per point.
//!
//! Run: `cargo build --release -p modelgate && scripts/build-otelcol &&
//! cargo bench -p modelgate-e2e --bench peers` (`-- SECONDS RATE`, default
//! 10 s at 50000 spans/s). The last line is `peers: ...`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use modelgate_collector::codec::BytesCodec;
use modelgate_collector::signal::Signal;
use modelgate_e2e::otelcol::Otelcol;
use modelgate_e2e::{
    cpu_seconds, free_addr, metric, modelgate_command, peak_rss_kib, rss_kib, Collector,
};
use modelgate_fixture::{
    attr_int, attr_str, metrics_request_of, HistogramSpec, HTTP_SERVER_BOUNDS_S,
};
use prost::bytes::Bytes;
use prost::Message;

/// The Collector's pipeline: spans in, spanmetrics, metrics out to the
/// `debug` exporter (one line per export).
const SPANMETRICS: &str = r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "${env:OTLP_GRPC_ENDPOINT}"
connectors:
  spanmetrics:
    histogram:
      explicit:
        buckets: [2ms, 4ms, 6ms, 8ms, 10ms, 50ms, 100ms, 200ms, 400ms, 800ms, 1s, 1400ms, 2s, 5s, 10s, 15s]
    dimensions:
      - name: http.route
      - name: model.version
      - name: http.response.status_code
    exemplars:
      enabled: false
    metrics_flush_interval: 10s
exporters:
  debug:
    verbosity: basic
service:
  telemetry:
    metrics:
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: ${env:OTELCOL_METRICS_PORT}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [spanmetrics]
    metrics:
      receivers: [spanmetrics]
      exporters: [debug]
"#;

/// What one peer cost over one run.
#[derive(Debug, Clone, Copy)]
struct Cost {
    spans: f64,
    cpu_s: f64,
    rss_mib: f64,
    peak_mib: f64,
}

impl Cost {
    fn cpu_s_per_million(&self) -> f64 {
        self.cpu_s / (self.spans / 1e6).max(1e-9)
    }
}

/// Pins this process (every thread of it) to `cpu`.
fn pin_self(cpu: usize) {
    let status = std::process::Command::new("taskset")
        .args(["-acp", &cpu.to_string(), &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset");
    assert!(status.success(), "taskset -acp {cpu}");
}

/// `modelgate loadgen` on CPU 1 against `endpoint` at `rate` spans/s for
/// `seconds`: the spans it got accepted.
async fn load(endpoint: &str, rate: f64, seconds: u64) -> f64 {
    let mut command = tokio::process::Command::from(modelgate_command(Some(1)));
    command.args([
        "loadgen",
        "--endpoint",
        endpoint,
        "--connections",
        "4",
        "--rate",
        &format!("{rate:.0}"),
        "--duration",
        &format!("{seconds}s"),
    ]);
    let out = command.output().await.unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    // "| spans accepted / rejected | A / R |"
    let accepted = report
        .lines()
        .find(|l| l.starts_with("| spans accepted"))
        .and_then(|l| l.split('|').nth(2))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok());
    accepted.unwrap_or_else(|| panic!("loadgen reported no spans:\n{report}"))
}

/// One run of the load against modelgate.
async fn modelgate_run(rate: f64, seconds: u64) -> Cost {
    let collector = Collector::start_pinned(0, &[]).await;
    let pid = collector.pid();
    let before = cpu_seconds(pid);
    let sent = load(&collector.grpc_url(), rate, seconds).await;
    // Let the pipeline take what is queued and judge once more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cost = Cost {
        spans: sent,
        cpu_s: cpu_seconds(pid) - before,
        rss_mib: rss_kib(pid) as f64 / 1024.0,
        peak_mib: peak_rss_kib(pid) as f64 / 1024.0,
    };
    let counted = metric(
        &collector.metrics().await,
        "modelgate_receiver_accepted_total",
        &[("signal", "traces")],
    )
    .unwrap_or(0.0);
    assert_eq!(counted, sent, "modelgate counted what loadgen sent");
    collector.stop().await;
    cost
}

/// One run of the load against the Collector with spanmetrics.
async fn otelcol_run(config: &std::path::Path, rate: f64, seconds: u64) -> Cost {
    let (grpc, metrics) = (free_addr(), free_addr());
    let otelcol = Otelcol::start_pinned(
        0,
        config,
        &[
            ("OTLP_GRPC_ENDPOINT", &grpc.to_string()),
            ("OTELCOL_METRICS_PORT", &metrics.port().to_string()),
        ],
    )
    .await;
    let pid = otelcol.pid();
    let before = cpu_seconds(pid);
    let sent = load(&format!("http://{grpc}"), rate, seconds).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cost = Cost {
        spans: sent,
        cpu_s: cpu_seconds(pid) - before,
        rss_mib: rss_kib(pid) as f64 / 1024.0,
        peak_mib: peak_rss_kib(pid) as f64 / 1024.0,
    };
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let accepted =
        modelgate_e2e::metric_sum(&text, "otelcol_receiver_accepted_spans", &[]).unwrap_or(0.0);
    assert_eq!(accepted, sent, "the Collector took what loadgen sent");
    otelcol.stop().await;
    cost
}

/// `rounds` export requests of `points` delta `http.server.request.duration`
/// points each, encoded.
fn metric_batches(rounds: usize, points: usize) -> Vec<Bytes> {
    (0..rounds)
        .map(|r| {
            let specs = (0..points).map(|i| {
                let values: Vec<f64> = (0..20)
                    .map(|k| 0.005 + ((i * 31 + k * 7 + r) % 400) as f64 / 1000.0)
                    .collect();
                HistogramSpec::of_values(
                    ["checkout", "lending-api", "search"][i % 3],
                    "http.server.request.duration",
                    "s",
                    &HTTP_SERVER_BOUNDS_S,
                    &values,
                )
                .attr(attr_str("http.route", &format!("/api/v1/op{}", i % 50)))
                .attr(attr_str("model.version", &format!("v1.{}", (i / 50) % 5)))
                .attr(attr_int(
                    "http.response.status_code",
                    if i % 10 == 9 { 500 } else { 200 },
                ))
            });
            Bytes::from(metrics_request_of(specs).encode_to_vec())
        })
        .collect()
}

/// Sends `batches` to modelgate's `MetricsService` over `connections`
/// connections as fast as answered for `seconds`; the points sent.
async fn send_points(
    collector: &Collector,
    batches: Arc<Vec<Bytes>>,
    points_per_batch: u64,
    connections: usize,
    seconds: u64,
) -> u64 {
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let channel = collector.grpc_channel().await.unwrap();
        let (batches, sent) = (batches.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            let path =
                tonic::codegen::http::uri::PathAndQuery::from_static(Signal::Metrics.grpc_path());
            let mut i = c;
            while Instant::now() < deadline {
                grpc.ready().await.unwrap();
                let body = batches[i % batches.len()].clone();
                grpc.unary(tonic::Request::new(body), path.clone(), BytesCodec)
                    .await
                    .unwrap();
                sent.fetch_add(points_per_batch, Ordering::Relaxed);
                i += connections;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    sent.load(Ordering::Relaxed)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seconds = args.first().map_or(10, |s| *s as u64);
    let rate = args.get(1).copied().unwrap_or(50_000.0);
    pin_self(1);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spanmetrics.yaml");
    std::fs::write(&config, SPANMETRICS).unwrap();

    // ---- Spans: modelgate and the Collector with spanmetrics, in turn. ----
    let mut runs: Vec<(&str, Cost)> = Vec::new();
    for _ in 0..2 {
        runs.push(("modelgate", modelgate_run(rate, seconds).await));
        runs.push((
            "otelcol spanmetrics",
            otelcol_run(&config, rate, seconds).await,
        ));
    }
    println!("| peer (CPU 0) | spans | CPU s | CPU s per million spans | RSS at end | peak RSS |");
    println!("|---|---|---|---|---|---|");
    for (peer, c) in &runs {
        println!(
            "| {peer} | {:.0} | {:.2} | {:.2} | {:.0} MiB | {:.0} MiB |",
            c.spans,
            c.cpu_s,
            c.cpu_s_per_million(),
            c.rss_mib,
            c.peak_mib
        );
    }
    let of = |name: &str, f: fn(&Cost) -> f64| {
        median(
            runs.iter()
                .filter(|(p, _)| *p == name)
                .map(|(_, c)| f(c))
                .collect(),
        )
    };
    let (mg_cpu, oc_cpu) = (
        of("modelgate", Cost::cpu_s_per_million),
        of("otelcol spanmetrics", Cost::cpu_s_per_million),
    );
    let (mg_peak, oc_peak) = (
        of("modelgate", |c| c.peak_mib),
        of("otelcol spanmetrics", |c| c.peak_mib),
    );
    println!();
    println!(
        "{rate:.0} spans/s for {seconds} s each: modelgate {mg_cpu:.2} CPU-s per million spans, the Collector with spanmetrics {oc_cpu:.2} ({:.2}x modelgate's); peak RSS {mg_peak:.0} MiB against {oc_peak:.0} MiB",
        oc_cpu / mg_cpu.max(1e-9)
    );

    // ---- Metric points: modelgate's cost per point. ----
    let points_per_batch = 500;
    let batches = Arc::new(metric_batches(16, points_per_batch));
    let collector = Collector::start_pinned(0, &[]).await;
    let pid = collector.pid();
    let before = cpu_seconds(pid);
    let points = send_points(
        &collector,
        batches.clone(),
        points_per_batch as u64,
        4,
        seconds,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = cpu_seconds(pid) - before;
    let counted = metric(
        &collector.metrics().await,
        "modelgate_receiver_accepted_total",
        &[("signal", "metrics")],
    )
    .unwrap_or(0.0);
    assert_eq!(counted, points as f64, "modelgate counted every point sent");
    let rss = rss_kib(pid) as f64 / 1024.0;
    collector.stop().await;
    let us_per_point = cpu / points.max(1) as f64 * 1e6;
    println!(
        "metric points: {points} http.server.request.duration points (delta, 15 buckets, {} bytes per export of {points_per_batch}) in {seconds} s, modelgate CPU {cpu:.2} s: {us_per_point:.2} us per point, {:.0} points per CPU-second, RSS {rss:.0} MiB",
        batches[0].len(),
        points as f64 / cpu.max(1e-9)
    );
    println!(
        "peers: modelgate_cpu_s_per_million_spans={mg_cpu:.2} otelcol_spanmetrics_cpu_s_per_million_spans={oc_cpu:.2} modelgate_peak_rss_mib={mg_peak:.0} otelcol_peak_rss_mib={oc_peak:.0} modelgate_us_per_metric_point={us_per_point:.2}"
    );
}
