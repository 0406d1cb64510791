//! The filter's cost per request in the test host, and the `.wasm` size.
//!
//! Run: `scripts/build-wasm && cargo bench -p modelgate-wasm-host --bench filter`.
//! With `MODELGATE_WASM_BASELINE=<other.wasm>` it also runs that module and
//! prints both side by side with their ratio (an A/B in one run: the
//! machine's noise hits both alike); the rounds alternate between the two.
//!
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
use wasmtime::{Engine, Module};

const WARMUP: usize = 2_000;
const RUNS: usize = 20_000;
/// Rounds per case and module; the medians are over all of them.
const ROUNDS: usize = 3;

/// The configurations measured, by name.
const CASES: [(&str, Option<&str>); 4] = [
    ("host floor (unconfigured plugin)", None),
    (
        "stamp + time + stats, no export",
        Some(
            r#"{"service_name":"lending-api","baseline_version":"v1.2","candidate_version":"v1.3","canary_percent":10,"sticky_header":"x-lender-id"}"#,
        ),
    ),
    (
        "with OTLP/gRPC export + rollback poll",
        Some(
            r#"{"service_name":"lending-api","baseline_version":"v1.2","candidate_version":"v1.3","canary_percent":10,"sticky_header":"x-lender-id","collector_cluster":"otlp","query_cluster":"admin","rollback":true}"#,
        ),
    ),
    (
        "with OTLP/HTTP export (gzip) + rollback poll",
        Some(
            r#"{"service_name":"lending-api","baseline_version":"v1.2","candidate_version":"v1.3","canary_percent":10,"sticky_header":"x-lender-id","collector_cluster":"otlp","export_protocol":"http","query_cluster":"admin","rollback":true}"#,
        ),
    ),
];

/// Per-request times of one round, and the amortized cost of the timer's
/// work (export batches, polls) per request.
fn round(host: &mut Host, times: &mut Vec<u128>) -> u128 {
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
        if i % 100 == 0 {
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
    tick_total.as_nanos() / RUNS as u128
}

/// A host running `module` with `config`; `None` when the module refuses
/// it (an older module without the case's fields).
fn host(engine: &Engine, module: &Module, config: Option<&str>) -> Option<Host> {
    let mut host = Host::with_module(engine, module).expect("host");
    match config {
        Some(config) => host.configure(config).expect("configure").then_some(host),
        None => Some(host),
    }
}

fn median(times: &mut [u128]) -> Option<u128> {
    times.sort_unstable();
    times.get(times.len() / 2).copied()
}

fn main() {
    let wasm = match built_module() {
        Ok(wasm) => wasm,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let engine = Engine::default();
    let mut modules = vec![(
        format!("{} ({} bytes)", built_module_path().display(), wasm.len()),
        Module::new(&engine, &wasm).expect("compile"),
    )];
    if let Some(path) = std::env::var_os("MODELGATE_WASM_BASELINE") {
        let other = std::fs::read(&path).expect("read MODELGATE_WASM_BASELINE");
        modules.push((
            format!("{} ({} bytes)", path.to_string_lossy(), other.len()),
            Module::new(&engine, &other).expect("compile the baseline"),
        ));
    }
    for (n, (name, _)) in modules.iter().enumerate() {
        println!("module {}: {name}", ["A", "B"][n]);
    }
    for (case, config) in CASES {
        let mut times = vec![Vec::with_capacity(RUNS * ROUNDS); modules.len()];
        let mut ticks = vec![0u128; modules.len()];
        for _ in 0..ROUNDS {
            for (n, (_, module)) in modules.iter().enumerate() {
                if let Some(mut host) = host(&engine, module, config) {
                    ticks[n] += round(&mut host, &mut times[n]) / ROUNDS as u128;
                }
            }
        }
        let medians: Vec<Option<u128>> = times.iter_mut().map(|t| median(t)).collect();
        let figures: Vec<String> = medians
            .iter()
            .zip(&ticks)
            .map(|(m, t)| match m {
                Some(m) => format!("{m} ns/request + {t} ns amortized"),
                None => "refused (the module lacks this configuration)".to_owned(),
            })
            .collect();
        let ratio = match medians.as_slice() {
            [Some(a), Some(b)] => format!("  A/B {:.3}", *a as f64 / *b as f64),
            _ => String::new(),
        };
        println!("{case:<46} {}{ratio}", figures.join("  |  B: "));
    }
}
