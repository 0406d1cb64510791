//! snapshot-bench: how long a snapshot holds the pipeline task, whole (as
//! before) and in slices (as now), on the same state in one run; how long
//! the file takes to write, how large it is and how long a restart takes
//! to restore it.
//!
//! The state: N series of one version each (every tenth endpoint also has a
//! candidate version), services of 500 endpoints (the endpoint cap), each
//! series fed 4 requests of 40-200 ms; judged once (a baseline per
//! endpoint) and charted once. Each figure is the pipeline task's own work
//! in process: "whole" is one pass over the state in one turn of the task
//! (`snapshot::encode`, which is what the task did before: encode and
//! checksum); "slices" is the `snapshot::Encoder` with the pipeline's
//! budget (`pipeline::SNAPSHOT_SLICE_SERIES`), each slice timed: the
//! endpoints', then the judge's services' (since format 6; before, the
//! judge's whole state was the last slice), and the last one apart (the
//! dashboard's history). "write"
//! is the last snapshot of a shutdown, the writer thread taking slices as
//! they come, fsync and rename included; "restore" is what a start does
//! (read, check, decode, take over).
//!
//! Run: `cargo bench -p modelgate-collector --bench snapshot-bench` (series
//! counts as arguments, default `100000 1000000`). One line per count:
//! `snapshot-bench: series=N ...`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use modelgate_collector::aggregate::{Aggregator, InputLimits};
use modelgate_collector::config::{AdminConfig, AggregateConfig, ExtractConfig, JudgeConfig};
use modelgate_collector::emit::history::{History, HistoryLimits};
use modelgate_collector::extract::{EndpointKey, Outcome, Sample};
use modelgate_collector::judge::Judge;
use modelgate_collector::pipeline::SNAPSHOT_SLICE_SERIES;
use modelgate_collector::snapshot::{self, Encoder, Snapshotter};

const T0: u64 = 1_763_658_000_000;
const ENDPOINTS_PER_SERVICE: usize = 500;

fn aggregator(series: usize) -> Aggregator {
    let config = AggregateConfig {
        max_series: series + series / 5,
        ..AggregateConfig::default()
    };
    let limits = InputLimits {
        max_endpoints_per_service: ENDPOINTS_PER_SERVICE,
        ..InputLimits::of(&ExtractConfig::default())
    };
    Aggregator::new(config, vec![100.0, 250.0, 1000.0], Arc::default(), T0).with_limits(limits)
}

fn history() -> History {
    History::new(HistoryLimits::from_config(&AdminConfig::default()))
}

