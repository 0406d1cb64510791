//! Forwarding under faults: modelgate passes what it receives to a
//! downstream OTLP/gRPC server in this process; the downstream goes away for
//! 30 s and comes back on the same port while steady load continues, and
//! every span modelgate accepted must arrive (duplicates counted). Then a
//! tiny forward queue with the downstream away: senders get the retryable
//! `UNAVAILABLE` with `RetryInfo`, and modelgate's refusal counter equals
//! what they saw.
//!
//! Run with `cargo build --release -p modelgate && cargo test -p
//! modelgate-e2e --test forward -- --nocapture` (about a minute).

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modelgate_e2e::{eventually, metric, metric_sum, Collector};
use modelgate_fixture::{request_of, SpanSpec};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

/// Spans per export request of the load.
const BATCH: usize = 10;
/// Pause between two export requests of the load (20 requests, 200 spans a second).
const PERIOD: Duration = Duration::from_millis(50);
/// How long the downstream is away.
const OUTAGE: Duration = Duration::from_secs(30);

/// What the downstream received.
#[derive(Debug, Default)]
struct Received {
    spans: AtomicU64,
    log_records: AtomicU64,
    distinct: Mutex<HashSet<Vec<u8>>>,
}

#[derive(Debug, Clone, Default)]
struct Downstream(Arc<Received>);

impl Downstream {
    fn spans(&self) -> u64 {
        self.0.spans.load(Ordering::Relaxed)
    }
    fn distinct(&self) -> u64 {
        self.0.distinct.lock().unwrap().len() as u64
    }
    fn log_records(&self) -> u64 {
        self.0.log_records.load(Ordering::Relaxed)
    }
}

