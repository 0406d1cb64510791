//! evaluation-bench: what an evaluation tick costs and how long it holds
//! the pipeline task, at 100,000 and 1,000,000 series.
//!
//! One [`State`] (the pipeline task's: aggregator, judge, history), filled
//! with services of 10 endpoints x 2 versions (`v1` the baseline, `v2` a
//! candidate, so every candidate has its judgements), one request a series
//! (`--requests N`: N; at 10 every rule has enough to test, and a series
//! costs some 100 times more to judge), then driven on a simulated clock
//! one tick a second, 1% of the services taking a request on each series
//! before each tick. Two ways, A/B in one run on the same
//! state:
//!
//! - **full**: [`State::evaluate`] every tick, every service in one call:
//!   how the collector evaluated before, its whole duration a pause of
//!   ingest;
//! - **incremental**: what the task does now, [`State::begin`] then
//!   [`State::judge_slice`] with the task's budget ([`SLICE_SERIES`] series,
//!   [`SLICE_TIME`]) until the round ends; the longest of those calls is
//!   the longest pause of ingest.
//!
//! Each runs 12 ticks (one of them opens a slot: every service is judged
//! then). Times are wall-clock of this one thread, which does nothing else;
//! on a machine shared with other work a slice's wall time also holds the
//! time the thread waited for a core, so the longest slice is given in
//! this thread's CPU time too (`/proc/thread-self/schedstat`).
//!
//! Run: `cargo bench -p modelgate-collector --bench evaluation-bench`
//! (`-- 100000` for one size, `-- --requests 10` for the heavier shape). Prints a table and a line per size:
//! `evaluation-bench: series=N full_ms_per_tick=.. full_longest_pause_ms=..
//! incremental_ms_per_tick=.. incremental_slot_tick_ms=.. incremental_longest_pause_ms=..`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use modelgate_collector::config::Config;
use modelgate_collector::extract::{EndpointKey, Outcome, Sample};
use modelgate_collector::pipeline::{State, SLICE_SERIES, SLICE_TIME};
use modelgate_collector::telemetry::Telemetry;

/// A multiple of the default 10 s slot.
const T0: u64 = 1_763_658_000_000;
const ENDPOINTS: usize = 10;
const VERSIONS: [&str; 2] = ["v1", "v2"];
const TICKS: u64 = 12;
/// Services of every hundred that take requests before a tick.
const BUSY_PERCENT: usize = 1;

fn requests(service: usize, n: usize, now: u64) -> Vec<Sample> {
    let mut out = Vec::with_capacity(ENDPOINTS * VERSIONS.len() * n);
    for e in 0..ENDPOINTS {
        for (v, version) in VERSIONS.iter().enumerate() {
            let key = EndpointKey {
                service: format!("svc-{service:06}"),
                endpoint: format!("/e{e}"),
                dims: Vec::new(),
                phase: modelgate_collector::phase::Phase::Request,
                input: None,
            };
            for i in 0..n {
                let ms = 40.0 + ((service + e * 7 + v * 3 + i) % 40) as f64;
                out.push(Sample::request(
                    key.clone(),
                    version,
                    Duration::from_secs_f64(ms / 1e3),
                    Outcome::Ok,
                    now,
                ));
            }
        }
    }
    out
}

struct Figures {
    ms_per_tick: f64,
    slot_tick_ms: f64,
    longest_pause_ms: f64,
    longest_pause_cpu_ms: f64,
    services_per_tick: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// This thread's CPU time so far, ms (Linux).
fn cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e6)
}

