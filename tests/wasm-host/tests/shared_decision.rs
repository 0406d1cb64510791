//! One decision per proxy: several workers (one VM each) of one proxy share
//! the rollback decision and the poll through shared data. One worker
//! polls; every worker follows a decision within one tick; a poll answered
//! `304` changes nothing; a dead poller is replaced when its lease lapses; a
//! rebuilt VM (after a trap) starts from the proxy's decision; a host
//! without shared data makes each worker poll and decide alone.
//!
//! Needs `scripts/build-wasm` first. The clocks are the hosts' manual ones,
//! moved together.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use modelgate_wasm_host::{Host, HostError, HttpAnswer, HttpCall, Proxy, RequestSpec, Status};
use std::time::Duration;

const CONFIG: &str = r#"{"service_name":"lending-api","baseline_version":"v1.2",
  "candidate_version":"v1.3","canary_percent":100,"query_cluster":"modelgate_admin",
  "rollback":true,"poll_interval_ms":1000,"poll_timeout_ms":1000,"resume_after_ms":2000}"#;

const FIRING: &str = r#"{"regressions":[{"service":"lending-api","endpoint":"/risk-score",
  "candidate_version":"v1.3","baseline_version":"v1.2","rule":"sla",
  "state":"ALERT_STATE_FIRING"}]}"#;

const INCONCLUSIVE: &str = r#"{"service":"lending-api","candidate_version":"v1.3",
  "outcome":"VERDICT_OUTCOME_INCONCLUSIVE"}"#;

fn second() -> Duration {
    Duration::from_secs(1)
}

fn worker(proxy: &Proxy) -> Host {
    let mut host = proxy
        .worker()
        .expect("load the filter (run scripts/build-wasm)");
    assert!(host.configure(CONFIG).unwrap(), "{:?}", host.logs());
    host
}

/// Advances every worker's clock by `by` and fires its timer; returns the
/// polls dispatched, with the index of the worker that made each.
fn tick_all(workers: &mut [Host], by: Duration) -> Vec<(usize, HttpCall)> {
    let mut polls = Vec::new();
    for (n, host) in workers.iter_mut().enumerate() {
        host.advance(by);
        host.tick().unwrap();
        polls.extend(host.take_http_calls().into_iter().map(|c| (n, c)));
    }
    polls
}

fn version(host: &mut Host) -> String {
    host.request(&RequestSpec::get("/risk-score", Duration::from_millis(5)))
        .unwrap()
        .header("x-model-version")
        .unwrap()
}

fn answer(body: &str, etag: &str) -> HttpAnswer {
    HttpAnswer::Response {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("etag".into(), etag.into()),
        ],
        body: body.as_bytes().to_vec(),
    }
}

fn not_modified(etag: &str) -> HttpAnswer {
    HttpAnswer::Response {
        status: 304,
        headers: vec![("etag".into(), etag.into())],
        body: Vec::new(),
    }
}

/// The next tick's poll answered "v1.3 fires": this worker rolls back.
fn roll_back(host: &mut Host) {
    host.advance(second());
    host.tick().unwrap();
    let poll = host.take_http_calls().pop().expect("a poll");
    host.answer_http(poll.token, answer(FIRING, "\"f\""))
        .unwrap();
    assert_eq!(version(host), "v1.2");
}

fn rollbacks(workers: &[Host]) -> u64 {
    workers
        .iter()
        .map(|h| h.counter("modelgate.filter.rollbacks").unwrap_or(0))
        .sum()
}

#[test]
fn one_worker_polls_and_every_worker_follows_within_one_tick() {
    let proxy = Proxy::new();
    let mut workers: Vec<Host> = (0..4).map(|_| worker(&proxy)).collect();
    assert!(workers.iter_mut().all(|w| version(w) == "v1.3"));

    // One poll per interval for the whole proxy, always by the same worker.
    let mut pollers = Vec::new();
    for _ in 0..3 {
        let polls = tick_all(&mut workers, second());
        assert_eq!(polls.len(), 1, "one poll per proxy: {polls:?}");
        let (n, call) = &polls[0];
        assert_eq!(
            call.header(":path").as_deref(),
            Some("/api/v1/regressions?service=lending-api&min_severity=critical")
        );
        pollers.push(*n);
        workers[*n]
            .answer_http(call.token, answer("{}", "\"quiet\""))
            .unwrap();
    }
    assert!(pollers.iter().all(|n| *n == pollers[0]), "{pollers:?}");
    let poller = pollers[0];

    // The quiet answer's tag is sent back, and a 304 changes nothing.
    let polls = tick_all(&mut workers, second());
    let (_, call) = &polls[0];
    assert_eq!(call.header("if-none-match").as_deref(), Some("\"quiet\""));
    workers[poller]
        .answer_http(call.token, not_modified("\"quiet\""))
        .unwrap();
    assert!(workers.iter_mut().all(|w| version(w) == "v1.3"));

    // The alert fires: the poller switches at once, every other worker at
    // its next tick, and the proxy counts one rollback.
    let polls = tick_all(&mut workers, second());
    let (_, call) = &polls[0];
    workers[poller]
        .answer_http(call.token, answer(FIRING, "\"firing\""))
        .unwrap();
    assert_eq!(version(&mut workers[poller]), "v1.2");
    for (n, w) in workers.iter_mut().enumerate() {
        if n != poller {
            assert_eq!(version(w), "v1.3", "worker {n} has not ticked yet");
        }
    }
    for w in workers.iter_mut() {
        w.advance(Duration::from_millis(1));
        w.tick().unwrap();
        assert_eq!(version(w), "v1.2", "every worker follows at its next tick");
    }
    assert_eq!(rollbacks(&workers), 1);
    assert!(workers[poller].logged("rollback: v1.3 regressed"));
    assert!(workers[(poller + 1) % 4].logged("following the proxy's decision: v1.3 rolled back"));

    // Rolled back, the poll asks for a verdict (a new question: no tag).
    let polls = tick_all(&mut workers, second());
    assert_eq!(polls.len(), 1);
    let (_, call) = &polls[0];
    assert_eq!(
        call.header(":path").as_deref(),
        Some("/api/v1/verdict?service=lending-api&candidate=v1.3")
    );
    assert_eq!(call.header("if-none-match"), None);
    workers[poller]
        .answer_http(call.token, answer(INCONCLUSIVE, "\"idle\""))
        .unwrap();

    // The poller's VM goes away. Nobody polls until its lease lapses (twice
    // the interval and two timeouts: 6 s), then one worker takes over and
    // carries on with the tag the proxy remembers.
    drop(workers.remove(poller));
    let mut quiet_seconds = 0;
    let takeover = loop {
        let polls = tick_all(&mut workers, second());
        if let Some(poll) = polls.into_iter().next() {
            break poll;
        }
        quiet_seconds += 1;
        assert!(quiet_seconds < 10, "nobody took the poll over");
    };
    assert!(
        (4..=6).contains(&quiet_seconds),
        "{quiet_seconds} s without a poll"
    );
    let (n, call) = takeover;
    assert_eq!(call.header("if-none-match").as_deref(), Some("\"idle\""));
    workers[n]
        .answer_http(call.token, not_modified("\"idle\""))
        .unwrap();
    assert!(workers.iter_mut().all(|w| version(w) == "v1.2"));

    // A VM rebuilt (a trap, a reload) starts from the proxy's decision,
    // before its first tick.
    let mut rebuilt = worker(&proxy);
    assert_eq!(version(&mut rebuilt), "v1.2");
    assert!(
        rebuilt.logged("rolled back: the proxy's decision"),
        "{:?}",
        rebuilt.logs()
    );
    assert_eq!(
        proxy.shared_keys(),
        ["modelgate.rollback.lending-api.v1_3.0"]
    );
}

