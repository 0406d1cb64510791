//! Snapshots seen from outside: the release collector holding N series
//! ([`Fleet`]: 100 services, baseline and candidate per endpoint, one
//! request each) snapshots every 5 s (the default) while two probes run
//! for [`PROBE`]: one asks `/readyz` back to back (it waits for a turn of
//! the pipeline task, so its longest answer is the longest the task was
//! held), one sends a [`BATCH`]-span Export every [`EVERY`] on existing
//! series (its latency and refusals are what senders see). Judging is set
//! to every 10 minutes so that only snapshots hold the task. Then the
//! collector stops (its last snapshot), the file's size is read, and a
//! new one starts on it: the restore is the time from its start to its
//! first ready answer, its series queryable.
//!
//! `cargo build --release -p modelgate && cargo bench -p modelgate-e2e --bench snapshot`
//! (`SNAPSHOT_SERIES=100000,1000000` by default); A/B:
//! `MODELGATE_BIN=/path/to/old/modelgate cargo bench -p modelgate-e2e --bench snapshot`.

// Bench code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use modelgate_e2e::fleet::{endpoint, now_nanos, service, Fleet};
use modelgate_e2e::{eventually, Collector};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

/// How long the probes run: three snapshots at the default 5 s.
const PROBE: Duration = Duration::from_secs(16);
/// Spans per probing Export.
const BATCH: usize = 500;
/// Between probing Exports: 25,000 spans/s.
const EVERY: Duration = Duration::from_millis(20);

/// Sorted durations: (p50, p99, max) in ms.
fn quantiles(mut d: Vec<Duration>) -> (f64, f64, f64) {
    d.sort_unstable();
    let at = |q: f64| {
        d.get(((d.len() as f64 * q) as usize).min(d.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    (at(0.5), at(0.99), at(1.0))
}

async fn readyz_probe(collector: &Collector, until: Instant) -> Vec<Duration> {
    let mut times = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        let (status, _) = collector.get("/readyz").await;
        assert_eq!(status, 200);
        times.push(started.elapsed());
    }
    times
}

async fn export_probe(
    collector: &Collector,
    fleet: &Fleet,
    until: Instant,
) -> (Vec<Duration>, usize) {
    let channel = collector.grpc_channel().await.expect("gRPC channel");
    let mut client = TraceServiceClient::new(channel);
    let requests: Vec<_> = fleet
        .round(1, now_nanos(), BATCH)
        .into_iter()
        .take(200)
        .collect();
    let mut times = Vec::new();
    let mut refused = 0;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for request in requests.iter().cycle() {
        tick.tick().await;
        if Instant::now() >= until {
            break;
        }
        let started = Instant::now();
        match client.export(collector.grpc_request(request.clone())).await {
            Ok(_) => times.push(started.elapsed()),
            Err(_) => refused += 1,
        }
    }
    (times, refused)
}

async fn arrived(collector: &Collector, fleet: &Fleet, limit: Duration) -> bool {
    let path = format!(
        "/api/v1/versions?service={}&endpoint={}",
        service(fleet.services - 1),
        endpoint(fleet.endpoints - 1)
    );
    eventually(limit, || async {
        let json = collector.json(&path).await;
        json["endpoints"]
            .as_array()
            .and_then(|e| e.first())
            .and_then(|e| e["versions"].as_array())
            .map(Vec::len)
            .filter(|n| *n == 2)
    })
    .await
    .is_some()
}

async fn measure(series: usize) {
    let dir = tempfile::tempdir().unwrap();
    let max_series = (series + series / 5).to_string();
    let endpoints = series / 200;
    let per_service = (endpoints + 1).to_string();
    let env = [
        ("MODELGATE_AGGREGATE__MAX_SERIES", max_series.as_str()),
        (
            "MODELGATE_EXTRACT__ENDPOINTS__MAX_PER_SERVICE",
            per_service.as_str(),
        ),
        ("MODELGATE_AGGREGATE__WINDOW", "10m"),
        ("MODELGATE_JUDGE__EVALUATION_INTERVAL", "10m"),
        ("MODELGATE_SNAPSHOT__DIR", dir.path().to_str().unwrap()),
        ("MODELGATE_SNAPSHOT__MAX_BYTES", "17179869184"),
    ];
    let collector = Collector::start(&env).await;
    let fleet = Fleet {
        services: 100,
        endpoints,
        per_series: 1,
        outcomes: 1,
    };
    assert_eq!(fleet.series(), series);
    fleet
        .feed(&collector, 0..2, Duration::from_millis(1100))
        .await;
    assert!(
        arrived(&collector, &fleet, Duration::from_secs(300)).await,
        "{series} series never arrived"
    );

    let until = Instant::now() + PROBE;
    let (ready, (exports, refused)) = tokio::join!(
        readyz_probe(&collector, until),
        export_probe(&collector, &fleet, until)
    );
    let stopping = Instant::now();
    assert!(collector.stop().await.success());
    let stop = stopping.elapsed();
    let size = std::fs::metadata(dir.path().join("modelgate.snapshot"))
        .unwrap()
        .len();

    let starting = Instant::now();
    let restarted = Collector::start(&env).await;
    eventually(Duration::from_secs(300), || async {
        (restarted.get("/readyz").await.0 == 200).then_some(())
    })
    .await
    .expect("ready after the restore");
    let restore = starting.elapsed();
    assert!(
        arrived(&restarted, &fleet, Duration::from_secs(10)).await,
        "series restored"
    );
    restarted.stop().await;

    let (r50, r99, rmax) = quantiles(ready);
    let sent = exports.len() + refused;
    let (e50, e99, emax) = quantiles(exports);
    println!(
        "snapshot-e2e: series={series} readyz_p50_ms={r50:.1} readyz_p99_ms={r99:.1} readyz_max_ms={rmax:.1} \
         export_p50_ms={e50:.1} export_p99_ms={e99:.1} export_max_ms={emax:.1} exports={sent} refused={refused} \
         stop_with_last_snapshot_ms={:.0} size_mib={:.1} restart_to_ready_ms={:.0}",
        stop.as_secs_f64() * 1e3,
        size as f64 / (1 << 20) as f64,
        restore.as_secs_f64() * 1e3,
    );
}

fn main() {
    let sizes = modelgate_e2e::series_counts("SNAPSHOT_SERIES", "100000,1000000");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for series in sizes {
        runtime.block_on(measure(series));
    }
}
