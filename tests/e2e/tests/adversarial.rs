//! Hostile senders (issue 19), each attack run against the release binary
//! with its memory (RSS from `/proc`) and time bounded: the judge is not
//! blinded, the collector not exhausted, and legitimate traffic is served
//! throughout. `RELIABILITY.md` ("Hostile senders") names the limit that
//! stops each one.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use modelgate_e2e::{eventually, metric, modelgate_command, Collector};
use modelgate_fixture::{attr_str, request_of, SpanSpec};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// Every attack here must be over within this (a hung collector fails).
const ATTACK_TIME: Duration = Duration::from_secs(60);

async fn export(collector: &Collector, request: ExportTraceServiceRequest) -> i64 {
    let mut client = TraceServiceClient::new(collector.grpc_channel().await.unwrap());
    let answer = client
        .export(collector.grpc_request(request))
        .await
        .unwrap()
        .into_inner();
    answer.partial_success.map_or(0, |p| p.rejected_spans)
}

fn spans(service: &str, route: &str, version: &str, ms: u64, n: usize) -> Vec<SpanSpec> {
    (0..n)
        .map(|_| SpanSpec::request(service, route, version, ms))
        .collect()
}

/// The rules firing for `candidate` of `service`, from the API.
async fn firing(collector: &Collector, service: &str, candidate: &str) -> Vec<String> {
    let regressions = collector
        .json(&format!("/api/v1/regressions?service={service}"))
        .await;
    regressions["regressions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["candidate_version"] == candidate)
        .filter_map(|r| r["rule"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_duration_neither_fires_a_healthy_version_nor_hides_a_slow_one() {
    let collector = Collector::start(&[("MODELGATE_JUDGE__ALERTS__HOLD", "0s")]).await;
    // A healthy 50 ms version and one span of 1e12 ms (31 years).
    let mut healthy = spans("healthy", "/score", "v1", 50, 200);
    healthy.push(SpanSpec::request(
        "healthy",
        "/score",
        "v1",
        1_000_000_000_000,
    ));
    assert_eq!(export(&collector, request_of(healthy)).await, 1);
    // The same outlier in a baseline, and a candidate 5x slower.
    let mut baseline = spans("shop", "/cart", "v1", 50, 200);
    baseline.push(SpanSpec::request("shop", "/cart", "v1", 1_000_000_000_000));
    assert_eq!(export(&collector, request_of(baseline)).await, 1);
    export(
        &collector,
        request_of(spans("shop", "/cart", "v2", 250, 200)),
    )
    .await;
    let found = eventually(ATTACK_TIME, || async {
        let rules = firing(&collector, "shop", "v2").await;
        rules.iter().any(|r| r == "relative").then_some(rules)
    })
    .await;
    assert!(found.is_some(), "the 5x regression was not found");
    // A few evaluations later the healthy version is still quiet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        firing(&collector, "healthy", "v1").await,
        Vec::<String>::new()
    );
    let versions = collector.json("/api/v1/versions?service=healthy").await;
    let p50 = versions["endpoints"][0]["versions"][0]["p50_ms"]
        .as_f64()
        .unwrap_or_default();
    assert!((45.0..55.0).contains(&p50), "p50 {p50}: {versions}");
    let text = collector.metrics().await;
    assert_eq!(
        metric(
            &text,
            "modelgate_receiver_refused_total",
            &[("reason", "implausible_duration")]
        ),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_junk_series_cannot_hide_a_real_incident() {
    let collector = Collector::start(&[
        ("MODELGATE_AGGREGATE__MAX_SERIES", "2000"),
        ("MODELGATE_JUDGE__ALERTS__HOLD", "0s"),
    ])
    .await;
    let started = Instant::now();
    export(
        &collector,
        request_of(spans("lending", "/risk-score", "v1", 40, 300)),
    )
    .await;
    // 20,000 junk endpoints of one service, 5,000 junk services: ten times
    // the cap, one request each.
    for chunk in 0..25 {
        let junk = (0..1000).map(|i| {
            let n = chunk * 1000 + i;
            if n < 20_000 {
                SpanSpec::request("junk", &format!("/junk/{n}"), "x", 1)
            } else {
                SpanSpec::request(&format!("junk-{n}"), "/", "x", 1)
            }
        });
        export(&collector, request_of(junk)).await;
    }
    // The real incident arrives after the flood.
    export(
        &collector,
        request_of(spans("lending", "/risk-score", "v2", 400, 300)),
    )
    .await;
    let found = eventually(ATTACK_TIME, || async {
        (!firing(&collector, "lending", "v2").await.is_empty()).then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "the incident after the flood was not found"
    );
    let text = collector.metrics().await;
    let active = metric(&text, "modelgate_series_active", &[]).unwrap();
    let evicted = metric(&text, "modelgate_series_evicted_total", &[]).unwrap();
    let kept_out = metric(&text, "modelgate_endpoints_overflow_total", &[]).unwrap();
    assert!(active <= 2000.0, "{active}");
    // Every junk series was evicted, or never made: the junk service's
    // endpoints past extract.endpoints.max_per_service share one.
    assert!(evicted + kept_out >= 20_000.0, "{evicted} + {kept_out}");
    assert!(evicted > 0.0 && kept_out > 0.0, "{evicted} + {kept_out}");
    assert!(started.elapsed() < ATTACK_TIME);
}

/// What a command that is expected to fail printed.
fn failure_text(output: &std::process::Output) -> String {
    assert!(!output.status.success(), "expected a refusal");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Resident memory of the collector now, MiB.
fn rss_mib(collector: &Collector) -> f64 {
    collector.rss_kib() as f64 / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_unfinished_bodies_and_idle_connections_stay_bounded() {
    let collector = Collector::start(&[
        ("MODELGATE_RECEIVER__MAX_CONNECTIONS", "300"),
        ("MODELGATE_RECEIVER__IDLE_TIMEOUT", "5s"),
        ("MODELGATE_RECEIVER__WRITE_TIMEOUT", "3s"),
        ("MODELGATE_RECEIVER__BODY_TIMEOUT", "5s"),
    ])
    .await;
    // 20,000 series (40 services of 500 endpoints, each service at its
    // endpoint cap), so a /metrics page is megabytes.
    for chunk in 0..20 {
        let load = (0..1000).map(|i| {
            let n = chunk * 1000 + i;
            SpanSpec::request(
                &format!("wide-{}", n / 500),
                &format!("/e{}", n % 500),
                "v1",
                20,
            )
        });
        export(&collector, request_of(load)).await;
    }
    let (status, page) = collector.get("/metrics").await;
    assert_eq!(status, 200);
    let before = rss_mib(&collector);
    let mut peak = before;
    let mut held = Vec::new();
    // 30 scrapers that never read their page.
    for _ in 0..30 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // A small window: the page stalls after a few KiB.
        socket.set_recv_buffer_size(4096).unwrap();
        let mut tcp = socket.connect(collector.admin).await.unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
            .await
            .unwrap();
        held.push(tcp);
    }
    // Their writes stall: closed after receiver.write_timeout (3 s here).
    let stalled = eventually(Duration::from_secs(10), || async {
        let text = collector.metrics().await;
        metric(
            &text,
            "modelgate_connections_closed_total",
            &[("reason", "stalled")],
        )
        .filter(|n| *n >= 30.0)
    })
    .await;
    assert!(stalled.is_some(), "the 30 stalled scrapers were not closed");
    peak = peak.max(rss_mib(&collector));
    // 200 chunked bodies that never finish, 256 KiB each so far.
    let chunk = vec![b'x'; 256 << 10];
    for _ in 0..200 {
        let Ok(mut tcp) = TcpStream::connect(collector.http_addr).await else {
            continue;
        };
        let head = "POST /v1/traces HTTP/1.1\r\nHost: m\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\n\r\n";
        let _ = tcp.write_all(head.as_bytes()).await;
        let _ = tcp
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await;
        let _ = tcp.write_all(&chunk).await;
        held.push(tcp);
        peak = peak.max(rss_mib(&collector));
    }
    // 400 idle connections, more than the 300 allowed.
    for _ in 0..400 {
        if let Ok(tcp) = TcpStream::connect(collector.grpc).await {
            held.push(tcp);
        }
    }
    // Legitimate traffic is served throughout.
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut served = 0;
    while Instant::now() < deadline {
        let rejected = export(&collector, request_of(spans("legit", "/ok", "v1", 20, 10))).await;
        assert_eq!(rejected, 0);
        let (status, _) = collector.get("/healthz").await;
        assert_eq!(status, 200);
        served += 1;
        peak = peak.max(rss_mib(&collector));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = collector.metrics().await;
    let closed = |reason| {
        metric(
            &text,
            "modelgate_connections_closed_total",
            &[("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    let refused_timeout = metric(
        &text,
        "modelgate_receiver_refused_total",
        &[("reason", "timeout")],
    )
    .unwrap_or(0.0);
    let bound_mib = 400.0;
    println!(
        "adversarial: rss before {before:.0} MiB, peak {peak:.0} MiB (bound: before + {bound_mib} MiB); /metrics page {} KiB; {served} legitimate rounds served; closed idle {} stalled {} evicted {} refused {}; body timeouts {refused_timeout}",
        page.len() / 1024,
        closed("idle"),
        closed("stalled"),
        closed("evicted"),
        closed("refused"),
    );
    assert!(
        peak < before + bound_mib,
        "RSS {before:.0} -> {peak:.0} MiB"
    );
    assert!(closed("evicted") + closed("idle") >= 100.0);
    assert!(refused_timeout >= 1.0);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_gzip_members_are_read() {
    let collector = Collector::start(&[]).await;
    let gzip = |request: ExportTraceServiceRequest| {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&request.encode_to_vec()).unwrap();
        encoder.finish().unwrap()
    };
    // Two members: the protobuf of two requests, one after the other, is
    // one request holding both.
    let mut body = gzip(request_of(spans("gz", "/a", "v1", 20, 1)));
    body.extend(gzip(request_of(spans("gz", "/b", "v1", 20, 9))));
    let (status, _, _) = collector
        .post_otlp("/v1/traces", "application/x-protobuf", Some("gzip"), body)
        .await;
    assert_eq!(status, 200);
    let text = collector.metrics().await;
    assert_eq!(
        metric(&text, "modelgate_receiver_accepted_total", &[]),
        Some(10.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_one_snapshot_dir_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().display().to_string();
    let first = Collector::start(&[("MODELGATE_SNAPSHOT__DIR", &dir_text)]).await;
    let output = modelgate_command(None)
        .env("MODELGATE_SNAPSHOT__DIR", &dir_text)
        .env("MODELGATE_RECEIVER__GRPC_LISTEN", "127.0.0.1:0")
        .env("MODELGATE_RECEIVER__HTTP_LISTEN", "127.0.0.1:0")
        .env("MODELGATE_ADMIN__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let text = failure_text(&output);
    assert!(
        text.contains("in use by another modelgate")
            && text.contains(&format!("pid {}", first.pid())),
        "{text}"
    );
    assert!(first.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_senders_cannot_forge_log_lines_or_duplicate_series() {
    let collector = Collector::start(&[
        ("MODELGATE_JUDGE__ALERTS__HOLD", "0s"),
        ("MODELGATE_EXTRACT__DIMENSIONS", "[region]"),
    ])
    .await;
    let forged = "v2\nFORGED level=ERROR \u{1b}[31mred";
    let with_region = |spec: SpanSpec, region: &str| spec.attr(attr_str("region", region));
    let mut batch = Vec::new();
    for region in ["eu", "us"] {
        for _ in 0..100 {
            batch.push(with_region(
                SpanSpec::request("pay", "/charge", "v1", 30),
                region,
            ));
            batch.push(with_region(
                SpanSpec::request("pay", "/charge", forged, 900),
                region,
            ));
        }
    }
    export(&collector, request_of(batch)).await;
    let fired = eventually(ATTACK_TIME, || async {
        collector
            .log()
            .contains("regression alert firing")
            .then_some(())
    })
    .await;
    assert!(fired.is_some(), "{}", collector.log());
    let log = collector.log();
    assert!(!log.lines().any(|l| l.starts_with("FORGED")), "{log}");
    assert!(!log.contains('\u{1b}'), "{log}");
    // Two regions, one series each: no sample line twice.
    let text = collector.metrics().await;
    let mut seen = std::collections::HashSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        assert!(seen.insert(series.to_owned()), "twice: {series}");
    }
    assert!(text.contains("region=\"eu\"") && text.contains("region=\"us\""));
}

#[test]
fn configuration_that_would_break_the_collector_is_refused_naming_the_key() {
    for (key, value, named) in [
        (
            "MODELGATE_RECEIVER__MAX_MESSAGE_BYTES",
            "18446744073709551615",
            "receiver.max_message_bytes",
        ),
        (
            "MODELGATE_RECEIVER__QUEUE_BATCHES",
            "18446744073709551615",
            "receiver.queue_batches",
        ),
        (
            "MODELGATE_FORWARD__QUEUE_ITEMS",
            "18446744073709551615",
            "forward.queue_items",
        ),
        (
            "MODELGATE_JUDGE__EVALUATION_INTERVAL",
            "584years",
            "judge.evaluation_interval",
        ),
        ("MODELGATE_EXTRACT__TIMEOUT", "0s", "extract.timeout"),
    ] {
        let output = modelgate_command(None)
            .arg("config")
            .env(key, value)
            .output()
            .unwrap();
        let text = failure_text(&output);
        assert!(text.contains(named), "{key}: {text}");
    }
    let output = modelgate_command(None)
        .arg("config")
        .env("MODELGATE_AUTH__TOKEN", "0012345")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
