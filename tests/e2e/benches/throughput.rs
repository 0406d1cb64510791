//! A first throughput figure: spans per second the release `modelgate`
//! binary accepts over loopback OTLP/gRPC with the judge on, and its resident
//! memory. Batches of 512 spans across 300 series (3 services x 20 endpoints
//! x 5 versions) are encoded once and sent over 4 concurrent connections for
//! a bounded time; the count accepted is read back from `/metrics`.
//!
//! Run: `cargo build --release -p modelgate && cargo bench -p modelgate-e2e --bench throughput`
//! (`-- SECONDS` to change the duration, default 10).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use modelgate::fixture::{attr_int, attr_str, request_of, SpanSpec};
use modelgate_e2e::{metric, send_raw, Collector};
use prost::Message;
use tonic::transport::Channel;

const SPANS_PER_BATCH: usize = 512;
const CONNECTIONS: usize = 4;

fn batches() -> Vec<Vec<u8>> {
    (0..16)
        .map(|b| {
            request_of((0..SPANS_PER_BATCH).map(|i| {
                let n = b * SPANS_PER_BATCH + i;
                let service = ["checkout", "lending-api", "search"][n % 3];
                let route = format!("/api/v1/op{}", (n / 3) % 20);
                let version = format!("v1.{}", (n / 60) % 5);
                SpanSpec::request(service, &route, &version, 20 + (n % 90) as u64)
                    .attr(attr_str("http.request.method", "POST"))
                    .attr(attr_int("http.response.status_code", 200))
                    .attr(attr_str("server.address", "api.internal"))
                    .attr(attr_int("server.port", 8443))
                    .attr(attr_str("url.scheme", "https"))
                    .attr(attr_str("network.protocol.version", "2"))
                    .attr(attr_str("user_agent.original", "lender-sdk/2.3"))
            }))
            .encode_to_vec()
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let collector = Collector::start(&[]).await;
    let batches = Arc::new(batches());
    let bytes_per_batch = batches[0].len();
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let channel = Channel::from_shared(collector.grpc_url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let batches = batches.clone();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while Instant::now() < deadline {
                if send_raw(&channel, batches[i % batches.len()].clone(), false)
                    .await
                    .is_ok()
                {
                    sent.fetch_add(SPANS_PER_BATCH as u64, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let text = collector.metrics().await;
    let accepted = metric(&text, "modelgate_receiver_accepted_total", &[]).unwrap_or(0.0);
    let series = metric(&text, "modelgate_series_active", &[]).unwrap_or(0.0);
    let rss_mib = collector.rss_kib() as f64 / 1024.0;
    let rate = accepted / elapsed;
    println!("| measure | value |");
    println!("|---|---|");
    println!("| duration | {elapsed:.1} s |");
    println!("| connections x batch | {CONNECTIONS} x {SPANS_PER_BATCH} spans ({bytes_per_batch} bytes) |");
    println!(
        "| spans sent (acknowledged) | {} |",
        sent.load(Ordering::Relaxed)
    );
    println!("| spans accepted (modelgate_receiver_accepted_total) | {accepted} |");
    println!("| series | {series} |");
    println!("| accepted spans/s | {rate:.0} |");
    println!("| collector RSS | {rss_mib:.0} MiB |");
    println!(
        "throughput: accepted_spans_per_s={rate:.0} rss_mib={rss_mib:.0} cores={}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    collector.stop().await;
}
