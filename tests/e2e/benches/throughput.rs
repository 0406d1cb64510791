//! Throughput of the collector, three ways in one run so the ratios hold on
//! a noisy machine:
//! (a) decode only: the `opentelemetry-proto` decode of the load batches, the
//!     limit of a receiver that decodes full messages;
//! (b) decode + extract + aggregate in process, no network, one thread (the
//!     old receive path, for reference);
//! (b2) the receive path now: wire scan + intern + aggregate in process, no
//!     network, one thread: the collector's own cost per span;
//! (c) end to end over loopback gRPC: the release `modelgate` (judge on) on
//!     CPU 0 and `modelgate loadgen` on CPU 1 (`taskset`).
//! Batches: 512 spans of ten attributes over a few hundred series and five
//! versions (`modelgate::loadgen::batches`).
//!
//! Run: `cargo build --release -p modelgate && cargo bench -p modelgate-e2e --bench throughput`
//! (`-- SECONDS` per measurement, default 10). The last line is
//! `throughput: e2e_spans_per_s=X decode_only_spans_per_s=Y e2e_over_decode=R rss_mib=M`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use modelgate::loadgen::{batches, LoadOptions};
use modelgate_collector::aggregate::Aggregator;
use modelgate_collector::config::{AggregateConfig, ExtractConfig};
use modelgate_collector::extract::{extract, wire, Interner};
use modelgate_e2e::{cpu_seconds, metric_sum, modelgate_command, Collector};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// Runs `step` over the batches for `seconds`; spans per second.
fn in_process(batches: &[Vec<u8>], seconds: u64, mut step: impl FnMut(&[u8]) -> usize) -> f64 {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut spans = 0usize;
    let mut i = 0;
    while Instant::now() < deadline {
        for _ in 0..16 {
            spans += step(&batches[i % batches.len()]);
            i += 1;
        }
    }
    spans as f64 / started.elapsed().as_secs_f64()
}

fn span_count(r: &ExportTraceServiceRequest) -> usize {
    r.resource_spans
        .iter()
        .flat_map(|rs| rs.scope_spans.iter())
        .map(|ss| ss.spans.len())
        .sum()
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let options = LoadOptions::default();
    let encoded = batches(&options, 32);
    let bytes = encoded[0].len();

    // (a) Decode only.
    let decode = in_process(&encoded, seconds, |b| {
        span_count(&ExportTraceServiceRequest::decode(b).unwrap())
    });

    // (b) Decode, extract, aggregate.
    let config = ExtractConfig::default();
    let mut agg = Aggregator::new(
        AggregateConfig::default(),
        vec![100.0],
        Default::default(),
        modelgate_collector::pipeline::now_ms(),
    );
    let mut samples = Vec::with_capacity(options.batch_spans);
    let mut decoded_names = Interner::new(1 << 16);
    let aggregate = in_process(&encoded, seconds, |b| {
        let request = ExportTraceServiceRequest::decode(b).unwrap();
        samples.clear();
        extract(&request, &config, &mut decoded_names, &mut samples);
        let now = modelgate_collector::pipeline::now_ms();
        agg.record(&samples, now);
        samples.len()
    });

    // (b2) Wire scan, intern, aggregate: what the receiver and the pipeline
    // task do per export now.
    let mut agg = Aggregator::new(
        AggregateConfig::default(),
        vec![100.0],
        Default::default(),
        modelgate_collector::pipeline::now_ms(),
    );
    let mut interner = Interner::new(1 << 16);
    let mut interned = Vec::with_capacity(options.batch_spans);
    let fast = in_process(&encoded, seconds, |b| {
        interned.clear();
        wire::scan(b, &config, |s| interned.push(interner.intern(s))).unwrap();
        let now = modelgate_collector::pipeline::now_ms();
        agg.record(&interned, now);
        interned.len()
    });

    // (c) End to end, one core each.
    let collector = Collector::start_pinned(0, &[]).await;
    let loadgen = |rate: Option<f64>| {
        let mut command = tokio::process::Command::from(modelgate_command(Some(1)));
        command
            .args([
                "loadgen",
                "--endpoint",
                &collector.grpc_url(),
                "--connections",
                "8",
            ])
            .args(["--duration", &format!("{seconds}s")]);
        if let Some(rate) = rate {
            command.args(["--rate", &format!("{rate:.0}")]);
        }
        async move {
            let out = command.output().await.unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let field = |report: &str, key: &str| -> f64 {
        report
            .lines()
            .last()
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix(key)))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let cpu_before = cpu_seconds(collector.pid());
    let report = loadgen(None).await;
    let cpu_used = cpu_seconds(collector.pid()) - cpu_before;
    let e2e = field(&report, "spans_per_s=");
    let (p50, p99) = (
        field(&report, "export_p50_ms="),
        field(&report, "export_p99_ms="),
    );
    // The collector's own CPU time: spans per CPU-second of the collector
    // is its capacity per core even when a neighbour steals some of CPU 0.
    let per_cpu_s = e2e * seconds as f64 / cpu_used.max(1e-9);
    // (d) Half the maximum rate: the latency a sender sees with headroom.
    let half = loadgen(Some(e2e / 2.0)).await;
    let (half_rate, half_p50, half_p99) = (
        field(&half, "spans_per_s="),
        field(&half, "export_p50_ms="),
        field(&half, "export_p99_ms="),
    );
    let counted = metric_sum(
        &collector.metrics().await,
        "modelgate_receiver_accepted_total",
        &[],
    )
    .unwrap_or(0.0);
    let rss_mib = collector.rss_kib() as f64 / 1024.0;
    collector.stop().await;

    println!("| measurement | spans/s | vs decode only |");
    println!("|---|---|---|");
    println!("| (a) decode only, 1 thread | {decode:.0} | 1.00 |");
    println!(
        "| (b) decode + extract + aggregate, 1 thread | {aggregate:.0} | {:.2} |",
        aggregate / decode
    );
    println!(
        "| (b2) wire scan + intern + aggregate, 1 thread | {fast:.0} | {:.2} |",
        fast / decode
    );
    println!(
        "| (c) end to end, loopback gRPC, collector on 1 core (judge on) | {e2e:.0} | {:.2} |",
        e2e / decode
    );
    println!(
        "| (d) end to end at half that rate: Export p50 {half_p50:.2} ms, p99 {half_p99:.2} ms | {half_rate:.0} | {:.2} |",
        half_rate / decode
    );
    println!();
    println!(
        "collector CPU time during (c): {cpu_used:.2} s of {seconds} s, so {per_cpu_s:.0} spans per collector CPU-second"
    );
    println!("batches of {} spans ({bytes} bytes); Export latency p50 {p50:.2} ms, p99 {p99:.2} ms; collector counted {counted} spans; collector RSS {rss_mib:.0} MiB", options.batch_spans);
    println!(
        "throughput: e2e_spans_per_s={e2e:.0} decode_only_spans_per_s={decode:.0} e2e_over_decode={:.2} rss_mib={rss_mib:.0}",
        e2e / decode
    );
}
