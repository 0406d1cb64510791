//! `/metrics` size and time by series count: the release collector fed
//! 1,000, 10,000 and 100,000 series ([`Fleet`]: 100 services, baseline and
//! candidate per endpoint, every series with all three outcomes, the
//! candidates judged), scraped as Prometheus scrapes (gzip asked), under
//! each `emit.prometheus` setting side by side in one run.
//!
//! For each: sample lines, bytes as text and as sent (gzip), and the time
//! of a scrape that makes a fresh page (one per `admin.metrics_interval`)
//! when every series took requests since the last page, when one service
//! in 100 did (the "busy few, idle many" shape) and when none did, and of
//! one served from the shared page; while each fresh page is made a probe
//! asks `/readyz` back to back (it waits for a turn of the pipeline task):
//! its longest answer is the longest ingest pause the page caused.
//!
//! `cargo build --release -p modelgate && cargo bench -p modelgate-e2e --bench scrape`
//! (`SCRAPE_SERIES=1000,10000` to run fewer sizes; `SCRAPE_OUTCOMES=1` for
//! series that only ever succeed, instead of the worst case of all three
//! outcomes on every series; `SCRAPE_SETTINGS=defaults` for fewer
//! settings, by the first word of their name). A/B in one run:
//! `SCRAPE_BEFORE=/path/to/old/modelgate` runs every setting on that build
//! too, before this one.

// Bench code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use modelgate_e2e::fleet::Fleet;
use modelgate_e2e::{eventually, metric, Collector};

/// Scrapes of a fresh page per run (the median is printed).
const SCRAPES: usize = 3;

struct Setting {
    name: &'static str,
    env: &'static [(&'static str, &'static str)],
}

const SETTINGS: [Setting; 4] = [
    Setting {
        name: "before (split, verdicts: all)",
        env: &[("MODELGATE_EMIT__PROMETHEUS__VERDICTS", "all")],
    },
    Setting {
        name: "defaults (split, verdicts: current)",
        env: &[],
    },
    Setting {
        name: "outcomes: merged",
        env: &[("MODELGATE_EMIT__PROMETHEUS__OUTCOMES", "merged")],
    },
    Setting {
        name: "merged + 6 buckets",
        env: &[
            ("MODELGATE_EMIT__PROMETHEUS__OUTCOMES", "merged"),
            (
                "MODELGATE_EMIT__HISTOGRAM_BUCKETS_MS",
                "[25, 50, 100, 250, 1000, 5000]",
            ),
        ],
    },
];

struct Scrape {
    lines: usize,
    text: usize,
    gzip: usize,
    /// Fresh page, every series changed since the last one.
    everything: Fresh,
    /// Fresh page, one service in 100 changed (median of [`SCRAPES`]).
    few: Fresh,
    /// Fresh page, nothing changed (median of [`SCRAPES`]).
    idle: Fresh,
    cached: Duration,
    omitted: f64,
}

/// A scrape of a fresh page: its time and the longest the pipeline task
/// kept the probe waiting meanwhile.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Fresh {
    time: Duration,
    stall: Duration,
}

