//! The filter's cost per request in the test host, and the `.wasm` size.
//!
//! Run: `scripts/build-wasm && cargo bench -p modelgate-wasm-host --bench filter`.
//! Each figure is the median wall time of one whole request lifecycle
//! (context create, request headers, response headers, log, done, delete)
//! on one thread, which is CPU time here: nothing in it waits. "host floor"
//! is the same lifecycle with an unconfigured plugin (the filter returns at
//! once), i.e. the cost of this host and the ABI crossings themselves; the
//! filter's own share is the difference.

// Helpers may unwrap: a panic in a test is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use modelgate_wasm_host::{
    built_module, built_module_path, GrpcAnswer, Host, HttpAnswer, RequestSpec,
};
use std::time::{Duration, Instant};

const WARMUP: usize = 2_000;
const RUNS: usize = 20_000;

fn median_ns(host: &mut Host, with_calls: bool) -> (u128, u128) {
    let mut times = Vec::with_capacity(RUNS);
    let mut grpc = |_: &_| GrpcAnswer::Ok(Vec::new());
    let mut http = |_: &_| HttpAnswer::Response {
        status: 200,
        headers: vec![],
        body: b"{\"regressions\":[]}".to_vec(),
    };
    let mut tick_total = Duration::ZERO;
    for i in 0..WARMUP + RUNS {
        let spec = RequestSpec::get("/risk-score", Duration::from_millis(2))
            .header("x-lender-id", &format!("lender-{}", i % 1000));
        let started = Instant::now();
        host.request(&spec).expect("request");
        let took = started.elapsed();
        if i >= WARMUP {
            times.push(took.as_nanos());
        }
        if with_calls && i % 100 == 0 {
            // Timer, export encode + dispatch, and the answers: amortized.
            let started = Instant::now();
            host.advance_tick(Duration::from_millis(1000))
                .expect("tick");
            host.pump(&mut grpc, &mut http).expect("pump");
            if i >= WARMUP {
                tick_total += started.elapsed();
            }
        }
        if i % 1000 == 0 {
            host.clear_logs();
        }
    }
    times.sort_unstable();
    (times[times.len() / 2], tick_total.as_nanos() / RUNS as u128)
}

fn main() {
    let wasm = match built_module() {
        Ok(wasm) => wasm,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!(
        "module: {} ({} bytes)",
        built_module_path().display(),
        wasm.len()
    );

    let mut floor = Host::new().expect("host");
    let (floor_ns, _) = median_ns(&mut floor, false);
    println!("host floor (unconfigured plugin):         median {floor_ns} ns/request");

    let mut stamp = Host::new().expect("host");
    assert!(stamp
        .configure(r#"{"service_name":"lending-api","baseline_version":"v1.2","candidate_version":"v1.3","canary_percent":10,"sticky_header":"x-lender-id"}"#)
        .expect("configure"));
    let (stamp_ns, _) = median_ns(&mut stamp, false);
    println!(
        "stamp + time + stats, no export:         median {stamp_ns} ns/request (filter ~{} ns)",
        stamp_ns.saturating_sub(floor_ns)
    );

    let mut export = Host::new().expect("host");
    assert!(export
        .configure(r#"{"service_name":"lending-api","baseline_version":"v1.2","candidate_version":"v1.3","canary_percent":10,"sticky_header":"x-lender-id","collector_cluster":"otlp","query_cluster":"admin","rollback":true}"#)
        .expect("configure"));
    let (export_ns, tick_ns) = median_ns(&mut export, true);
    println!(
        "with export + rollback poll:             median {export_ns} ns/request (filter ~{} ns) + {tick_ns} ns/request amortized for export batches and polls",
        export_ns.saturating_sub(floor_ns)
    );
}
