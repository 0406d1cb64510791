//! What the end-to-end tests share: the host's clock following the wall
//! clock, and the filter's dispatched HTTP calls (OTLP/HTTP exports and
//! polls) forwarded as they are to a running collector, the way Envoy's
//! clusters would carry them.

// Test support: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use modelgate_e2e::Collector;
use modelgate_wasm_host::{Host, HttpAnswer, HttpCall};

/// The cluster names the tests configure: the collector's OTLP/HTTP port
/// and its admin (query) port.
pub(crate) const OTLP_CLUSTER: &str = "modelgate_otlp";
/// See [`OTLP_CLUSTER`].
pub(crate) const ADMIN_CLUSTER: &str = "modelgate_admin";

/// Moves the host's clock up to the wall clock, so span times are real.
pub(crate) fn follow_the_wall(host: &mut Host) {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    if let Some(behind) = wall.checked_sub(Duration::from_nanos(host.now_nanos())) {
        host.advance(behind);
    }
}

/// One forwarded call: what the collector answered.
#[derive(Debug, Clone)]
pub(crate) struct Forwarded {
    /// The call was a poll (to the admin port), not an export.
    pub(crate) poll: bool,
    /// HTTP status (0: no answer).
    pub(crate) status: u16,
    /// Its `ETag`, if any.
    pub(crate) etag: Option<String>,
    /// Its body.
    pub(crate) body: Vec<u8>,
    /// The request carried `content-encoding: gzip`.
    pub(crate) gzipped: bool,
}

/// Sends a dispatched call to the collector (`:method`, `:path` and every
/// other header as the filter set them) and turns the answer into what
/// Envoy would hand the filter.
pub(crate) async fn forward(collector: &Collector, call: &HttpCall) -> (HttpAnswer, Forwarded) {
    let poll = match call.cluster.as_str() {
        ADMIN_CLUSTER => true,
        OTLP_CLUSTER => false,
        other => panic!("a call to an unknown cluster {other}"),
    };
    let path = call.header(":path").expect("a :path");
    let url = if poll {
        collector.admin_url(&path)
    } else {
        collector.http_url(&path)
    };
    let method = call.header(":method").expect("a :method");
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = collector
        .http_client()
        .request(method, url)
        .body(call.body.clone());
    for (name, value) in &call.headers {
        if !name.starts_with(':') {
            request = request.header(name.as_str(), value.as_slice());
        }
    }
    let gzipped = call.header("content-encoding").as_deref() == Some("gzip");
    let Ok(response) = request.send().await else {
        let failed = Forwarded {
            poll,
            status: 0,
            etag: None,
            body: Vec::new(),
            gzipped,
        };
        return (HttpAnswer::Failed, failed);
    };
    let status = response.status().as_u16();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let etag = headers
        .iter()
        .find(|(k, _)| k == "etag")
        .map(|(_, v)| v.clone());
    let body = response.bytes().await.unwrap_or_default().to_vec();
    let forwarded = Forwarded {
        poll,
        status,
        etag,
        body: body.clone(),
        gzipped,
    };
    (
        HttpAnswer::Response {
            status,
            headers,
            body,
        },
        forwarded,
    )
}

/// Forwards every call `host` dispatched and answers it; returns what the
/// collector said to each. Polls go first: a poll never sees the effect of
/// an export made at the same tick, so the timings measured are not
/// flattered by the harness serializing the calls.
pub(crate) async fn pump(collector: &Collector, host: &mut Host) -> Vec<Forwarded> {
    assert!(
        host.take_grpc_calls().is_empty(),
        "the OTLP/HTTP export makes no gRPC call"
    );
    let mut calls = host.take_http_calls();
    calls.sort_by_key(|c| c.cluster != ADMIN_CLUSTER);
    let mut seen = Vec::new();
    for call in calls {
        let (answer, forwarded) = forward(collector, &call).await;
        host.answer_http(call.token, answer).unwrap();
        seen.push(forwarded);
    }
    seen
}
