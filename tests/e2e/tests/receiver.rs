//! Bad input at the OTLP/gRPC receiver: each gets the answer the OTLP
//! specification requires, is counted, and the server keeps serving.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use modelgate_e2e::{eventually, metric, metric_sum, send_raw, Collector};
use modelgate_fixture::{request_of, SpanSpec};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tonic::transport::Channel;
use tonic::Code;

fn valid_request(spans: usize) -> ExportTraceServiceRequest {
    request_of((0..spans).map(|i| SpanSpec::request("shop", &format!("/p{}", i % 3), "v1", 20)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_get_otlp_answers_are_counted_and_the_server_keeps_serving() {
    let collector = Collector::start(&[("MODELGATE_RECEIVER__MAX_MESSAGE_BYTES", "65536")]).await;
    let channel = Channel::from_shared(collector.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = TraceServiceClient::new(channel.clone());

    // Garbage bytes: not a protobuf.
    let err = send_raw(&channel, vec![0xff; 64], false).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Truncated protobuf: a valid request cut in half.
    let bytes = valid_request(20).encode_to_vec();
    let err = send_raw(&channel, bytes[..bytes.len() / 2].to_vec(), false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Oversized: a valid request over the 64 KiB limit; no RetryInfo.
    let big = valid_request(2_000).encode_to_vec();
    assert!(big.len() > 65_536);
    let err = send_raw(&channel, big, false).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.details().is_empty(),
        "no RetryInfo may be attached: {err:?}"
    );

    // Gzip bomb: 32 MiB of zeros, about 32 KiB on the wire.
    let err = send_raw(&channel, vec![0; 32 << 20], true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.details().is_empty());

    // A compressed valid request is fine.
    let ok = send_raw(&channel, valid_request(10).encode_to_vec(), true)
        .await
        .unwrap();
    assert!(ok.is_empty() || ok.len() < 16);

    // An empty request is a success with no partial success.
    let response = client
        .export(ExportTraceServiceRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.partial_success, None);

    // Spans that end before they start: rejected in partial_success.
    let request = request_of([
        SpanSpec::request("shop", "/backwards", "v1", 20).end_before_start(),
        SpanSpec::request("shop", "/fine", "v1", 20),
        SpanSpec::request("shop", "/no-time", "v1", 20).no_timestamps(),
    ]);
    let partial = client
        .export(request)
        .await
        .unwrap()
        .into_inner()
        .partial_success
        .unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("before start_time"),
        "{}",
        partial.error_message
    );

    // A span with no version counts under `unknown`.
    let request = request_of([SpanSpec::server("shop", "GET /anon", 20)
        .attr(modelgate_fixture::attr_str("http.route", "/anon"))]);
    assert_eq!(
        client
            .export(request)
            .await
            .unwrap()
            .into_inner()
            .partial_success,
        None
    );

    // Every refusal counted; the valid spans accepted.
    let text = eventually(Duration::from_secs(10), || async {
        let text = collector.metrics().await;
        (metric(&text, "modelgate_series_active", &[]) == Some(5.0)).then_some(text)
    })
    .await
    .expect("five series (shop /p0, /p1, /p2, /fine, /anon) within 10 s");
    assert_eq!(
        metric(
            &text,
            "modelgate_receiver_refused_total",
            &[("reason", "invalid_payload")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "modelgate_receiver_refused_total",
            &[("reason", "too_large")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "modelgate_receiver_refused_total",
            &[("reason", "invalid_span")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "modelgate_receiver_accepted_total", &[]),
        Some(12.0),
        "{text}"
    );
    let versions = collector
        .json("/api/v1/versions?service=shop&endpoint=/anon")
        .await;
    assert_eq!(
        versions["endpoints"][0]["versions"][0]["version"], "unknown",
        "{versions}"
    );

    // Still serving.
    client.export(valid_request(5)).await.unwrap();
    assert!(collector.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_endpoints_stay_within_the_series_cap() {
    let collector =
        Collector::start(&[("MODELGATE_LOG", "debug,h2=info,tower=info,hyper=info")]).await;
    let channel = Channel::from_shared(collector.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = TraceServiceClient::new(channel).max_decoding_message_size(16 << 20);
    let rss_before = collector.rss_kib();
    const TOTAL: usize = 200_000;
    const BATCH: usize = 5_000;
    // 400 services of 500 endpoints (each service at its endpoint cap,
    // extract.endpoints.max_per_service), one request each: twice the
    // series cap.
    let series = |n: usize| (format!("wide-{}", n / 500), format!("/item/e{}", n % 500));
    for b in 0..TOTAL / BATCH {
        let request = request_of((0..BATCH).map(|i| {
            let (service, endpoint) = series(b * BATCH + i);
            SpanSpec::request(&service, &endpoint, "v1", 30)
        }));
        // The default 4 MiB limit fits 5,000 small spans.
        client.export(request).await.unwrap();
    }
    // Memory of the series themselves, before any scrape adds its own.
    // The newest series took the place of older one-request ones.
    let (service, endpoint) = series(TOTAL - 1);
    let accepted = eventually(Duration::from_secs(30), || async {
        let json = collector
            .json(&format!(
                "/api/v1/versions?service={service}&endpoint={endpoint}"
            ))
            .await;
        json["endpoints"]
            .as_array()
            .map(Vec::len)
            .filter(|n| *n == 1)
    })
    .await;
    assert!(
        accepted.is_some(),
        "the newest series evicts a one-request one: it must exist"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_series = collector.rss_kib();
    let text = eventually(Duration::from_secs(30), || async {
        let text = collector.metrics().await;
        (metric_sum(&text, "modelgate_receiver_accepted_total", &[]) == Some(TOTAL as f64)
            && metric(&text, "modelgate_series_evicted_total", &[]) >= Some(100_000.0))
        .then_some(text)
    })
    .await
    .unwrap_or_else(|| panic!("not all spans aggregated; log:\n{}", collector.log()));
    let active = metric(&text, "modelgate_series_active", &[]).unwrap();
    assert!(
        (98_000.0..=100_000.0).contains(&active),
        "the cap holds, and eviction keeps it nearly full: {active}"
    );
    assert_eq!(
        metric(&text, "modelgate_series_overflow_total", &[]),
        Some(0.0),
        "nothing overflowed: one-request series made room"
    );
    let rss = collector.rss_kib();
    println!(
        "series cap: {active} series, the rest evicted; RSS {} MiB at start, {} MiB with the series, {} MiB after scraping /metrics",
        rss_before / 1024,
        rss_series / 1024,
        rss / 1024
    );
    // A bound on memory, not on time: 100k series must not cost a gigabyte.
    assert!(
        rss_series < 512 * 1024,
        "RSS {rss_series} KiB with 100k series"
    );
    assert!(rss < 1024 * 1024, "RSS {rss} KiB after scrapes");
    assert!(collector.stop().await.success());
}