/// `TICKS` ticks from `start` (a second past a slot boundary), each after
/// 1% of the services took a request per series; `incremental` or full.
fn run(state: &mut State, services: usize, start: u64, incremental: bool) -> Figures {
    let (mut total, mut slot_tick, mut longest) = (0.0, 0.0_f64, 0.0_f64);
    let mut longest_cpu = 0.0_f64;
    let mut judged = 0;
    let busy = (services * BUSY_PERCENT / 100).max(1);
    for k in 0..TICKS {
        let now = start + k * 1_000;
        for b in 0..busy {
            let service = (k as usize * busy + b * 97) % services;
            state.record(&requests(service, 1, now - 500), now - 500);
        }
        let mut tick = 0.0;
        if incremental {
            let started = Instant::now();
            state.begin(now, false);
            let took = ms(started.elapsed());
            tick += took;
            longest = longest.max(took);
            while state.evaluating() {
                let cpu = cpu_ms();
                let started = Instant::now();
                judged += state
                    .judge_slice(|series| series < SLICE_SERIES && started.elapsed() < SLICE_TIME);
                let took = ms(started.elapsed());
                tick += took;
                longest = longest.max(took);
                longest_cpu = longest_cpu.max(cpu_ms() - cpu);
            }
        } else {
            let cpu = cpu_ms();
            let started = Instant::now();
            state.evaluate(now);
            tick = ms(started.elapsed());
            longest = longest.max(tick);
            longest_cpu = longest_cpu.max(cpu_ms() - cpu);
            judged += services;
        }
        total += tick;
        if now.is_multiple_of(10_000) {
            slot_tick = slot_tick.max(tick);
        }
    }
    Figures {
        ms_per_tick: total / TICKS as f64,
        slot_tick_ms: slot_tick,
        longest_pause_ms: longest,
        longest_pause_cpu_ms: longest_cpu,
        services_per_tick: judged as f64 / TICKS as f64,
    }
}

fn size(series: usize, requests_per_series: usize) {
    let config = Config::from_yaml(
        "aggregate:\n  max_series: 2000000\n  service_share: 1\nadmin:\n  history_series: 1000\n",
    )
    .unwrap();
    let mut state = State::new(&config, Arc::new(Telemetry::default()), None);
    let per_service = ENDPOINTS * VERSIONS.len();
    let services = series / per_service;
    let filled = Instant::now();
    // A minute before the run.
    for s in 0..services {
        state.record(&requests(s, requests_per_series, T0 - 60_000), T0 - 60_000);
    }
    state.evaluate(T0 - 59_000);
    let fill_s = filled.elapsed().as_secs_f64();
    assert_eq!(state.aggregator.series_count(), services * per_service);
    let judgements = state.judge.judgements().count();
    let full = run(&mut state, services, T0 + 1_000, false);
    let incremental = run(&mut state, services, T0 + 1_000 + TICKS * 1_000, true);
    println!("### {series} series, {requests_per_series} request(s) each ({services} services, {judgements} judgements; filled and judged once in {fill_s:.1} s)");
    println!();
    println!("| per tick | evaluation ms (mean of {TICKS} ticks) | at a tick opening a slot | longest pause of ingest, ms (wall / CPU) | services judged |");
    println!("|---|---|---|---|---|");
    for (name, f) in [("full (before)", &full), ("incremental", &incremental)] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.2} / {:.2} | {:.0} |",
            f.ms_per_tick,
            f.slot_tick_ms,
            f.longest_pause_ms,
            f.longest_pause_cpu_ms,
            f.services_per_tick
        );
    }
    println!();
    println!(
        "evaluation-bench: series={series} requests_per_series={requests_per_series} full_ms_per_tick={:.1} full_longest_pause_ms={:.1} incremental_ms_per_tick={:.1} incremental_slot_tick_ms={:.1} incremental_longest_pause_ms={:.2} incremental_longest_pause_cpu_ms={:.2}",
        full.ms_per_tick,
        full.longest_pause_ms,
        incremental.ms_per_tick,
        incremental.slot_tick_ms,
        incremental.longest_pause_ms,
        incremental.longest_pause_cpu_ms
    );
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let requests = args
        .iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let sizes: Vec<usize> = args
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 0 || args[i - 1] != "--requests")
        .filter_map(|(_, a)| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100_000, 1_000_000]
    } else {
        sizes
    };
    for series in sizes {
        size(series, requests);
    }
}
