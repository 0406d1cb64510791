//! End to end: a proxy of several workers (one VM each, sharing shared
//! data) runs the built edge filter; its OTLP/HTTP export (gzip) goes to a
//! running `modelgate`'s OTLP/HTTP port and its poll (with `If-None-Match`)
//! to that collector's admin port. A slow candidate upstream makes the
//! collector fire, one worker's poll sees it, and every worker moves new
//! unversioned requests to the baseline.
//!
//! Printed: from the first slow response to the alert firing (the
//! collector's hold), from the alert firing (seen on the collector's
//! `WatchAlerts` stream) to the decision and to the last worker's switch,
//! and from the first slow response to every worker rolled back. The
//! filter runs with its default intervals (export 1 s, poll 250 ms). This
//! harness drives the workers from one loop, so a follower's switch is
//! timed when the loop reaches its tick; what is asserted is that each
//! switches at its first tick after the decision.
//!
//! Needs `scripts/build-wasm` and `cargo build --release -p modelgate` first
//! (`scripts/test` does both). Runs on the wall clock, bounded to 30 s.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{follow_the_wall, pump};
use modelgate_e2e::Collector;
use modelgate_proto::v1 as pb;
use modelgate_wasm_host::{Host, Proxy, RequestSpec};

/// The upstream: v1.2 answers in about 100 ms, v1.3 in about 750 ms, as in
/// the lending incident.
fn upstream_latency(version: &str, n: u64) -> Duration {
    let jitter = n % 30;
    match version {
        "v1.3" => Duration::from_millis(730 + jitter),
        _ => Duration::from_millis(90 + jitter),
    }
}

/// Workers of the proxy (Envoy's `--concurrency`, nginx's `worker_processes`).
const WORKERS: usize = 4;
/// Requests per second through the proxy, spread over the workers.
const RATE: u64 = 200;
/// The longest the test waits for every worker to roll back.
const DEADLINE: Duration = Duration::from_secs(30);

/// The filter's defaults for the export and the poll (1 s, 250 ms): the
/// figures printed are what a user gets.
const CONFIG: &str = r#"{"service_name":"lending-api","baseline_version":"v1.2",
    "candidate_version":"v1.3","canary_percent":20,"sticky_header":"x-lender-id",
    "collector_cluster":"modelgate_otlp","export_protocol":"http",
    "query_cluster":"modelgate_admin","rollback":true,"auto_resume":false}"#;

struct InFlight {
    worker: usize,
    context: u32,
    version: String,
    done_at: Instant,
}

/// One worker and what the test saw of it.
struct Worker {
    host: Host,
    next_tick: Instant,
    polls: usize,
    switched: Option<Instant>,
}

/// The proxy under load, and what the test saw.
struct Run {
    started: Instant,
    workers: Vec<Worker>,
    tick: Duration,
    in_flight: Vec<InFlight>,
    sent: u64,
    first_slow: Option<Instant>,
    exports: usize,
    gzipped: usize,
    not_modified: usize,
    /// When the decision was taken, and by which worker.
    decision: Option<(Instant, usize)>,
    last_poll: String,
}

impl Run {
    fn new(proxy: &Proxy) -> Self {
        let started = Instant::now();
        let workers: Vec<Worker> = (0..WORKERS)
            .map(|n| {
                let mut host = proxy
                    .worker()
                    .expect("load the filter (run scripts/build-wasm)");
                follow_the_wall(&mut host);
                assert!(host.configure(CONFIG).unwrap(), "{:?}", host.logs());
                let period = host.tick_period().expect("the filter sets a timer");
                // Workers' timers are not aligned: spread them over one period.
                let phase = period * u32::try_from(n).unwrap() / u32::try_from(WORKERS).unwrap();
                Worker {
                    host,
                    next_tick: started + phase,
                    polls: 0,
                    switched: None,
                }
            })
            .collect();
        let tick = workers[0].host.tick_period().unwrap();
        Self {
            started,
            workers,
            tick,
            in_flight: Vec::new(),
            sent: 0,
            first_slow: None,
            exports: 0,
            gzipped: 0,
            not_modified: 0,
            decision: None,
            last_poll: String::new(),
        }
    }

    /// New requests at RATE per second, each from its own lender, round robin.
    fn send_due(&mut self, now: Instant) {
        let due = self.started.elapsed().as_millis() as u64 * RATE / 1000;
        while self.sent < due {
            let path = if self.sent.is_multiple_of(2) {
                "/risk-score"
            } else {
                "/funding-approve"
            };
            let spec = RequestSpec::get(path, Duration::ZERO)
                .header("x-lender-id", &format!("lender-{}", self.sent));
            let worker = usize::try_from(self.sent).unwrap() % WORKERS;
            let host = &mut self.workers[worker].host;
            follow_the_wall(host);
            let context = host.begin(&spec.headers).unwrap();
            let version = host.request_header(context, "x-model-version").unwrap();
            self.in_flight.push(InFlight {
                worker,
                context,
                done_at: now + upstream_latency(&version, self.sent),
                version,
            });
            self.sent += 1;
        }
    }

