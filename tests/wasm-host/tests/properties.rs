//! Property tests: random headers, random configurations and random poll
//! answers never make the filter trap, and requests always pass.
//!
//! Bounded: a fixed number of cases, each a handful of requests.

// Helpers may unwrap: a panic in a test is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use modelgate_wasm_host::{GrpcAnswer, Host, HttpAnswer, RequestSpec};
use proptest::prelude::*;
use std::time::Duration;

const GOOD: &str = r#"{"service_name":"lending-api","baseline_version":"v1.2","candidate_version":"v1.3","canary_percent":50,"sticky_header":"x-lender-id","collector_cluster":"otlp","query_cluster":"admin","rollback":true,"poll_interval_ms":100,"export_interval_ms":100}"#;

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x-request-id".to_owned()),
        Just("traceparent".to_owned()),
        Just("x-model-version".to_owned()),
        Just("x-lender-id".to_owned()),
        Just(":path".to_owned()),
        Just(":method".to_owned()),
        "[a-z:-]{1,20}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,64}",
        "00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}",
        "[0-9a-zA-Z-]{0,40}",
        (1usize..70_000).prop_map(|n| "x".repeat(n)),
    ]
}

fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| if f.is_finite() {
            f.to_string()
        } else {
            "1e999".to_owned()
        }),
        ".{0,20}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
    ]
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("service_name"),
        Just("baseline_version"),
        Just("candidate_version"),
        Just("canary_percent"),
        Just("sticky_header"),
        Just("version_header"),
        Just("collector_cluster"),
        Just("query_cluster"),
        Just("rollback"),
        Just("export_batch_max"),
        Just("export_buffer_max"),
        Just("max_versions"),
        Just("stats_prefix"),
        Just("poll_interval_ms"),
        Just("surprise"),
    ]
    .prop_map(str::to_owned)
}

fn config() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec((field(), json_value()), 0..8).prop_map(|fields| {
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", body.join(",")).into_bytes()
        }),
        prop::collection::vec(any::<u8>(), 0..200),
        (field(), json_value()).prop_map(|(k, v)| {
            // A good configuration with one field replaced.
            let mut good: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(GOOD).unwrap();
            good.insert(
                k,
                serde_json::from_str(&v).unwrap_or(serde_json::Value::Null),
            );
            serde_json::to_vec(&good).unwrap()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_headers_never_trap(
        requests in prop::collection::vec(
            (prop::collection::vec((header_name(), header_value()), 0..8), 100u16..600),
            1..6,
        ),
        poll in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let mut host = Host::new().unwrap();
        prop_assert!(host.configure(GOOD).unwrap());
        for (headers, status) in requests {
            let spec = RequestSpec { headers, status, latency: Duration::from_millis(3), ..RequestSpec::default() };
            let ex = host.request(&spec).unwrap();
            prop_assert!(ex.header("x-model-version").is_some());
            prop_assert!(ex.header("x-request-id").is_some());
        }
        host.advance_tick(Duration::from_millis(100)).unwrap();
        let mut grpc = |_: &_| GrpcAnswer::Status(14);
        let mut http = |_: &_| HttpAnswer::Response { status: 200, headers: vec![], body: poll.clone() };
        host.pump(&mut grpc, &mut http).unwrap();
        host.request(&RequestSpec::get("/", Duration::from_millis(1))).unwrap();
    }

    #[test]
    fn random_configurations_never_trap(config in config()) {
        let mut host = Host::new().unwrap();
        let accepted = host.configure_bytes(&config).unwrap();
        if !accepted {
            prop_assert!(host.logs().iter().any(|l| l.message.contains("bad configuration")));
        }
        let ex = host.request(&RequestSpec::get("/x", Duration::from_millis(1))).unwrap();
        prop_assert_eq!(accepted, ex.header("x-model-version").is_some());
        host.advance_tick(Duration::from_millis(1000)).unwrap();
        let mut grpc = |_: &_| GrpcAnswer::Ok(vec![]);
        let mut http = |_: &_| HttpAnswer::Failed;
        host.pump(&mut grpc, &mut http).unwrap();
    }
}
