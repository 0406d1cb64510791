//! End to end with `auth` on: a running `modelgate` that wants a bearer
//! token on every export and query. The filter configured with the token
//! (inline, or from the VM's environment) has its OTLP/HTTP export accepted
//! and its poll answered; without it, both are refused (401) and counted,
//! and requests still pass.
//!
//! Needs `scripts/build-wasm` and `cargo build --release -p modelgate` first.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{follow_the_wall, pump};
use modelgate_e2e::{eventually, Collector};
use modelgate_wasm_host::{Host, RequestSpec};

const TOKEN: &str = "edge-e2e-token-0123456789";

fn config(token: &str) -> String {
    format!(
        r#"{{"service_name":"lending-api","baseline_version":"v1.2",
        "collector_cluster":"modelgate_otlp","export_protocol":"http",
        "query_cluster":"modelgate_admin","candidate_version":"v1.3","rollback":true,
        "poll_interval_ms":100,"export_interval_ms":100{token}}}"#
    )
}

/// Ten requests, then timer ticks until the export and a poll went out;
/// what the collector answered to each (exports, then polls).
async fn run(collector: &Collector, host: &mut Host) -> (Vec<u16>, Vec<u16>) {
    follow_the_wall(host);
    for n in 0..10 {
        let spec = RequestSpec::get("/risk-score", Duration::from_millis(20))
            .header("x-lender-id", &format!("lender-{n}"));
        let exchange = host.request(&spec).unwrap();
        assert_eq!(exchange.header("x-model-version").as_deref(), Some("v1.2"));
    }
    let (mut exports, mut polls) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        host.advance(Duration::from_millis(100));
        host.tick().unwrap();
        for seen in pump(collector, host).await {
            if seen.poll {
                polls.push(seen.status);
            } else {
                exports.push(seen.status);
            }
        }
    }
    (exports, polls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_sends_its_token_to_a_collector_with_auth_on() {
    let mut collector = Collector::start(&[("MODELGATE_AUTH__TOKEN", TOKEN)]).await;

    // No token: refused, counted, and requests still pass.
    let mut host = Host::new().unwrap();
    assert!(host.configure(&config("")).unwrap(), "{:?}", host.logs());
    let (exports, polls) = run(&collector, &mut host).await;
    assert!(
        !exports.is_empty() && exports.iter().all(|s| *s == 401),
        "{exports:?}"
    );
    assert!(
        !polls.is_empty() && polls.iter().all(|s| *s == 401),
        "{polls:?}"
    );
    assert!(host.counter("modelgate.filter.export_failed").unwrap() >= 1);
    assert!(host.counter("modelgate.filter.poll_failed").unwrap() >= 1);

    // The token inline, and from the VM's environment: accepted.
    let inline = config(&format!(r#","token":"{TOKEN}""#));
    let from_env = config(r#","token_env":"MODELGATE_TOKEN""#);
    for configuration in [inline, from_env] {
        let mut host = Host::new().unwrap();
        host.set_env("MODELGATE_TOKEN", TOKEN);
        assert!(host.configure(&configuration).unwrap(), "{:?}", host.logs());
        let (exports, polls) = run(&collector, &mut host).await;
        assert!(
            !exports.is_empty() && exports.iter().all(|s| *s == 200),
            "{exports:?}"
        );
        assert!(
            !polls.is_empty() && polls.iter().all(|s| matches!(s, 200 | 304)),
            "{polls:?}"
        );
        assert_eq!(host.counter("modelgate.filter.spans_exported"), Some(10));
        assert!(host.logs().iter().all(|l| !l.message.contains(TOKEN)));
    }
    collector.set_token(Some(TOKEN));
    let counted = eventually(Duration::from_secs(10), || async {
        let v = collector.json("/api/v1/versions?service=lending-api").await;
        (v["endpoints"][0]["versions"][0]["count"].as_str() == Some("20")).then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "{}",
        collector.json("/api/v1/versions").await
    );
    collector.stop().await;
}