    /// Answers whose upstream latency has passed.
    fn answer_due(&mut self, now: Instant) {
        let (done, waiting) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|r| r.done_at <= now);
        self.in_flight = waiting;
        for request in done {
            if request.version == "v1.3" {
                self.first_slow.get_or_insert(now);
            }
            let host = &mut self.workers[request.worker].host;
            follow_the_wall(host);
            host.respond(request.context, 200, &[], &[]).unwrap();
            let exchange = host.end(request.context).unwrap();
            assert_eq!(exchange.header("x-model-version"), Some(request.version));
        }
    }

    /// Fires the timers that are due; the filter's calls go to the collector.
    async fn tick_due(&mut self, now: Instant, collector: &Collector) {
        for n in 0..WORKERS {
            let worker = &mut self.workers[n];
            if now < worker.next_tick {
                continue;
            }
            worker.next_tick = now + self.tick;
            follow_the_wall(&mut worker.host);
            worker.host.tick().unwrap();
            for seen in pump(collector, &mut worker.host).await {
                if seen.poll {
                    worker.polls += 1;
                    self.not_modified += usize::from(seen.status == 304);
                    if seen.status == 200 {
                        self.last_poll = String::from_utf8_lossy(&seen.body).into_owned();
                    }
                } else {
                    assert_eq!(seen.status, 200, "{}", String::from_utf8_lossy(&seen.body));
                    self.exports += 1;
                    self.gzipped += usize::from(seen.gzipped);
                }
            }
            let host = &worker.host;
            if worker.switched.is_none() && host.logged("rollback: v1.3 regressed") {
                worker.switched = Some(Instant::now());
                self.decision = Some((Instant::now(), n));
            } else if worker.switched.is_none() && host.logged("v1.3 rolled back") {
                worker.switched = Some(Instant::now());
            }
            // Every worker follows the decision at its first tick after it.
            assert!(
                self.decision.is_none() || worker.switched.is_some(),
                "worker {n} ticked after the decision and did not switch: {:?}",
                host.logs()
            );
        }
    }
}

/// When the collector's `WatchAlerts` stream first said v1.3 fires.
async fn watch_for_the_alert(collector: &Collector) -> Arc<Mutex<Option<Instant>>> {
    let fired = Arc::new(Mutex::new(None));
    let channel = collector.grpc_channel().await.unwrap();
    let mut stream = pb::query_client::QueryClient::new(channel)
        .watch_alerts(pb::WatchAlertsRequest {
            service: "lending-api".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let seen = fired.clone();
    tokio::spawn(async move {
        while let Ok(Some(event)) = stream.message().await {
            let firing = event.regression.is_some_and(|r| {
                r.candidate_version == "v1.3" && r.state == pb::AlertState::Firing as i32
            });
            if firing {
                seen.lock().unwrap().get_or_insert(Instant::now());
            }
        }
    });
    fired
}

fn millis(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_canary_is_rolled_back_by_every_worker_of_the_proxy() {
    let collector = Collector::start(&[]).await;
    let alert = watch_for_the_alert(&collector).await;
    let proxy = Proxy::new();
    let mut run = Run::new(&proxy);
    while run.workers.iter().any(|w| w.switched.is_none()) && run.started.elapsed() < DEADLINE {
        let now = Instant::now();
        run.send_due(now);
        run.answer_due(now);
        run.tick_due(now, &collector).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let Some((decided, decider)) = run.decision else {
        let logs: Vec<_> = run.workers.iter().map(|w| w.host.logs().to_vec()).collect();
        panic!(
            "no rollback within {DEADLINE:?}: {} requests, {} exports, last poll {}\nfilter logs: {logs:?}\ncollector log:\n{}",
            run.sent, run.exports, run.last_poll, collector.log()
        );
    };
    let switches: Vec<Instant> = run.workers.iter().filter_map(|w| w.switched).collect();
    assert_eq!(switches.len(), WORKERS, "every worker rolled back");
    let last_switch = switches.iter().max().copied().unwrap();
    let first_slow = run.first_slow.expect("the split sent some traffic to v1.3");
    let fired = alert
        .lock()
        .unwrap()
        .expect("the collector's stream saw v1.3 fire");
    let polls: usize = run.workers.iter().map(|w| w.polls).sum();
    println!(
        "{WORKERS} workers, {} requests, {} OTLP/HTTP exports ({} gzipped), {polls} polls ({} answered 304), tick {} ms",
        run.sent, run.exports, run.gzipped, run.not_modified, run.tick.as_millis()
    );
    println!(
        "first slow response -> alert firing:          {}",
        millis(fired - first_slow)
    );
    println!(
        "alert firing -> decision (one worker's poll): {}",
        millis(decided.saturating_duration_since(fired))
    );
    println!(
        "alert firing -> every worker rolled back:     {} (each at its next tick: at most {} after the decision)",
        millis(last_switch.saturating_duration_since(fired)),
        millis(run.tick)
    );
    println!(
        "first slow response -> every worker:          {}",
        millis(last_switch - first_slow)
    );

    // One poll per proxy: only the worker holding the poll asked.
    let polling: Vec<usize> = (0..WORKERS).filter(|n| run.workers[*n].polls > 0).collect();
    assert_eq!(polling, [decider], "one worker polls for the proxy");
    assert!(
        run.not_modified > 0,
        "a quiet collector answers the poll 304"
    );
    assert!(run.gzipped > 0, "batches went gzipped");
    assert!(
        run.last_poll.contains("v1.3") && run.last_poll.contains("FIRING"),
        "{}",
        run.last_poll
    );
    let rollbacks: u64 = run
        .workers
        .iter()
        .map(|w| w.host.counter("modelgate.filter.rollbacks").unwrap_or(0))
        .sum();
    assert_eq!(rollbacks, 1, "one decision for the proxy");

    // After the rollback, every worker sends new unversioned requests to
    // the baseline (requests in flight finish on the version they had).
    for (n, worker) in run.workers.iter_mut().enumerate() {
        for k in 0..50 {
            let spec = RequestSpec::get("/risk-score", Duration::from_millis(100))
                .header("x-lender-id", &format!("late-lender-{n}-{k}"));
            let exchange = worker.host.request(&spec).unwrap();
            assert_eq!(exchange.header("x-model-version").as_deref(), Some("v1.2"));
        }
    }
}