#[test]
fn a_host_call_that_traps_loses_no_decision() {
    // ngx_wasm_module traps on `proxy_grpc_call` ("not yet implemented").
    let proxy = Proxy::new();
    let grpc_export = CONFIG.replace('}', r#","collector_cluster":"otlp"}"#);
    let mut host = proxy.worker().unwrap();
    assert!(host.configure(&grpc_export).unwrap());
    roll_back(&mut host);
    host.inject_trap("proxy_grpc_call");
    host.advance(second());
    let trapped = host.tick().unwrap_err();
    assert!(
        matches!(
            trapped,
            HostError::Trap {
                call: "proxy_on_tick",
                ..
            }
        ),
        "{trapped}"
    );
    // The host throws the VM away and builds another: the decision stays.
    drop(host);
    let mut rebuilt = proxy.worker().unwrap();
    rebuilt.inject_trap("proxy_grpc_call");
    let http_export = grpc_export.replace(r#""otlp""#, r#""otlp","export_protocol":"http""#);
    assert!(
        rebuilt.configure(&http_export).unwrap(),
        "{:?}",
        rebuilt.logs()
    );
    assert_eq!(version(&mut rebuilt), "v1.2");
    // With the OTLP/HTTP export the host never needs gRPC dispatch.
    for _ in 0..3 {
        rebuilt.advance(second());
        rebuilt.tick().unwrap();
        for call in rebuilt.take_http_calls() {
            let accepted = HttpAnswer::Response {
                status: 200,
                headers: vec![],
                body: Vec::new(),
            };
            rebuilt.answer_http(call.token, accepted).unwrap();
        }
    }
    assert_eq!(rebuilt.call_counts().get("proxy_grpc_call"), None);
    assert_eq!(rebuilt.counter("modelgate.filter.spans_exported"), Some(1));
}

#[test]
fn a_record_the_filter_cannot_read_decides_nothing() {
    let proxy = Proxy::new();
    let mut host = worker(&proxy);
    roll_back(&mut host);
    // Another filter version (or anything else) overwrites the key.
    let key = "modelgate.rollback.lending-api.v1_3.0";
    proxy.set_shared_data(key, b"mg9 something else entirely");
    host.advance(second());
    host.tick().unwrap();
    assert_eq!(version(&mut host), "v1.2", "the decision stays");
    let rewritten = proxy.shared_data(key).unwrap();
    assert!(
        rewritten.starts_with(b"mg1 1 "),
        "{}",
        String::from_utf8_lossy(&rewritten)
    );
}

#[test]
fn without_shared_data_each_worker_polls_and_decides_alone() {
    let proxy = Proxy::new();
    let mut workers: Vec<Host> = (0..3)
        .map(|_| {
            let mut host = proxy.worker().unwrap();
            host.inject_failure("proxy_get_shared_data", Status::Unimplemented);
            assert!(host.configure(CONFIG).unwrap());
            host
        })
        .collect();
    assert!(workers[0].logged("shared data unavailable (Unimplemented)"));
    let polls = tick_all(&mut workers, second());
    let mut by: Vec<usize> = polls.iter().map(|(n, _)| *n).collect();
    by.sort_unstable();
    assert_eq!(by, [0, 1, 2], "each worker polls");
    for (n, call) in polls {
        let body = if n == 0 { FIRING } else { "{}" };
        workers[n]
            .answer_http(call.token, answer(body, "\"x\""))
            .unwrap();
    }
    tick_all(&mut workers, second());
    let versions: Vec<String> = workers.iter_mut().map(version).collect();
    assert_eq!(
        versions,
        ["v1.2", "v1.3", "v1.3"],
        "decisions are per worker"
    );
    assert!(proxy.shared_keys().is_empty());
}
