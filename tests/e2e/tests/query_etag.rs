//! The query API's cheap polls, driving the real binary: `/api/v1/regressions`
//! and `/api/v1/verdict` carry an `ETag`, answer `304 Not Modified` with no
//! body while it still matches, and a new tag once the answer changes (here:
//! a slow candidate starts firing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use modelgate_e2e::{eventually, Collector};
use modelgate_fixture::{request_of, SpanSpec};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

/// GET `path` with an optional `If-None-Match`: (status, ETag, body).
async fn poll(collector: &Collector, path: &str, tag: Option<&str>) -> (u16, String, String) {
    let mut request = collector.http_client().get(collector.admin_url(path));
    if let Some(tag) = tag {
        request = request.header("if-none-match", tag);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, etag, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_are_answered_304_until_the_answer_changes() {
    let collector = Collector::start(&[
        ("MODELGATE_JUDGE__EVALUATION_INTERVAL", "100ms"),
        ("MODELGATE_JUDGE__ALERTS__HOLD", "0s"),
    ])
    .await;
    let path = "/api/v1/regressions?service=lending-api";
    let (status, quiet, body) = poll(&collector, path, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        quiet.starts_with('"') && quiet.ends_with('"') && quiet.len() > 2,
        "{quiet:?}"
    );
    for tag in [
        quiet.clone(),
        format!("W/{quiet}"),
        format!("\"other\", {quiet}"),
        "*".into(),
    ] {
        let (status, etag, body) = poll(&collector, path, Some(&tag)).await;
        assert_eq!((status, body.as_str()), (304, ""), "If-None-Match: {tag}");
        assert_eq!(etag, quiet, "a 304 names the tag it matched");
    }
    let (status, _, _) = poll(&collector, path, Some("\"stale\"")).await;
    assert_eq!(status, 200, "a tag that does not match gets the answer");

    // v1 fast, then v2 slow: v2 fires, the answer and its tag change.
    let mut traces = TraceServiceClient::new(collector.grpc_channel().await.unwrap());
    let spans = |version: &str, ms: u64, n: usize| {
        request_of((0..n).map(|_| SpanSpec::request("lending-api", "/risk-score", version, ms)))
    };
    traces.export(spans("v1", 20, 30)).await.unwrap();
    traces.export(spans("v2", 900, 30)).await.unwrap();
    let fired = eventually(Duration::from_secs(15), || async {
        let (status, etag, body) = poll(&collector, path, Some(&quiet)).await;
        (status == 200 && body.contains("ALERT_STATE_FIRING")).then_some(etag)
    })
    .await;
    let firing = fired.expect("v2 fires and the quiet tag stops matching");
    assert_ne!(firing, quiet);

    // The verdict too; its evidence may move between two evaluations, so
    // ask again (bounded) until two polls fall in one.
    let verdict = "/api/v1/verdict?service=lending-api&candidate=v2";
    let unchanged = eventually(Duration::from_secs(10), || async {
        let (status, tag, body) = poll(&collector, verdict, None).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("VERDICT_OUTCOME_REGRESSION"), "{body}");
        let (status, again, body) = poll(&collector, verdict, Some(&tag)).await;
        if status == 200 {
            assert_ne!(again, tag, "a new answer has a new tag");
            return None;
        }
        assert_eq!(
            (status, body.as_str(), again.as_str()),
            (304, "", tag.as_str())
        );
        Some(())
    })
    .await;
    assert!(unchanged.is_some(), "the verdict never answered 304");
    collector.stop().await;
}