async fn get_gzip(collector: &Collector, client: &reqwest::Client) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let response = client
        .get(collector.admin_url("/metrics"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let body = response.bytes().await.unwrap().to_vec();
    (body, start.elapsed())
}

/// A scrape past `admin.metrics_interval` (a fresh page), `/readyz` asked
/// back to back meanwhile.
async fn fresh(collector: &Collector, client: &reqwest::Client) -> (Vec<u8>, Fresh) {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let done = AtomicBool::new(false);
    let scrape = async {
        let got = get_gzip(collector, client).await;
        done.store(true, Ordering::Relaxed);
        got
    };
    // `/readyz` answers 503 after waiting 2 s for the pipeline task: a
    // stall is from the start of the first answer that was not a ready
    // one to the end of the next ready one.
    let probe = async {
        let mut stall = Duration::ZERO;
        let mut waiting: Option<Instant> = None;
        while !done.load(Ordering::Relaxed) {
            let started = Instant::now();
            let ready = client
                .get(collector.admin_url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            let since = *waiting.get_or_insert(started);
            if ready {
                stall = stall.max(since.elapsed());
                waiting = None;
            }
        }
        stall.max(waiting.map_or(Duration::ZERO, |since| since.elapsed()))
    };
    let ((body, time), stall) = tokio::join!(scrape, probe);
    (body, Fresh { time, stall })
}

fn median(mut runs: Vec<Fresh>) -> Fresh {
    runs.sort();
    runs[runs.len() / 2]
}

async fn measure(
    program: Option<&Path>,
    series: usize,
    outcomes: usize,
    setting: &Setting,
) -> Scrape {
    // Room for every series, and for 1,000,000 (5,000 endpoints a
    // service) without the endpoint cap's overflow.
    let max_series = (2 * series).max(200_000).to_string();
    let max_endpoints = (series / 200 + 10).max(500).to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("MODELGATE_AGGREGATE__MAX_SERIES", &max_series),
        (
            "MODELGATE_EXTRACT__ENDPOINTS__MAX_PER_SERVICE",
            &max_endpoints,
        ),
        ("MODELGATE_ADMIN__METRICS_MAX_BYTES", "2147483648"),
        ("MODELGATE_ADMIN__METRICS_INTERVAL", "1s"),
        // Judging 50,000 candidates every second keeps the pipeline task
        // from taking in the next 300,000 spans for minutes on this
        // machine; the page's size does not depend on how often they are
        // judged.
        ("MODELGATE_JUDGE__EVALUATION_INTERVAL", "5s"),
    ];
    env.extend_from_slice(setting.env);
    let collector = match program {
        Some(program) => Collector::start_program(program, &env).await,
        None => Collector::start(&env).await,
    };
    let fleet = Fleet {
        services: 100,
        endpoints: series / 200,
        per_series: 3,
        outcomes,
    };
    assert_eq!(fleet.series(), series);
    fleet
        .feed(&collector, 0..2, Duration::from_millis(1100))
        .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let last = std::sync::Mutex::new(String::new());
    eventually(Duration::from_secs(120), || async {
        let text = gunzip(&get_gzip(&collector, &client).await.0);
        let active = metric(&text, "modelgate_series_active", &[]) == Some(series as f64);
        *last.lock().unwrap() = text
            .lines()
            .filter(|l| {
                !l.starts_with('#') && l.starts_with("modelgate_") && !l.contains('{')
                    || l.contains("reason=")
            })
            .collect::<Vec<_>>()
            .join("\n");
        active.then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "{series} series not active; self-telemetry:\n{}\nlog:\n{}",
            last.lock().unwrap(),
            collector.log()
        )
    });
    // Two evaluation ticks: every candidate judged.
    tokio::time::sleep(Duration::from_secs(11)).await;

    let mut idle = Vec::new();
    let mut cached = Vec::new();
    let mut body = Vec::new();
    for _ in 0..SCRAPES {
        let (b, f) = fresh(&collector, &client).await;
        idle.push(f);
        body = b;
        cached.push(get_gzip(&collector, &client).await.1);
    }
    // One service of 100 (svc-000) takes a round: 1% of the series.
    let busy = Fleet {
        services: 1,
        ..fleet
    };
    let mut few = Vec::new();
    for round in 2..2 + SCRAPES as u64 {
        busy.feed(&collector, round..round + 1, Duration::from_millis(1))
            .await;
        few.push(fresh(&collector, &client).await.1);
    }
    let round = 2 + SCRAPES as u64;
    fleet
        .feed(&collector, round..round + 1, Duration::from_millis(1))
        .await;
    let everything = fresh(&collector, &client).await.1;
    cached.sort();
    let text = gunzip(&body);
    let omitted = metric(&text, "modelgate_metrics_omitted_total", &[]).unwrap_or(0.0);
    let lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    collector.stop().await;
    Scrape {
        lines,
        text: text.len(),
        gzip: body.len(),
        everything,
        few: median(few),
        idle: median(idle),
        cached: cached[SCRAPES / 2],
        omitted,
    }
}

fn gunzip(body: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(body)
        .read_to_string(&mut text)
        .unwrap();
    text
}

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let sizes = modelgate_e2e::series_counts("SCRAPE_SERIES", "1000,10000,100000");
    let outcomes: usize = std::env::var("SCRAPE_OUTCOMES")
        .map_or(3, |s| s.parse().expect("SCRAPE_OUTCOMES: 1, 2 or 3"));
    let chosen: Option<Vec<String>> = std::env::var("SCRAPE_SETTINGS")
        .ok()
        .map(|s| s.split(',').map(str::to_owned).collect());
    let settings: Vec<&Setting> = SETTINGS
        .iter()
        .filter(|s| {
            chosen.as_ref().is_none_or(|c| {
                c.iter()
                    .any(|c| s.name.split([' ', ':']).next() == Some(c.as_str()))
            })
        })
        .collect();
    assert!(
        !settings.is_empty(),
        "SCRAPE_SETTINGS: before, defaults, outcomes, merged"
    );
    let before = std::env::var_os("SCRAPE_BEFORE").map(PathBuf::from);
    let builds: Vec<(&str, Option<&Path>)> = match &before {
        Some(path) => vec![("before", Some(path.as_path())), ("this", None)],
        None => vec![("this", None)],
    };
    println!("every series with {outcomes} outcome(s)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("| series | build | setting | Prometheus series (lines) | per modelgate series | text | sent (gzip) | fresh page, every series changed | fresh page, 1% changed | fresh page, none changed | shared page | longest pipeline hold: every / 1% / none |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for series in sizes {
        for setting in &settings {
            for (build, program) in &builds {
                let s = runtime.block_on(measure(*program, series, outcomes, setting));
                println!(
                    "| {series} | {build} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} / {} / {} |{}",
                    setting.name,
                    s.lines,
                    s.lines as f64 / series as f64,
                    mib(s.text),
                    mib(s.gzip),
                    ms(s.everything.time),
                    ms(s.few.time),
                    ms(s.idle.time),
                    ms(s.cached),
                    ms(s.everything.stall),
                    ms(s.few.stall),
                    ms(s.idle.stall),
                    if s.omitted > 0.0 {
                        format!(
                            " {} histograms omitted (admin.metrics_max_bytes)",
                            s.omitted
                        )
                    } else {
                        String::new()
                    },
                );
            }
        }
    }
}
