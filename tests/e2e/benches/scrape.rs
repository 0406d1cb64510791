//! `/metrics` size and time by series count: the release collector fed
//! 1,000, 10,000 and 100,000 series ([`Fleet`]: 100 services, baseline and
//! candidate per endpoint, every series with all three outcomes, the
//! candidates judged), scraped as Prometheus scrapes (gzip asked), under
//! each `emit.prometheus` setting side by side in one run.
//!
//! For each: sample lines, bytes as text and as sent (gzip), and the time
//! of a scrape that encodes a fresh page (encode + compress; one per
//! `admin.metrics_interval`) and of one served from the shared page.
//!
//! `cargo build --release -p modelgate && cargo bench -p modelgate-e2e --bench scrape`
//! (`SCRAPE_SERIES=1000,10000` to run fewer sizes; `SCRAPE_OUTCOMES=1` for
//! series that only ever succeed, instead of the worst case of all three
//! outcomes on every series).

// Bench code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
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
    fresh: Duration,
    cached: Duration,
    omitted: f64,
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

async fn measure(series: usize, outcomes: usize, setting: &Setting) -> Scrape {
    let mut env: Vec<(&str, &str)> = vec![
        ("MODELGATE_AGGREGATE__MAX_SERIES", "200000"),
        ("MODELGATE_ADMIN__METRICS_MAX_BYTES", "2147483648"),
        ("MODELGATE_ADMIN__METRICS_INTERVAL", "1s"),
        // Judging 50,000 candidates every second keeps the pipeline task
        // from taking in the next 300,000 spans for minutes on this
        // machine; the page's size does not depend on how often they are
        // judged.
        ("MODELGATE_JUDGE__EVALUATION_INTERVAL", "5s"),
    ];
    env.extend_from_slice(setting.env);
    let collector = Collector::start(&env).await;
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

    let mut fresh = Vec::new();
    let mut cached = Vec::new();
    let mut body = Vec::new();
    for _ in 0..SCRAPES {
        // Past admin.metrics_interval: this scrape encodes a new page.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (b, t) = get_gzip(&collector, &client).await;
        fresh.push(t);
        body = b;
        cached.push(get_gzip(&collector, &client).await.1);
    }
    fresh.sort();
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
        fresh: fresh[SCRAPES / 2],
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

fn main() {
    let sizes = modelgate_e2e::series_counts("SCRAPE_SERIES", "1000,10000,100000");
    let outcomes: usize = std::env::var("SCRAPE_OUTCOMES")
        .map_or(3, |s| s.parse().expect("SCRAPE_OUTCOMES: 1, 2 or 3"));
    println!("every series with {outcomes} outcome(s)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("| series | setting | Prometheus series (lines) | per modelgate series | text | sent (gzip) | scrape, fresh page (encode + gzip) | scrape, shared page |");
    println!("|---|---|---|---|---|---|---|---|");
    for series in sizes {
        for setting in &SETTINGS {
            let s = runtime.block_on(measure(series, outcomes, setting));
            println!(
                "| {series} | {} | {} | {:.1} | {} | {} | {:.0} ms | {:.0} ms |{}",
                setting.name,
                s.lines,
                s.lines as f64 / series as f64,
                mib(s.text),
                mib(s.gzip),
                s.fresh.as_secs_f64() * 1e3,
                s.cached.as_secs_f64() * 1e3,
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
