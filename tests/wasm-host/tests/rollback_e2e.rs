//! End to end: the built edge filter in the test host, its OTLP export sent
//! to a running `modelgate` and its regression poll answered by that
//! collector's admin port. A slow candidate upstream makes the collector
//! fire, the filter rolls the canary back, and new unversioned requests are
//! stamped with the baseline. The time from the first slow request to the
//! rollback is printed.
//!
//! Needs `scripts/build-wasm` and `cargo build --release -p modelgate` first
//! (`scripts/test` does both). Runs on the wall clock, bounded to 30 s.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use modelgate::loadgen::send_raw;
use modelgate_e2e::Collector;
use modelgate_wasm_host::{GrpcAnswer, Host, HttpAnswer, RequestSpec};
use tonic::transport::Channel;

/// The upstream: v1.2 answers in about 100 ms, v1.3 in about 750 ms, as in
/// the lending incident.
fn upstream_latency(version: &str, n: u64) -> Duration {
    let jitter = n % 30;
    match version {
        "v1.3" => Duration::from_millis(730 + jitter),
        _ => Duration::from_millis(90 + jitter),
    }
}

/// Requests per second through the filter.
const RATE: u64 = 100;
/// The longest the test waits for the rollback.
const DEADLINE: Duration = Duration::from_secs(30);

struct InFlight {
    context: u32,
    version: String,
    done_at: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_canary_is_rolled_back_by_the_collectors_verdict() {
    let collector = Collector::start(&[]).await;
    let channel = Channel::from_shared(collector.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut host = Host::new().expect("load the filter (run scripts/build-wasm)");
    // The host's clock follows the wall clock, so span timestamps are real.
    let unix_now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    };
    let follow_the_wall = |host: &mut Host| {
        let host_now = Duration::from_nanos(host.now_nanos());
        if let Some(behind) = unix_now().checked_sub(host_now) {
            host.advance(behind);
        }
    };
    follow_the_wall(&mut host);
    let config = r#"{"service_name":"lending-api","baseline_version":"v1.2",
        "candidate_version":"v1.3","canary_percent":20,"sticky_header":"x-lender-id",
        "collector_cluster":"modelgate_otlp","export_interval_ms":100,
        "query_cluster":"modelgate_admin","poll_interval_ms":100,"poll_timeout_ms":1000,
        "rollback":true,"auto_resume":false}"#;
    assert!(host.configure(config).unwrap(), "{:?}", host.logs());
    let tick = host.tick_period().expect("the filter sets a timer");

    let started = Instant::now();
    let mut next_tick = started + tick;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut sent = 0_u64;
    let mut first_slow: Option<Instant> = None;
    let mut rolled_back: Option<Instant> = None;
    let mut exported = 0_usize;
    let mut polls = 0_usize;
    // Last-seen `(status, body)` of the poll, for the failure message.
    let mut last_poll = (0_u16, String::new());

    while rolled_back.is_none() && started.elapsed() < DEADLINE {
        let now = Instant::now();
        follow_the_wall(&mut host);

        // New requests at RATE per second, each from its own lender.
        let due = started.elapsed().as_millis() as u64 * RATE / 1000;
        while sent < due {
            let mut spec = RequestSpec::get(
                if sent.is_multiple_of(2) {
                    "/risk-score"
                } else {
                    "/funding-approve"
                },
                Duration::ZERO,
            );
            spec = spec.header("x-lender-id", &format!("lender-{sent}"));
            let context = host.begin(&spec.headers).unwrap();
            let version = host
                .request_header(context, "x-model-version")
                .expect("the filter stamps a version");
            if version == "v1.3" && first_slow.is_none() {
                first_slow = Some(now);
            }
            in_flight.push_back(InFlight {
                context,
                done_at: now + upstream_latency(&version, sent),
                version,
            });
            sent += 1;
        }

        // Answers whose upstream latency has passed.
        let mut i = 0;
        while i < in_flight.len() {
            if in_flight[i].done_at <= now {
                let request = in_flight.remove(i).unwrap();
                host.respond(request.context, 200, &[], &[]).unwrap();
                let exchange = host.end(request.context).unwrap();
                assert_eq!(
                    exchange.header("x-model-version").as_deref(),
                    Some(request.version.as_str())
                );
            } else {
                i += 1;
            }
        }

        if now >= next_tick {
            host.tick().unwrap();
            next_tick = now + tick;
        }

        // The filter's calls go to the real collector.
        for call in host.take_grpc_calls() {
            assert_eq!(call.cluster, "modelgate_otlp");
            let answer = match send_raw(&channel, call.message.clone(), false).await {
                Ok(body) => {
                    exported += 1;
                    GrpcAnswer::Ok(body)
                }
                Err(status) => {
                    panic!("the collector refused the filter's export: {status}")
                }
            };
            host.answer_grpc(call.token, answer).unwrap();
        }
        for call in host.take_http_calls() {
            assert_eq!(call.cluster, "modelgate_admin");
            let path = call.header(":path").expect("the poll has a path");
            let (status, body) = collector.get(&path).await;
            polls += 1;
            host.answer_http(
                call.token,
                HttpAnswer::Response {
                    status,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: body.clone().into_bytes(),
                },
            )
            .unwrap();
            last_poll = (status, body);
        }

        if host.counter("modelgate.filter.rollbacks") == Some(1) {
            rolled_back = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let first_slow = first_slow.expect("the split sent some traffic to v1.3");
    let Some(rolled_back) = rolled_back else {
        panic!(
            "no rollback within {DEADLINE:?}: {sent} requests, {exported} exports, {polls} polls, last poll {last_poll:?}\nfilter log: {:?}\ncollector log:\n{}",
            host.logs(),
            collector.log()
        );
    };
    let time_to_rollback = rolled_back - first_slow;
    println!(
        "time from the first slow request to the rollback: {:.2} s ({sent} requests, {exported} exports, {polls} polls)",
        time_to_rollback.as_secs_f64()
    );
    assert!(host.logged("rollback: v1.3 regressed"), "{:?}", host.logs());
    assert!(
        last_poll.1.contains("v1.3") && last_poll.1.contains("FIRING"),
        "the poll that caused the rollback names the firing candidate: {last_poll:?}"
    );

    // After the rollback, every new unversioned request goes to the baseline
    // (requests in flight finish on the version they were stamped with).
    for n in 0..200 {
        let spec = RequestSpec::get("/risk-score", Duration::from_millis(100))
            .header("x-lender-id", &format!("late-lender-{n}"));
        let exchange = host.request(&spec).unwrap();
        assert_eq!(exchange.header("x-model-version").as_deref(), Some("v1.2"));
    }
    assert_eq!(host.counter("modelgate.filter.rollbacks"), Some(1));
}