#[tonic::async_trait]
impl TraceService for Downstream {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut distinct = self.0.distinct.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for span in ss.spans {
                    self.0.spans.fetch_add(1, Ordering::Relaxed);
                    let mut id = span.trace_id;
                    id.extend(span.span_id);
                    distinct.insert(id);
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Downstream {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let n: usize = request
            .into_inner()
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        self.0.log_records.fetch_add(n as u64, Ordering::Relaxed);
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

/// A running downstream; [`Server::stop`] closes it (connections included).
struct Server {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `downstream` on `addr` (port 0: any), retrying the bind for a
    /// while (the port was just released).
    async fn start(addr: SocketAddr, downstream: &Downstream) -> (SocketAddr, Self) {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    eprintln!("bind {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        };
        let local = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let traces = TraceServiceServer::new(downstream.clone());
        let logs = LogsServiceServer::new(downstream.clone());
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(traces)
                .add_service(logs)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        (local, Self { stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the downstream did not stop within 15 s")
            .unwrap();
    }
}

/// What a sender saw.
#[derive(Debug, Default)]
struct Sent {
    /// Spans in export requests answered OK.
    ok_spans: AtomicU64,
    ok_requests: AtomicU64,
    /// Refusals that were retryable and carried `RetryInfo`.
    refused_with_retry_info: AtomicU64,
    /// Any other failure.
    failed: AtomicU64,
}

/// One export of `BATCH` fresh spans (each span id unique in this process).
async fn export_once(client: &mut TraceServiceClient<Channel>, sent: &Sent) {
    let request =
        request_of((0..BATCH).map(|i| SpanSpec::request("shop", "/checkout", "v1", 20 + i as u64)));
    match client.export(request).await {
        Ok(_) => {
            sent.ok_spans.fetch_add(BATCH as u64, Ordering::Relaxed);
            sent.ok_requests.fetch_add(1, Ordering::Relaxed);
        }
        Err(status)
            if matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
                && status
                    .get_details_retry_info()
                    .and_then(|r| r.retry_delay)
                    .is_some() =>
        {
            sent.refused_with_retry_info.fetch_add(1, Ordering::Relaxed);
        }
        Err(status) => {
            eprintln!("export failed: {status:?}");
            sent.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn figure(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    metric(text, name, labels).unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_survives_a_downstream_outage_and_refuses_when_full() {
    // ---- Phase 1: steady load, the downstream away for 30 s. ----
    let downstream = Downstream::default();
    let (addr, server) = Server::start("127.0.0.1:0".parse().unwrap(), &downstream).await;
    let endpoint = format!("http://{addr}");
    let collector = Collector::start(&[
        ("MODELGATE_FORWARD__ENDPOINT", &endpoint),
        ("MODELGATE_FORWARD__INITIAL_BACKOFF", "100ms"),
        ("MODELGATE_FORWARD__MAX_BACKOFF", "1s"),
        ("MODELGATE_FORWARD__TIMEOUT", "2s"),
    ])
    .await;
    let sent = Arc::new(Sent::default());
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let sent = sent.clone();
        let running = running.clone();
        let url = collector.grpc_url();
        tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(url).await.unwrap();
            let mut tick = tokio::time::interval(PERIOD);
            // Bounded in count as well as by the flag: 2 minutes at most.
            for _ in 0..(120_000 / PERIOD.as_millis() as usize) {
                tick.tick().await;
                if !running.load(Ordering::Relaxed) {
                    break;
                }
                export_once(&mut client, &sent).await;
            }
        })
    };
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before_outage = downstream.distinct();
    server.stop().await;
    println!(
        "downstream stopped after {:?}, {before_outage} spans delivered",
        started.elapsed()
    );
    tokio::time::sleep(OUTAGE).await;
    let text = collector.metrics().await;
    let queued_in_outage = figure(&text, "modelgate_forward_queue", &[]);
    println!(
        "after the {OUTAGE:?} outage: forward queue {queued_in_outage} export requests, sender ok {} requests",
        sent.ok_requests.load(Ordering::Relaxed)
    );
    let (again, server) = Server::start(addr, &downstream).await;
    assert_eq!(again, addr, "restarted on the same port");
    println!("downstream restarted on {addr}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Logs over OTLP/HTTP are forwarded too (unmapped records included).
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default(), LogRecord::default()],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    };
    let (status, _, _) = collector
        .post_otlp(
            "/v1/logs",
            "application/x-protobuf",
            None,
            logs.encode_to_vec(),
        )
        .await;
    assert_eq!(status, 200);
    running.store(false, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(10), load)
        .await
        .expect("load stops")
        .unwrap();
    let ok_spans = sent.ok_spans.load(Ordering::Relaxed);
    let caught_up = eventually(Duration::from_secs(60), || async {
        (downstream.distinct() >= ok_spans && downstream.log_records() >= 2).then_some(())
    })
    .await;
    let text = collector.metrics().await;
    let accepted =
        metric_sum(&text, "modelgate_receiver_accepted_total", &[]).unwrap_or(0.0) as u64;
    let fwd_sent = figure(&text, "modelgate_forward_sent_total", &[]);
    let refused = figure(&text, "modelgate_forward_refused_total", &[]);
    let queue = figure(&text, "modelgate_forward_queue", &[]);
    let dropped: u64 = ["rejected", "expired", "shutdown"]
        .iter()
        .map(|r| figure(&text, "modelgate_forward_dropped_total", &[("reason", r)]))
        .sum();
    let delivered = downstream.distinct();
    let duplicates = downstream.spans() - delivered;
    println!(
        "phase 1: sender ok {ok_spans} spans in {} requests, refused {}, failed {}; \
         modelgate accepted {accepted} spans, forward sent {fwd_sent} requests, \
         refused {refused}, dropped {dropped}, queue {queue}; downstream {delivered} distinct spans, \
         {duplicates} duplicates, {} log records; caught up {:?} after start",
        sent.ok_requests.load(Ordering::Relaxed),
        sent.refused_with_retry_info.load(Ordering::Relaxed),
        sent.failed.load(Ordering::Relaxed),
        downstream.log_records(),
        started.elapsed(),
    );
    assert!(caught_up.is_some(), "delivery did not catch up within 60 s");
    assert!(
        queued_in_outage > 100,
        "the queue held the outage's traffic"
    );
    assert_eq!(sent.failed.load(Ordering::Relaxed), 0);
    assert_eq!(refused, 0, "the queue had room");
    assert_eq!(dropped, 0);
    assert_eq!(
        accepted, ok_spans,
        "modelgate accepted what the sender saw accepted"
    );
    // The two empty log records do not map to requests (counted as refused
    // by extraction), yet they are forwarded unchanged.
    assert_eq!(
        figure(
            &text,
            "modelgate_receiver_refused_total",
            &[("reason", "unmapped_log")]
        ),
        2
    );
    assert_eq!(
        delivered, ok_spans,
        "every accepted span delivered, none lost"
    );
    assert_eq!(downstream.log_records(), 2);
    assert_eq!(
        fwd_sent,
        sent.ok_requests.load(Ordering::Relaxed) + 1,
        "one forwarded export per accepted one"
    );
    assert_eq!(queue, 0);
    collector.stop().await;
    server.stop().await;

    // ---- Phase 2: a tiny queue, the downstream away: refusals. ----
    let downstream = Downstream::default();
    let (addr, server) = Server::start("127.0.0.1:0".parse().unwrap(), &downstream).await;
    server.stop().await;
    let endpoint = format!("http://{addr}");
    let collector = Collector::start(&[
        ("MODELGATE_FORWARD__ENDPOINT", &endpoint),
        ("MODELGATE_FORWARD__QUEUE_ITEMS", "3"),
        ("MODELGATE_FORWARD__INITIAL_BACKOFF", "100ms"),
        ("MODELGATE_FORWARD__MAX_BACKOFF", "500ms"),
    ])
    .await;
    let sent = Sent::default();
    let mut client = TraceServiceClient::connect(collector.grpc_url())
        .await
        .unwrap();
    for _ in 0..40 {
        export_once(&mut client, &sent).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = sent.refused_with_retry_info.load(Ordering::Relaxed);
    let ok_spans = sent.ok_spans.load(Ordering::Relaxed);
    let text = collector.metrics().await;
    let refused = figure(&text, "modelgate_forward_refused_total", &[]);
    let queue = figure(&text, "modelgate_forward_queue", &[]);
    let (_, server) = Server::start(addr, &downstream).await;
    let caught_up = eventually(Duration::from_secs(30), || async {
        (downstream.distinct() >= ok_spans).then_some(())
    })
    .await;
    println!(
        "phase 2 (forward.queue_items 3): 40 exports, sender ok {} ({ok_spans} spans), refused with RetryInfo {seen}, \
         failed {}; modelgate forward refused {refused}, queue {queue}; downstream then got {} distinct spans",
        sent.ok_requests.load(Ordering::Relaxed),
        sent.failed.load(Ordering::Relaxed),
        downstream.distinct(),
    );
    assert!(seen > 0, "refusals happened");
    assert_eq!(sent.failed.load(Ordering::Relaxed), 0);
    assert_eq!(refused, seen, "every refusal counted, and only those");
    assert!(queue <= 4, "3 queued, at most one more in flight");
    assert!(caught_up.is_some(), "what was accepted was delivered");
    assert_eq!(downstream.distinct(), ok_spans);
    collector.stop().await;
    server.stop().await;
}
