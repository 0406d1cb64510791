//! Resident memory of the release collector by number of active series, and
//! over a soak at a fixed rate.
//!
//! Run: `cargo build --release -p modelgate && cargo bench -p modelgate-e2e --bench memory`
//! prints RSS at 1k, 10k and 100k series (services of 500 endpoints, one
//! version, sent in 5,000-span batches; before any `/metrics` scrape):
//! sampled every half second for 10 s once the last series is queryable,
//! ten judge evaluations over every series, the last sample and the
//! largest. `-- --soak-secs 600 [--rate 250000]` instead runs
//! `modelgate loadgen`'s load (900 series) at a fixed rate for that long,
//! sampling RSS every 10 s, and prints the first sample after a one-minute
//! warm-up, the last and the largest: a flat line means no growth.
//! Extra `KEY=VALUE` arguments go to the collector's environment.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use modelgate::loadgen::{self, send_raw, LoadOptions};
use modelgate_e2e::{eventually, Collector};
use modelgate_fixture::{request_of, SpanSpec};
use prost::Message;
use tonic::transport::Channel;

const BATCH: usize = 5_000;
/// RSS samples per series count, [`RSS_EVERY`] apart.
const RSS_SAMPLES: usize = 20;
const RSS_EVERY: Duration = Duration::from_millis(500);

/// The service and endpoint of series `i`.
fn series(i: usize) -> (String, String) {
    (format!("wide-{}", i / 500), format!("/item/e{}", i % 500))
}

async fn by_series(env: &[(&str, &str)]) {
    // 500 endpoints a service (each service at its endpoint cap, far under
    // its share of the series cap): the figures are per series, and the
    // same settings run on builds without those caps.
    let collector = Collector::start(env).await;
    let channel = Channel::from_shared(collector.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let rss_mib = || collector.rss_kib() as f64 / 1024.0;
    println!("| active series | RSS MiB (last) | RSS MiB (largest over 10 s) |");
    println!("|---|---|---|");
    let idle = rss_mib();
    println!("| 0 | {idle:.0} | {idle:.0} |");
    let mut sent = 0;
    for target in [1_000usize, 10_000, 100_000] {
        while sent < target {
            let n = BATCH.min(target - sent);
            let body = request_of((sent..sent + n).map(|i| {
                let (service, endpoint) = series(i);
                SpanSpec::request(&service, &endpoint, "v1", 30)
            }))
            .encode_to_vec();
            send_raw(&channel, body, false).await.unwrap();
            sent += n;
        }
        let (service, endpoint) = series(target - 1);
        let last = format!("/api/v1/versions?service={service}&endpoint={endpoint}");
        let seen = eventually(Duration::from_secs(60), || async {
            let json = collector.json(&last).await;
            json["endpoints"]
                .as_array()
                .map(Vec::len)
                .filter(|n| *n == 1)
        })
        .await;
        assert!(seen.is_some(), "series {target} never arrived");
        // The judge evaluates every series once a second, and its
        // transient lists are part of what a collector needs resident.
        let (mut last, mut largest) = (0.0, 0.0_f64);
        for _ in 0..RSS_SAMPLES {
            tokio::time::sleep(RSS_EVERY).await;
            last = rss_mib();
            largest = largest.max(last);
        }
        println!("| {target} | {last:.0} | {largest:.0} |");
    }
    collector.stop().await;
}

async fn soak(env: &[(&str, &str)], seconds: u64, rate: f64) {
    let collector = Collector::start(env).await;
    let options = LoadOptions {
        endpoint: collector.grpc_url(),
        connections: 4,
        duration: Duration::from_secs(seconds),
        rate: Some(rate),
        ..LoadOptions::default()
    };
    let load = tokio::spawn(async move { loadgen::run(&options).await });
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let rss = collector.rss_kib() as f64 / 1024.0;
        samples.push((started.elapsed().as_secs(), rss));
        println!("soak t={}s rss_mib={rss:.1}", started.elapsed().as_secs());
    }
    let report = load.await.unwrap().unwrap();
    let warm: Vec<_> = samples.iter().filter(|(t, _)| *t >= 60).collect();
    let first = warm.first().map_or(0.0, |s| s.1);
    let last = warm.last().map_or(0.0, |s| s.1);
    let max = warm.iter().map(|s| s.1).fold(0.0, f64::max);
    println!(
        "soak: seconds={seconds} rate={rate:.0} spans_accepted={} calls_failed={} export_p50_ms={:.2} export_p99_ms={:.2} rss_mib_after_1min={first:.1} rss_mib_last={last:.1} rss_mib_max={max:.1}",
        report.spans_accepted,
        report.calls_failed,
        report.latency_ms.quantile(0.5).unwrap_or(0.0),
        report.latency_ms.quantile(0.99).unwrap_or(0.0)
    );
    collector.stop().await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let env: Vec<(&str, &str)> = args.iter().filter_map(|a| a.split_once('=')).collect();
    match value("--soak-secs") {
        Some(seconds) => soak(&env, seconds as u64, value("--rate").unwrap_or(250_000.0)).await,
        None => by_series(&env).await,
    }
}
