//! The built edge filter in the test host: stamping, the sticky split,
//! timing, stats, the OTLP export over gRPC and HTTP, the token, rollback and
//! resume, fail-open, host failures, memory, and the module's imports.
//!
//! Needs `scripts/build-wasm` first. Every loop is bounded in count; the
//! clock is the host's manual clock.

// Helpers may unwrap: a panic in a test is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use modelgate_wasm_host::{
    built_module, module_exports, module_imports, GrpcAnswer, Host, HttpAnswer, HttpCall,
    RequestSpec, Status, ENVOY_WASI_CALLS,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use std::io::Read;
use std::time::Duration;

const BASE: &str = r#""service_name":"lending-api","baseline_version":"v1.2""#;
const FIRING: &str = r#"{"regressions":[{"service":"lending-api","endpoint":"/risk-score",
  "candidate_version":"v1.3","baseline_version":"v1.2","rule":"sla",
  "state":"ALERT_STATE_FIRING","since_unix_ms":"1763658000000","evidence":{"p95_ms":900}}]}"#;

fn host(extra: &str) -> Host {
    let mut host = Host::new().expect("load the filter (run scripts/build-wasm)");
    let config = if extra.is_empty() {
        format!("{{{BASE}}}")
    } else {
        format!("{{{BASE},{extra}}}")
    };
    assert!(
        host.configure(&config).unwrap(),
        "config refused: {:?}",
        host.logs()
    );
    host
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn get(path: &str) -> RequestSpec {
    RequestSpec::get(path, ms(20))
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

fn str_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key)? {
        Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn decode(message: &[u8]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest::decode(message).expect("payload is an ExportTraceServiceRequest")
}

fn ok_response(body: &str) -> HttpAnswer {
    HttpAnswer::Response {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn stamps_a_request_without_headers() {
    let mut host = host("");
    let ex = host.request(&get("/risk-score")).unwrap();
    let rid = ex.header("x-request-id").expect("request id stamped");
    assert_eq!(rid.len(), 36, "{rid}");
    assert_eq!(&rid[14..15], "4", "UUIDv4: {rid}");
    let tp = ex.header("traceparent").expect("traceparent stamped");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len(), parts[3]),
        ("00", 32, 16, "01")
    );
    assert_eq!(ex.header("x-model-version").as_deref(), Some("v1.2"));
    let other = host.request(&get("/risk-score")).unwrap();
    assert_ne!(other.header("x-request-id"), Some(rid));
    assert_ne!(other.header("traceparent"), Some(tp));
}

#[test]
fn keeps_incoming_headers_and_an_explicit_version() {
    let mut host = host(r#""candidate_version":"v1.3","canary_percent":100"#);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let ex = host
        .request(
            &get("/risk-score")
                .header("x-request-id", "req-1")
                .header("traceparent", tp)
                .header("x-model-version", "v1.1"),
        )
        .unwrap();
    assert_eq!(ex.header("x-request-id").as_deref(), Some("req-1"));
    assert_eq!(ex.header("traceparent").as_deref(), Some(tp));
    assert_eq!(ex.header("x-model-version").as_deref(), Some("v1.1"));
    // An invalid traceparent starts a new trace instead.
    let ex = host
        .request(&get("/").header("traceparent", "00-zz-bad-01"))
        .unwrap();
    assert!(ex.header("traceparent").unwrap().starts_with("00-"));
    assert_ne!(ex.header("traceparent").as_deref(), Some("00-zz-bad-01"));
    // Unversioned with canary 100%: the candidate.
    let ex = host.request(&get("/")).unwrap();
    assert_eq!(ex.header("x-model-version").as_deref(), Some("v1.3"));
}

#[test]
fn sticky_split_is_near_the_weight_and_stable_per_client() {
    let mut host =
        host(r#""candidate_version":"v1.3","canary_percent":20,"sticky_header":"x-lender-id""#);
    let mut first = Vec::with_capacity(10_000);
    for id in 0..10_000 {
        let ex = host
            .request(&get("/risk-score").header("x-lender-id", &format!("lender-{id}")))
            .unwrap();
        first.push(ex.header("x-model-version").unwrap());
    }
    let candidates = first.iter().filter(|v| *v == "v1.3").count();
    let share = candidates as f64 / 100.0;
    println!("candidate share over 10,000 clients: {share:.2}% (configured 20%)");
    assert!((18.0..=22.0).contains(&share), "{share}");
    assert!(first.iter().all(|v| v == "v1.2" || v == "v1.3"));
    for (id, version) in first.iter().enumerate().step_by(7) {
        let ex = host
            .request(&get("/other").header("x-lender-id", &format!("lender-{id}")))
            .unwrap();
        assert_eq!(
            ex.header("x-model-version").as_ref(),
            Some(version),
            "client {id} moved"
        );
    }
}

#[test]
fn latency_comes_from_the_host_clock_or_request_duration() {
    let mut host = host("");
    host.request(&RequestSpec::get("/risk-score", ms(150)))
        .unwrap();
    let duration = 42_000_000i64.to_le_bytes().to_vec();
    host.request(&RequestSpec::get("/risk-score", ms(900)).property("request.duration", duration))
        .unwrap();
    let samples = host
        .histogram("modelgate.model_version.v1_2.duration_ms")
        .unwrap();
    assert_eq!(samples, [150, 42]);
    assert_eq!(
        host.counter("modelgate.model_version.v1_2.requests"),
        Some(2)
    );
}

#[test]
fn stats_are_per_version_defined_once_capped_and_taggable() {
    let mut host = host(r#""max_versions":4"#);
    for round in 0..3 {
        for v in 0..10 {
            host.request(
                &get("/")
                    .header("x-model-version", &format!("m{v}.{round}"))
                    .status(200),
            )
            .unwrap();
            host.request(&get("/").header("x-model-version", "v1.2"))
                .unwrap();
        }
    }
    // The upstream's version header wins over the stamped one.
    host.request(&get("/").response_header("x-model-version", "v1.2"))
        .unwrap();

    let mut names: Vec<&str> = host.metrics().iter().map(|m| m.name.as_str()).collect();
    let total = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), total, "a metric was defined twice: {names:?}");
    let versions: Vec<&str> = names
        .iter()
        .filter_map(|n| {
            n.strip_prefix("modelgate.model_version.")?
                .strip_suffix(".requests")
        })
        .collect();
    assert_eq!(versions.len(), 5, "4 versions + other: {versions:?}");
    assert!(
        versions.contains(&"other") && versions.contains(&"v1_2"),
        "{versions:?}"
    );
    // What an Envoy stats_tags regex `^wasmcustom\.modelgate\.(model_version\.([^.]+)\.)`
    // needs: the version is exactly one dot-free segment.
    for name in &names {
        if let Some(rest) = name.strip_prefix("modelgate.model_version.") {
            let segments: Vec<&str> = rest.split('.').collect();
            assert_eq!(segments.len(), 2, "{name}");
        }
    }
    assert_eq!(
        host.counter("modelgate.model_version.v1_2.requests"),
        Some(31)
    );
    let other = host
        .counter("modelgate.model_version.other.requests")
        .unwrap();
    let own: u64 = versions
        .iter()
        .filter(|v| **v != "other" && **v != "v1_2")
        .map(|v| {
            host.counter(&format!("modelgate.model_version.{v}.requests"))
                .unwrap()
        })
        .sum();
    assert_eq!(other + own, 30);
}

#[test]
fn export_payload_decodes_as_otlp_with_the_collector_attributes() {
    let mut host = host(r#""collector_cluster":"modelgate_otlp","export_interval_ms":1000"#);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let start = host.now_nanos();
    host.request(&RequestSpec::get("/risk-score?lender=7", ms(150)).header("traceparent", tp))
        .unwrap();
    host.request(&RequestSpec::get("/risk-score", ms(5)).status(504))
        .unwrap();
    host.request(
        &RequestSpec::get("/risk-score", ms(5))
            .status(503)
            .response_header("x-model-version", "v9"),
    )
    .unwrap();
    host.advance_tick(ms(1000)).unwrap();
    let calls = host.take_grpc_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.cluster, "modelgate_otlp");
    assert_eq!(
        call.service,
        "opentelemetry.proto.collector.trace.v1.TraceService"
    );
    assert_eq!(call.method, "Export");
    let request = decode(&call.message);
    let rs = &request.resource_spans[0];
    let resource = rs.resource.as_ref().unwrap();
    assert_eq!(
        str_attr(&resource.attributes, "service.name").as_deref(),
        Some("lending-api")
    );
    let spans = &rs.scope_spans[0].spans;
    assert_eq!(spans.len(), 3);

    let ok = &spans[0];
    assert_eq!(ok.kind, 2, "SERVER");
    assert_eq!(hex(&ok.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&ok.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(ok.span_id.len(), 8);
    assert_eq!(ok.start_time_unix_nano, start);
    assert_eq!(ok.end_time_unix_nano - ok.start_time_unix_nano, 150_000_000);
    assert_eq!(
        str_attr(&ok.attributes, "http.route").as_deref(),
        Some("/risk-score")
    );
    assert_eq!(
        str_attr(&ok.attributes, "url.path").as_deref(),
        Some("/risk-score")
    );
    assert_eq!(
        str_attr(&ok.attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        int_attr(&ok.attributes, "http.response.status_code"),
        Some(200)
    );
    assert_eq!(
        str_attr(&ok.attributes, "model.version").as_deref(),
        Some("v1.2")
    );
    assert_eq!(str_attr(&ok.attributes, "error.type"), None);
    assert!(ok.status.is_none());

    let timeout = &spans[1];
    assert!(
        timeout.parent_span_id.is_empty(),
        "no incoming traceparent: a root span"
    );
    assert_eq!(
        str_attr(&timeout.attributes, "error.type").as_deref(),
        Some("timeout")
    );
    assert_eq!(timeout.status.as_ref().unwrap().code, 2, "ERROR");

    let error = &spans[2];
    assert_eq!(
        int_attr(&error.attributes, "http.response.status_code"),
        Some(503)
    );
    assert_eq!(error.status.as_ref().unwrap().code, 2, "ERROR");
    assert_eq!(
        str_attr(&error.attributes, "model.version").as_deref(),
        Some("v9")
    );

    host.answer_grpc(call.token, GrpcAnswer::Ok(Vec::new()))
        .unwrap();
    assert_eq!(host.counter("modelgate.filter.spans_exported"), Some(3));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn export_fails_open_retries_a_bounded_number_of_times_and_stays_bounded() {
    let mut host = host(
        r#""collector_cluster":"otlp","export_max_retries":1,"export_batch_max":10,"export_buffer_max":20,"export_timeout_ms":500"#,
    );
    // Dispatch refused: requests still pass, stamped; the batch is retried once then dropped.
    host.inject_failure("proxy_grpc_call", Status::InternalFailure);
    for _ in 0..5 {
        assert!(host
            .request(&get("/"))
            .unwrap()
            .header("x-model-version")
            .is_some());
    }
    host.advance_tick(ms(1000)).unwrap();
    host.advance_tick(ms(1000)).unwrap();
    assert_eq!(host.counter("modelgate.filter.export_failed"), Some(2));
    assert_eq!(host.counter("modelgate.filter.spans_dropped"), Some(5));
    host.clear_failures();

    // An error status: retried with the same spans, then dropped.
    host.request(&get("/")).unwrap();
    host.advance_tick(ms(1000)).unwrap();
    let first = host.take_grpc_calls();
    host.answer_grpc(first[0].token, GrpcAnswer::Status(14))
        .unwrap();
    host.advance_tick(ms(1000)).unwrap();
    let retry = host.take_grpc_calls();
    assert_eq!(
        retry[0].message, first[0].message,
        "the retry carries the same spans"
    );
    host.answer_grpc(retry[0].token, GrpcAnswer::Status(4))
        .unwrap();
    assert_eq!(host.counter("modelgate.filter.spans_dropped"), Some(6));

    // Never answered: given up after twice the timeout, the next batch goes out.
    host.request(&get("/")).unwrap();
    host.advance_tick(ms(1000)).unwrap();
    assert_eq!(host.take_grpc_calls().len(), 1);
    host.request(&get("/")).unwrap();
    host.advance_tick(ms(1000)).unwrap();
    assert!(host.logged("never answered"), "{:?}", host.logs());
    assert_eq!(host.take_grpc_calls().len(), 1);

    // A full buffer drops the oldest and counts it; batches stay bounded.
    let dropped_before = host.counter("modelgate.filter.spans_dropped").unwrap();
    for _ in 0..50 {
        host.request(&get("/")).unwrap();
    }
    let dropped = host.counter("modelgate.filter.spans_dropped").unwrap() - dropped_before;
    // One span was already queued behind the retried batch: 51 into 20 slots.
    assert_eq!(dropped, 31);
    host.inject_failure("proxy_grpc_call", Status::NotFound);
    host.advance_tick(ms(10_000)).unwrap();
    host.clear_failures();
    host.advance_tick(ms(10_000)).unwrap();
    for call in host.take_grpc_calls() {
        assert!(
            decode(&call.message).resource_spans[0].scope_spans[0]
                .spans
                .len()
                <= 10
        );
    }
    // A late answer to a call given up on is ignored.
    host.answer_grpc(9_999, GrpcAnswer::Ok(vec![])).unwrap();
    host.answer_grpc(9_998, GrpcAnswer::Status(2)).unwrap();
}

/// An OTLP/HTTP export body as protobuf (gunzipped when it says gzip).
fn plain_body(call: &HttpCall) -> Vec<u8> {
    match call.header("content-encoding").as_deref() {
        Some("gzip") => {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(call.body.as_slice())
                .read_to_end(&mut plain)
                .expect("a gzip body a standard decoder reads");
            plain
        }
        None => call.body.clone(),
        Some(other) => panic!("content-encoding {other}"),
    }
}

/// How many spans an OTLP/HTTP export carries.
fn http_export_spans(call: &HttpCall) -> usize {
    decode(&plain_body(call)).resource_spans[0].scope_spans[0]
        .spans
        .len()
}

#[test]
fn the_otlp_http_export_is_protobuf_gzipped_when_it_pays_and_counted() {
    let mut host = host(
        r#""collector_cluster":"127.0.0.1:4318","export_protocol":"http","collector_authority":"collector.local","export_max_retries":1"#,
    );
    // A batch of one span goes out as it is.
    host.request(&get("/risk-score")).unwrap();
    host.advance_tick(ms(1000)).unwrap();
    let calls = host.take_http_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.cluster, "127.0.0.1:4318");
    for (name, value) in [
        (":method", "POST"),
        (":path", "/v1/traces"),
        (":authority", "collector.local"),
        ("content-type", "application/x-protobuf"),
    ] {
        assert_eq!(call.header(name).as_deref(), Some(value), "{name}");
    }
    assert_eq!(call.header("content-encoding"), None);
    assert_eq!(call.header("authorization"), None);
    assert_eq!(http_export_spans(call), 1);
    host.answer_http(call.token, ok_response("")).unwrap();
    assert_eq!(host.counter("modelgate.filter.spans_exported"), Some(1));

    // Fifty spans: gzipped, several times smaller.
    for n in 0..50 {
        host.request(&get(&format!("/risk-score?lender={n}")))
            .unwrap();
    }
    host.advance_tick(ms(1000)).unwrap();
    let first = host.take_http_calls().pop().unwrap();
    assert_eq!(first.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(http_export_spans(&first), 50);
    let plain = plain_body(&first).len();
    assert!(
        first.body.len() * 3 < plain,
        "{} gzipped of {plain}",
        first.body.len()
    );
    // Refused (503): counted and retried with the same body; failed again
    // (no answer at all): dropped and counted, as over gRPC.
    host.answer_http(
        first.token,
        HttpAnswer::Response {
            status: 503,
            headers: vec![],
            body: b"overloaded".to_vec(),
        },
    )
    .unwrap();
    assert!(
        host.logged("export failed with HTTP status 503"),
        "{:?}",
        host.logs()
    );
    host.advance_tick(ms(1000)).unwrap();
    let retry = host.take_http_calls().pop().unwrap();
    assert_eq!(retry.body, first.body);
    host.answer_http(retry.token, HttpAnswer::Failed).unwrap();
    assert_eq!(host.counter("modelgate.filter.export_failed"), Some(2));
    assert_eq!(host.counter("modelgate.filter.spans_dropped"), Some(50));
    assert_eq!(host.call_counts().get("proxy_grpc_call"), None);
}

#[test]
fn the_token_goes_on_the_export_and_the_poll_and_never_into_a_log() {
    const TOKEN: &str = "s3cr3t-Token_0123.abc~+/=";
    let never_logged = |host: &Host| {
        let leaked: Vec<_> = host
            .logs()
            .iter()
            .filter(|l| l.message.contains("s3cr3t"))
            .collect();
        assert!(leaked.is_empty(), "{leaked:?}");
    };
    let with_token = format!(r#"{ROLLBACK},"collector_cluster":"otlp","token":"{TOKEN}""#);
    let mut host = host(&with_token);
    host.request(&get("/")).unwrap();
    host.advance_tick(ms(1000)).unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let grpc = host.take_grpc_calls().pop().unwrap();
    let metadata: Vec<(String, String)> = grpc
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    assert_eq!(metadata, [("authorization".to_owned(), bearer.clone())]);
    let poll = host.take_http_calls().pop().unwrap();
    assert_eq!(poll.header("authorization"), Some(bearer.clone()));
    never_logged(&host);
    // Over OTLP/HTTP, from the VM's environment.
    let mut host = Host::new().unwrap();
    host.set_env("MODELGATE_TOKEN", TOKEN);
    let from_env = format!(
        r#"{{{BASE},"collector_cluster":"otlp","export_protocol":"http","token_env":"MODELGATE_TOKEN"}}"#
    );
    assert!(host.configure(&from_env).unwrap(), "{:?}", host.logs());
    host.request(&get("/")).unwrap();
    host.advance_tick(ms(1000)).unwrap();
    let export = host.take_http_calls().pop().unwrap();
    assert_eq!(export.header("authorization"), Some(bearer));
    never_logged(&host);
    // Missing or malformed: refused, naming the field, never showing it.
    let mut host = Host::new().unwrap();
    assert!(!host.configure(&from_env).unwrap());
    assert!(host.logged("field `token_env`: the VM has no environment variable `MODELGATE_TOKEN`"));
    let mut host = Host::new().unwrap();
    assert!(!host
        .configure(&format!(r#"{{{BASE},"token":"not a token {TOKEN}"}}"#))
        .unwrap());
    assert!(host.logged("field `token`"), "{:?}", host.logs());
    never_logged(&host);
}

const ROLLBACK: &str = r#""candidate_version":"v1.3","canary_percent":100,"query_cluster":"modelgate_admin","rollback":true,"poll_interval_ms":1000,"poll_timeout_ms":500,"resume_after_ms":3000"#;

fn version(host: &mut Host) -> String {
    host.request(&get("/risk-score"))
        .unwrap()
        .header("x-model-version")
        .unwrap()
}

#[test]
fn poll_fails_open_on_failure_timeout_and_garbage() {
    let mut host = host(ROLLBACK);
    let answers = [
        HttpAnswer::Failed,
        HttpAnswer::Response {
            status: 503,
            headers: vec![],
            body: b"unavailable".to_vec(),
        },
        ok_response("<html>not json</html>"),
        ok_response(r#"{"regressions":"nope"}"#),
        ok_response(&"[".repeat(100_000)),
        HttpAnswer::Response {
            status: 200,
            headers: vec![],
            body: vec![0xff; 300 * 1024],
        },
    ];
    let n = answers.len() as u64;
    for answer in answers {
        host.advance_tick(ms(1000)).unwrap();
        let calls = host.take_http_calls();
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!(call.cluster, "modelgate_admin");
        assert_eq!(call.header(":method").as_deref(), Some("GET"));
        assert_eq!(
            call.header(":path").as_deref(),
            Some("/api/v1/regressions?service=lending-api&min_severity=critical")
        );
        assert_eq!(call.header(":authority").as_deref(), Some("modelgate"));
        host.answer_http(call.token, answer).unwrap();
        assert_eq!(version(&mut host), "v1.3", "fail open: the decision stays");
    }
    assert_eq!(host.counter("modelgate.filter.poll_failed"), Some(n));
    // A poll never answered times out, and the next one goes out.
    host.advance_tick(ms(1000)).unwrap();
    assert_eq!(host.take_http_calls().len(), 1);
    host.advance_tick(ms(1000)).unwrap();
    assert_eq!(host.counter("modelgate.filter.poll_failed"), Some(n + 1));
    let calls = host.take_http_calls();
    assert_eq!(calls.len(), 1);
    host.answer_http(calls[0].token, ok_response("{}")).unwrap();
    // Dispatch refused.
    host.inject_failure("proxy_http_call", Status::BadArgument);
    host.advance_tick(ms(1000)).unwrap();
    assert_eq!(host.counter("modelgate.filter.poll_failed"), Some(n + 2));
    assert_eq!(version(&mut host), "v1.3");
    assert_eq!(host.counter("modelgate.filter.rollbacks"), Some(0));
}

/// A `Verdict` answer about v1.3 with this outcome and rule state.
fn verdict(outcome: &str, state: &str) -> String {
    format!(
        r#"{{"service":"lending-api","candidate_version":"v1.3","outcome":"VERDICT_OUTCOME_{outcome}",
        "endpoints":[{{"endpoint":"/risk-score","outcome":"VERDICT_OUTCOME_{outcome}",
        "rules":[{{"rule":"sla","outcome":"VERDICT_OUTCOME_{outcome}","state":"ALERT_STATE_{state}"}}]}}]}}"#
    )
}

#[test]
fn rolls_back_on_a_firing_regression_and_resumes_only_on_a_passing_verdict() {
    let mut host = host(ROLLBACK);
    assert_eq!(version(&mut host), "v1.3");
    let answer = |host: &mut Host, body: &str| {
        host.advance_tick(ms(1000)).unwrap();
        let calls = host.take_http_calls();
        assert_eq!(calls.len(), 1);
        host.answer_http(calls[0].token, ok_response(body)).unwrap();
        calls[0].header(":path").unwrap()
    };
    assert_eq!(
        answer(&mut host, FIRING),
        "/api/v1/regressions?service=lending-api&min_severity=critical"
    );
    assert_eq!(host.counter("modelgate.filter.rollbacks"), Some(1));
    assert!(host.logged("rollback: v1.3 regressed"), "{:?}", host.logs());
    for _ in 0..20 {
        assert_eq!(
            version(&mut host),
            "v1.2",
            "unversioned traffic goes to the baseline"
        );
    }
    // An explicit version is still honoured.
    let ex = host
        .request(&get("/").header("x-model-version", "v1.3"))
        .unwrap();
    assert_eq!(ex.header("x-model-version").as_deref(), Some("v1.3"));
    // Rolled back, the poll asks whether v1.3 has passed since. Still
    // firing: stays rolled back, no second rollback counted.
    let path = answer(&mut host, &verdict("REGRESSION", "FIRING"));
    assert_eq!(path, "/api/v1/verdict?service=lending-api&candidate=v1.3");
    assert_eq!(host.counter("modelgate.filter.rollbacks"), Some(1));
    // No data, an inconclusive verdict, no alert: never a resume, however long.
    for body in ["{}", r#"{"regressions":[]}"#] {
        for _ in 0..10 {
            answer(&mut host, body);
        }
    }
    for _ in 0..10 {
        answer(&mut host, &verdict("INCONCLUSIVE", "INACTIVE"));
    }
    assert_eq!(version(&mut host), "v1.2");
    assert_eq!(host.counter("modelgate.filter.resumes"), Some(0));
    // Passing, but not for resume_after_ms (3 s) in a row: no resume.
    answer(&mut host, &verdict("PASS", "INACTIVE"));
    answer(&mut host, &verdict("PASS", "INACTIVE"));
    answer(&mut host, &verdict("INCONCLUSIVE", "INACTIVE"));
    answer(&mut host, &verdict("PASS", "INACTIVE"));
    answer(&mut host, &verdict("PASS", "INACTIVE"));
    answer(&mut host, &verdict("PASS", "INACTIVE"));
    assert_eq!(version(&mut host), "v1.2");
    // The fourth pass in a row is 3 s after the first: resume.
    answer(&mut host, &verdict("PASS", "INACTIVE"));
    assert_eq!(host.counter("modelgate.filter.resumes"), Some(1));
    assert!(host.logged("resume: v1.3 passed"), "{:?}", host.logs());
    assert_eq!(version(&mut host), "v1.3");
    // Serving the candidate again, the poll watches for alerts again.
    assert_eq!(
        answer(&mut host, "{}"),
        "/api/v1/regressions?service=lending-api&min_severity=critical"
    );
}

#[test]
fn the_operator_resumes_by_raising_the_rollback_epoch() {
    let config = format!("{{{BASE},{ROLLBACK}}}");
    let mut host = host(ROLLBACK);
    host.advance_tick(ms(1000)).unwrap();
    let token = host.take_http_calls()[0].token;
    host.answer_http(token, ok_response(FIRING)).unwrap();
    assert_eq!(version(&mut host), "v1.2");
    // The same configuration again (Istio re-pushes it): the decision stays.
    assert!(host.configure(&config).unwrap());
    assert_eq!(version(&mut host), "v1.2");
    let resumed = config.replace('}', r#","rollback_epoch":1}"#);
    assert!(host.configure(&resumed).unwrap());
    assert_eq!(version(&mut host), "v1.3");
    // Back to epoch 0, the old decision; rollback turned off, none at all.
    assert!(host.configure(&config).unwrap());
    assert_eq!(version(&mut host), "v1.2");
    let off = config.replace(r#""rollback":true"#, r#""rollback":false"#);
    assert!(host.configure(&off).unwrap());
    assert_eq!(version(&mut host), "v1.3");
}

#[test]
fn without_auto_resume_the_rollback_stays() {
    let mut host = host(&ROLLBACK.replace("\"resume_after_ms\":3000", "\"auto_resume\":false"));
    for body in [FIRING, "{}", "{}", "{}", "{}", "{}"] {
        host.advance_tick(ms(1000)).unwrap();
        let token = host.take_http_calls()[0].token;
        host.answer_http(token, ok_response(body)).unwrap();
    }
    assert_eq!(version(&mut host), "v1.2");
    assert_eq!(host.counter("modelgate.filter.resumes"), Some(0));
}

#[test]
fn a_bad_configuration_is_refused_with_the_field_named() {
    let cases = [
        ("", "service_name"),
        ("not json", "."),
        (r#"{"service_name":"a"}"#, "baseline_version"),
        (
            r#"{"service_name":"a","baseline_version":"b","canary_percent":150}"#,
            "canary_percent",
        ),
        (
            r#"{"service_name":"a","baseline_version":"b","canary_percent":"ten"}"#,
            "canary_percent",
        ),
        (
            r#"{"service_name":"a","baseline_version":"b","rollback":true}"#,
            "rollback",
        ),
        (
            r#"{"service_name":"a","baseline_version":"b","colector_cluster":"x"}"#,
            "colector_cluster",
        ),
        (
            r#"{"service_name":"a","baseline_version":"b","export_interval_ms":0}"#,
            "export_interval_ms",
        ),
        (
            r#"{"service_name":"a","baseline_version":"b","sticky_header":"X Lender"}"#,
            "sticky_header",
        ),
    ];
    for (config, field) in cases {
        let mut host = Host::new().unwrap();
        assert!(!host.configure(config).unwrap(), "accepted {config}");
        assert!(
            host.logs()
                .iter()
                .any(|l| l.level >= 3 && l.message.contains(field)),
            "{config}: no log line naming {field}: {:?}",
            host.logs()
        );
        // Unconfigured: requests pass untouched.
        let ex = host.request(&get("/")).unwrap();
        assert_eq!(ex.header("x-model-version"), None);
    }
    // Istio's pluginConfig arrives as the same JSON (numbers as JSON numbers).
    let mut host = Host::new().unwrap();
    assert!(host
        .configure(r#"{"service_name":"lending-api","baseline_version":"v1.2","candidate_version":"v1.3","canary_percent":10.0,"export_interval_ms":1000}"#)
        .unwrap());
}

/// The first value under `key` anywhere in a YAML document.
fn find_key<'a>(doc: &'a serde_yaml_ng::Value, key: &str) -> Option<&'a serde_yaml_ng::Value> {
    match doc {
        serde_yaml_ng::Value::Mapping(map) => map
            .get(key)
            .or_else(|| map.values().find_map(|v| find_key(v, key))),
        serde_yaml_ng::Value::Sequence(items) => items.iter().find_map(|v| find_key(v, key)),
        _ => None,
    }
}

fn example_text(path: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn example(path: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&example_text(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An Istio resource's `pluginConfig` as the JSON Istio passes on.
fn plugin_config(path: &str) -> String {
    let resource = example(path);
    let config = find_key(&resource, "pluginConfig").expect("a pluginConfig");
    serde_json::to_string(config).unwrap()
}

/// What the examples hand the filter is accepted as it is: Envoy's
/// `StringValue` (JSON text), Istio's `pluginConfig` (a Struct, which Istio
/// passes on as JSON) of a WasmPlugin and a TrafficExtension, and the
/// configuration string of nginx's `proxy_wasm` directive.
#[test]
fn the_example_configurations_are_accepted() {
    let envoy = example("envoy/envoy.yaml");
    let envoy_json = find_key(&envoy, "configuration")
        .and_then(|c| c.get("value"))
        .and_then(|v| v.as_str())
        .expect("envoy.yaml: the filter's configuration.value")
        .to_owned();
    let nginx = example_text("nginx/nginx.conf");
    let nginx_json = nginx
        .lines()
        .find_map(|l| l.trim().strip_prefix("proxy_wasm modelgate '"))
        .and_then(|rest| rest.strip_suffix("';"))
        .expect("nginx.conf: proxy_wasm modelgate '<json>';")
        .to_owned();
    for (name, config) in [
        ("envoy.yaml", envoy_json),
        ("wasmplugin.yaml", plugin_config("istio/wasmplugin.yaml")),
        (
            "trafficextension.yaml",
            plugin_config("istio/trafficextension.yaml"),
        ),
        ("nginx.conf", nginx_json),
    ] {
        let mut host = Host::new().unwrap();
        // trafficextension.yaml takes the token from the VM's environment.
        host.set_env("MODELGATE_TOKEN", "example-token");
        assert!(
            host.configure(&config).unwrap(),
            "{name}: refused {config}: {:?}",
            host.logs()
        );
        let ex = host.request(&get("/risk-score")).unwrap();
        assert!(
            matches!(
                ex.header("x-model-version").as_deref(),
                Some("v1.2" | "v1.3")
            ),
            "{name}: {:?}",
            ex.header("x-model-version")
        );
    }
}

/// Every `proxy_*` call the module imports, answering NotFound and then
/// InternalFailure, through a whole lifecycle: configure, requests, timer,
/// dispatched calls answered. The filter must not trap.
#[test]
fn every_host_call_failing_never_traps() {
    let imports = module_imports(&built_module().unwrap()).unwrap();
    let calls: Vec<String> = imports
        .into_iter()
        .filter(|(m, n)| m == "env" && n.starts_with("proxy_"))
        .map(|(_, n)| n)
        .collect();
    assert!(calls.len() >= 10, "{calls:?}");
    let config = format!(
        "{{{BASE},{ROLLBACK},\"collector_cluster\":\"otlp\",\"sticky_header\":\"x-lender-id\"}}"
    );
    for call in &calls {
        for status in [Status::NotFound, Status::InternalFailure] {
            let mut host = Host::new().unwrap();
            host.inject_failure(call, status);
            let configured = host.configure(&config).unwrap();
            for i in 0..3 {
                let spec = RequestSpec::get("/risk-score", ms(10))
                    .header("x-lender-id", &format!("l{i}"))
                    .header(
                        "traceparent",
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    )
                    .property("request.duration", 5_000_000i64.to_le_bytes().to_vec());
                host.request(&spec)
                    .unwrap_or_else(|e| panic!("{call} {status:?}: {e}"));
            }
            for _ in 0..3 {
                host.advance_tick(ms(1000))
                    .unwrap_or_else(|e| panic!("{call} {status:?}: {e}"));
                for g in host.take_grpc_calls() {
                    host.answer_grpc(g.token, GrpcAnswer::Ok(vec![])).unwrap();
                }
                for h in host.take_http_calls() {
                    host.answer_http(h.token, ok_response(FIRING))
                        .unwrap_or_else(|e| panic!("{call} {status:?}: {e}"));
                }
            }
            if call == "proxy_log" || call.contains("metric") {
                assert!(configured, "{call} failing must not refuse the plugin");
            }
        }
    }
}

#[test]
fn linear_memory_is_flat_over_100_000_requests() {
    let mut host = host(
        r#""candidate_version":"v1.3","canary_percent":30,"sticky_header":"x-lender-id","collector_cluster":"otlp","query_cluster":"admin","rollback":true,"poll_interval_ms":1000"#,
    );
    let run = |host: &mut Host, n: usize| {
        for i in 0..n {
            let spec = RequestSpec::get("/risk-score", ms(3))
                .header("x-lender-id", &format!("lender-{}", i % 5000))
                .header("x-model-version", if i % 10 == 0 { "v1.1" } else { "" });
            host.request(&spec).unwrap();
            if i % 250 == 0 {
                host.advance_tick(ms(1000)).unwrap();
                for g in host.take_grpc_calls() {
                    host.answer_grpc(g.token, GrpcAnswer::Ok(vec![])).unwrap();
                }
                for h in host.take_http_calls() {
                    host.answer_http(h.token, ok_response("{}")).unwrap();
                }
                host.clear_logs();
            }
        }
    };
    run(&mut host, 5_000);
    let warm = host.memory_bytes();
    let started = std::time::Instant::now();
    run(&mut host, 100_000);
    let after = host.memory_bytes();
    println!(
        "linear memory: {warm} bytes after warm-up, {after} after 100,000 more requests ({:?})",
        started.elapsed()
    );
    assert_eq!(after, warm, "linear memory grew");
    assert!(host.counter("modelgate.filter.spans_exported").unwrap() >= 100_000);
}

/// The callbacks are checked one by one in `tests/abi.rs`.
#[test]
fn imports_are_proxy_calls_and_envoy_wasi_and_memory_is_exported() {
    let wasm = built_module().unwrap();
    let imports = module_imports(&wasm).unwrap();
    for (module, name) in &imports {
        let allowed = (module == "env" && name.starts_with("proxy_"))
            || (module == "wasi_snapshot_preview1" && ENVOY_WASI_CALLS.contains(&name.as_str()));
        assert!(allowed, "unexpected import {module}.{name}");
    }
    assert!(module_exports(&wasm).unwrap().iter().any(|e| e == "memory"));
    println!("imports: {imports:?}");
}

#[test]
fn the_host_has_no_unimplemented_call_the_filter_uses() {
    let mut host = host(&format!("{ROLLBACK},\"collector_cluster\":\"otlp\""));
    host.request(&get("/")).unwrap();
    host.advance_tick(ms(1000)).unwrap();
    let unimplemented: Vec<_> = host
        .call_counts()
        .keys()
        .filter(|k| k.contains('.'))
        .collect();
    assert!(unimplemented.is_empty(), "{unimplemented:?}");
}
