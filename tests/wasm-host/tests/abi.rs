//! The whole proxy-wasm ABI 0.2.1 callback surface: every callback is
//! exported with the spec's signature (this fails if one is ever removed),
//! and each is harmless when called for every context, root, request and
//! unknown, as hosts other than Envoy do (ngx_wasm_module calls the body
//! callbacks of every filter and crashed on a missing one).
//!
//! Needs `scripts/build-wasm` first.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use modelgate_wasm_host::{
    built_module, export_signatures, GrpcAnswer, Host, HttpAnswer, RequestSpec, ABI_CALLBACKS,
};
use std::time::Duration;

const CONFIG: &str = r#"{"service_name":"lending-api","baseline_version":"v1.2","candidate_version":"v1.3","canary_percent":50,"sticky_header":"x-lender-id","collector_cluster":"otlp","query_cluster":"admin","rollback":true}"#;

#[test]
fn every_abi_callback_is_exported_with_its_signature() {
    let exported = export_signatures(&built_module().unwrap()).unwrap();
    for callback in ABI_CALLBACKS {
        let found = exported.iter().find(|(name, _)| name == callback.name);
        let Some((_, signature)) = found else {
            panic!("the filter no longer exports {}", callback.name);
        };
        assert_eq!(
            *signature,
            callback.signature(),
            "{} has the wrong signature",
            callback.name
        );
    }
    assert_eq!(ABI_CALLBACKS.len(), 28, "the ABI's callbacks, counted once");
}

/// What a callback answers when it returns something.
fn expected(name: &str, context_is_root: bool) -> Option<i32> {
    match name {
        // Continue: bodies, trailers, headers and TCP data go on.
        "proxy_on_request_headers"
        | "proxy_on_request_body"
        | "proxy_on_request_trailers"
        | "proxy_on_response_headers"
        | "proxy_on_response_body"
        | "proxy_on_response_trailers"
        | "proxy_on_new_connection"
        | "proxy_on_downstream_data"
        | "proxy_on_upstream_data" => Some(0),
        // Done: the host may delete the context. VM started: fine.
        "proxy_on_done" | "proxy_on_vm_start" => Some(1),
        // Only the root context takes a configuration.
        "proxy_on_configure" => Some(i32::from(context_is_root)),
        _ => None,
    }
}

/// The arguments of `name` for `context`: sizes and counts small, a token
/// nobody dispatched.
fn arguments(name: &str, params: usize, context: i32, config_size: i32) -> Vec<i32> {
    let mut args = vec![context; params.min(1)];
    args.extend(std::iter::repeat_n(0, params.saturating_sub(1)));
    match name {
        "proxy_on_configure" => args[1] = config_size,
        "proxy_on_context_create" => args[1] = 0,
        "proxy_on_request_body" | "proxy_on_response_body" => {
            args[1] = 64;
            args[2] = 1;
        }
        "proxy_on_http_call_response" | "proxy_on_grpc_receive" | "proxy_on_grpc_close" => {
            args[1] = 987_654;
        }
        _ => {}
    }
    args
}

/// The callbacks that end a context: called last.
const ENDINGS: [&str; 3] = ["proxy_on_log", "proxy_on_done", "proxy_on_delete"];

#[test]
fn every_callback_is_harmless_for_every_context() {
    let mut host = Host::new().unwrap();
    assert!(host.configure(CONFIG).unwrap(), "{:?}", host.logs());
    let root = i32::try_from(host.root_context()).unwrap();
    let stream = i32::try_from(
        host.begin(&RequestSpec::get("/risk-score", Duration::ZERO).headers)
            .unwrap(),
    )
    .unwrap();
    let unknown = 424_242;
    let config_size = i32::try_from(CONFIG.len()).unwrap();
    for (context, is_root) in [(root, true), (stream, false), (unknown, false)] {
        for callback in ABI_CALLBACKS {
            let name = callback.name;
            let integration = callback.params == 0 || name == "proxy_on_memory_allocate";
            let creates = name == "proxy_on_context_create";
            if integration || creates || ENDINGS.contains(&name) {
                continue;
            }
            let args = arguments(name, callback.params, context, config_size);
            let answer = host
                .call_export(name, &args)
                .unwrap_or_else(|e| panic!("{name} for context {context}: {e}"));
            if let Some(want) = expected(name, is_root) {
                assert_eq!(answer, Some(want), "{name} for context {context}");
            }
        }
    }
    // The allocator hands out memory; the version marker is callable too.
    assert_ne!(
        host.call_export("proxy_on_memory_allocate", &[16]).unwrap(),
        Some(0)
    );
    host.call_export("proxy_abi_version_0_2_1", &[]).unwrap();

    // Nothing broke: the request in flight finishes, stamped and timed, and
    // a new one with body callbacks between its headers passes too.
    host.advance(Duration::from_millis(40));
    host.respond(stream as u32, 200, &[], &[]).unwrap();
    let done = host.end(stream as u32).unwrap();
    assert!(done.header("x-model-version").is_some());
    let next = host
        .begin(&RequestSpec::get("/funding-approve", Duration::ZERO).headers)
        .unwrap();
    for body in ["proxy_on_request_body", "proxy_on_request_trailers"] {
        let args = arguments(
            body,
            if body.ends_with("body") { 3 } else { 2 },
            next as i32,
            0,
        );
        assert_eq!(host.call_export(body, &args).unwrap(), Some(0));
    }
    host.advance(Duration::from_millis(60));
    host.respond(next, 200, &[], &[]).unwrap();
    assert_eq!(
        host.call_export("proxy_on_response_body", &[next as i32, 10, 1])
            .unwrap(),
        Some(0)
    );
    host.end(next).unwrap();
    let latencies = host
        .histogram("modelgate.model_version.v1_2.duration_ms")
        .into_iter()
        .flatten();
    let latencies: Vec<u64> = latencies
        .chain(
            host.histogram("modelgate.model_version.v1_3.duration_ms")
                .into_iter()
                .flatten(),
        )
        .copied()
        .collect();
    assert_eq!(latencies.len(), 2, "{latencies:?}");
    assert!(
        latencies.contains(&40) && latencies.contains(&60),
        "{latencies:?}"
    );
    host.advance(Duration::from_secs(1));
    host.tick().unwrap();
    let exported = host.take_grpc_calls();
    assert_eq!(exported.len(), 1, "the export still goes out");
    host.answer_grpc(exported[0].token, GrpcAnswer::Ok(vec![]))
        .unwrap();
    for call in host.take_http_calls() {
        host.answer_http(call.token, HttpAnswer::Failed).unwrap();
    }
    assert_eq!(host.counter("modelgate.filter.spans_exported"), Some(2));

    // Last, the endings, for every context: the root's deletion included.
    for context in [stream, unknown, root] {
        for name in ENDINGS {
            let answer = host.call_export(name, &[context]).unwrap();
            if name == "proxy_on_done" {
                assert_eq!(answer, Some(1), "{name} for {context}");
            }
        }
    }
    // With its plugin deleted, a request passes untouched (and nothing traps).
    let orphan = host
        .request(&RequestSpec::get("/", Duration::from_millis(1)))
        .unwrap();
    assert_eq!(orphan.header("x-model-version"), None);
}