/// N series as the module docs say, judged and charted once at the time
/// returned.
fn state(series: usize) -> (Aggregator, Judge, History, u64) {
    let mut agg = aggregator(series);
    let mut batch = Vec::with_capacity(5_000);
    let mut made = 0;
    let mut e = 0;
    let t = T0 + 1_000;
    while made < series {
        let endpoint = EndpointKey {
            service: format!("svc-{}", e / ENDPOINTS_PER_SERVICE),
            endpoint: format!("/route/{e}"),
            dims: Vec::new(),
            phase: modelgate_collector::phase::Phase::Request,
            input: None,
        };
        let versions: &[&str] = if e % 10 == 0 && made + 1 < series {
            &["v1", "v2"]
        } else {
            &["v1"]
        };
        for v in versions {
            for i in 0..4u64 {
                let ms = 40 + (e as u64 * 7 + i * 53) % 160;
                batch.push(Sample::request(
                    endpoint.clone(),
                    v,
                    Duration::from_millis(ms),
                    Outcome::Ok,
                    0,
                ));
            }
            made += 1;
        }
        e += 1;
        if batch.len() >= 5_000 {
            agg.record(&batch, t);
            batch.clear();
        }
    }
    agg.record(&batch, t);
    assert_eq!(agg.series_count(), series);
    let mut judge = Judge::new(JudgeConfig::default());
    let transitions = judge.evaluate(&agg, t);
    let mut charts = history();
    charts.record(&agg, &judge, &transitions, 1_000, t);
    (agg, judge, charts, t)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The slices of one snapshot, each timed; the bytes, to check them.
fn sliced(
    agg: &mut Aggregator,
    judge: &Judge,
    charts: &History,
    t: u64,
) -> (Vec<Duration>, Duration, Vec<u8>) {
    let started = Instant::now();
    let (mut encoder, mut body) = Encoder::begin(agg, t).unwrap();
    let mut times = vec![started.elapsed()];
    loop {
        let started = Instant::now();
        let slice = encoder
            .slice(agg, judge, charts, SNAPSHOT_SLICE_SERIES)
            .unwrap();
        let took = started.elapsed();
        body.extend_from_slice(&slice.bytes);
        if slice.last {
            return (times, took, body);
        }
        times.push(took);
    }
}

fn run(series: usize, dir: &Path, runtime: &tokio::runtime::Runtime) {
    let filled = Instant::now();
    let (mut agg, judge, charts, t) = state(series);
    eprintln!(
        "{series} series built in {:.1} s",
        filled.elapsed().as_secs_f64()
    );

    // A then B then A then B: the longest of each.
    let mut whole = Duration::ZERO;
    let mut longest = Duration::ZERO;
    let mut tail = Duration::ZERO;
    let mut p99 = Duration::ZERO;
    let mut slices = 0;
    let mut sliced_total = Duration::ZERO;
    for _ in 0..2 {
        let started = Instant::now();
        let bytes = snapshot::encode(&mut agg, &judge, &charts, t).unwrap();
        whole = whole.max(started.elapsed());
        let (mut times, last, body) = sliced(&mut agg, &judge, &charts, t);
        assert_eq!(
            body[..],
            bytes[bytes.len() - body.len()..],
            "the same payload"
        );
        sliced_total = sliced_total.max(times.iter().sum::<Duration>() + last);
        slices = times.len() + 1;
        tail = tail.max(last);
        times.sort_unstable();
        longest = longest.max(*times.last().unwrap());
        p99 = p99.max(times[(times.len() * 99 / 100).min(times.len() - 1)]);
    }

    // The last snapshot of a shutdown: slices streamed to the writer thread.
    let mut snapshotter = Snapshotter::new(dir.to_owned());
    let started = Instant::now();
    runtime.block_on(snapshotter.finish(None, &mut agg, &judge, &charts, t));
    let write = started.elapsed();
    let size = std::fs::metadata(dir.join(snapshot::FILE_NAME))
        .unwrap()
        .len();
    drop((agg, judge, charts));

    let started = Instant::now();
    let mut agg2 = aggregator(series);
    let mut judge2 = Judge::new(JudgeConfig::default());
    let mut charts2 = history();
    let restored = snapshot::read(dir, u64::MAX)
        .unwrap()
        .unwrap()
        .apply(&mut agg2, &mut judge2, &mut charts2)
        .unwrap();
    let restore = started.elapsed();
    assert_eq!(restored.series, series);

    println!(
        "snapshot-bench: series={series} size_mib={:.1} bytes_per_series={:.0} \
         before_whole_pause_ms={:.1} after_longest_slice_ms={:.2} after_p99_slice_ms={:.2} \
         after_last_slice_ms={:.1} slices={slices} sliced_encode_ms={:.0} \
         shutdown_write_ms={:.0} restore_ms={:.0}",
        size as f64 / (1 << 20) as f64,
        size as f64 / series as f64,
        ms(whole),
        ms(longest),
        ms(p99),
        ms(tail),
        ms(sliced_total),
        ms(write),
        ms(restore),
    );
}

fn main() {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![100_000, 1_000_000]
    } else {
        counts
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    for series in counts {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        run(series, dir.path(), &runtime);
    }
}
