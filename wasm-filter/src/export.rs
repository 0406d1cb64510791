//! The export side: one finished request as a `SpanRecord`, the bounded
//! `Outbox` that batches them for `TraceService/Export`, and the encoding of
//! a batch as an `ExportTraceServiceRequest`.
//!
//! Pure (time is a parameter). It must never grow without bound: the buffer
//! drops its oldest span when full, at most one batch is in flight, and a
//! failed batch is retried a bounded number of times, then dropped; every
//! drop is counted.

use crate::otlp;
use prost::Message;
use std::collections::VecDeque;

/// One request as the edge saw it, ready to become an OTLP SERVER span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRecord {
    /// Trace id (from the incoming `traceparent`, or stamped).
    pub trace_id: [u8; 16],
    /// The edge span's id.
    pub span_id: [u8; 8],
    /// The caller's span id, when a `traceparent` came in.
    pub parent_id: Option<[u8; 8]>,
    /// Start, unix nanoseconds.
    pub start_unix_nanos: u64,
    /// End, unix nanoseconds.
    pub end_unix_nanos: u64,
    /// HTTP method (capped).
    pub method: String,
    /// Path without the query (capped): the collector's endpoint.
    pub path: String,
    /// HTTP status, 0 when there was no response.
    pub status: u16,
    /// The version that served the request.
    pub version: String,
    /// The upstream timed out (or the status says so).
    pub timed_out: bool,
}

/// Encodes a batch as an `ExportTraceServiceRequest` protobuf.
pub fn encode(service_name: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let spans = spans
        .iter()
        .map(|r| {
            let mut attributes = vec![
                otlp::string_attr("http.route", &r.path),
                otlp::string_attr("url.path", &r.path),
                otlp::string_attr("http.request.method", &r.method),
                otlp::string_attr("model.version", &r.version),
            ];
            if r.status != 0 {
                attributes.push(otlp::int_attr(
                    "http.response.status_code",
                    i64::from(r.status),
                ));
            }
            if r.timed_out {
                attributes.push(otlp::string_attr("error.type", "timeout"));
            }
            let status = (r.status >= 500 || r.timed_out).then(|| otlp::Status {
                message: String::new(),
                code: otlp::STATUS_CODE_ERROR,
            });
            otlp::Span {
                trace_id: r.trace_id.to_vec(),
                span_id: r.span_id.to_vec(),
                parent_span_id: r.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
                name: format!("{} {}", r.method, r.path),
                kind: otlp::SPAN_KIND_SERVER,
                start_time_unix_nano: r.start_unix_nanos,
                end_time_unix_nano: r.end_unix_nanos,
                attributes,
                status,
            }
        })
        .collect();
    otlp::ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(otlp::Resource {
                attributes: vec![otlp::string_attr("service.name", service_name)],
            }),
            scope_spans: vec![otlp::ScopeSpans {
                scope: Some(otlp::InstrumentationScope {
                    name: "modelgate-wasm-filter".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                }),
                spans,
            }],
        }],
    }
    .encode_to_vec()
}

/// A batch on its way, or waiting to be retried.
#[derive(Debug)]
struct Batch {
    spans: Vec<SpanRecord>,
    attempts: u32,
}

/// What became of a finished export call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Accepted: this many spans were exported.
    Exported(usize),
    /// Failed; kept for a retry.
    WillRetry,
    /// Failed for the last time: this many spans were dropped.
    Dropped(usize),
    /// Not the call in flight (late or unknown answer): ignored.
    Unknown,
}

/// The bounded span buffer and the one export call in flight.
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<SpanRecord>,
    capacity: usize,
    batch_max: usize,
    max_retries: u32,
    retry: Option<Batch>,
    in_flight: Option<(u32, u64, Batch)>,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` spans (plus one batch in
    /// flight), exporting at most `batch_max` per call.
    pub fn new(capacity: usize, batch_max: usize, max_retries: u32) -> Self {
        Self {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            batch_max: batch_max.max(1),
            max_retries,
            retry: None,
            in_flight: None,
        }
    }

    /// Buffers a span; returns how many old spans were dropped for it (0 or 1).
    pub fn push(&mut self, span: SpanRecord) -> usize {
        let mut dropped = 0;
        if self.queue.len() >= self.capacity {
            self.queue.pop_front();
            dropped = 1;
        }
        self.queue.push_back(span);
        dropped
    }

    /// Spans waiting (not counting the batch in flight).
    pub fn queued(&self) -> usize {
        self.queue.len() + self.retry.as_ref().map_or(0, |b| b.spans.len())
    }

    /// Whether an export call is in flight.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The next batch to send, if nothing is in flight: the retry first.
    /// Hand it back with `sent` or `not_sent`.
    pub fn take_batch(&mut self) -> Option<Vec<SpanRecord>> {
        if self.in_flight.is_some() {
            return None;
        }
        if let Some(batch) = &mut self.retry {
            return Some(std::mem::take(&mut batch.spans));
        }
        if self.queue.is_empty() {
            return None;
        }
        let n = self.queue.len().min(self.batch_max);
        self.retry = Some(Batch {
            spans: Vec::new(),
            attempts: 0,
        });
        Some(self.queue.drain(..n).collect())
    }

    /// The batch went out as call `token` at `now_nanos`.
    pub fn sent(&mut self, spans: Vec<SpanRecord>, token: u32, now_nanos: u64) {
        let attempts = self.retry.take().map_or(0, |b| b.attempts);
        self.in_flight = Some((token, now_nanos, Batch { spans, attempts }));
    }

    /// The host refused to dispatch the batch: counts as a failed attempt.
    pub fn not_sent(&mut self, spans: Vec<SpanRecord>) -> Settled {
        let attempts = self.retry.take().map_or(0, |b| b.attempts);
        self.fail(Batch { spans, attempts })
    }

    /// The answer to call `token`.
    pub fn settle(&mut self, token: u32, ok: bool) -> Settled {
        match self.in_flight.take() {
            Some((t, _, batch)) if t == token => {
                if ok {
                    Settled::Exported(batch.spans.len())
                } else {
                    self.fail(batch)
                }
            }
            other => {
                self.in_flight = other;
                Settled::Unknown
            }
        }
    }

    /// Gives up on a call in flight for longer than `deadline_nanos` (the host
    /// never answered): it counts as a failure.
    pub fn expire(&mut self, now_nanos: u64, deadline_nanos: u64) -> Option<Settled> {
        let (token, started, _) = self.in_flight.as_ref()?;
        if now_nanos.saturating_sub(*started) < deadline_nanos {
            return None;
        }
        let token = *token;
        Some(self.settle(token, false))
    }

    fn fail(&mut self, mut batch: Batch) -> Settled {
        batch.attempts += 1;
        if batch.attempts > self.max_retries || batch.spans.is_empty() {
            Settled::Dropped(batch.spans.len())
        } else {
            self.retry = Some(batch);
            Settled::WillRetry
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(n: u8) -> SpanRecord {
        SpanRecord {
            trace_id: [n; 16],
            span_id: [n; 8],
            parent_id: None,
            start_unix_nanos: 1,
            end_unix_nanos: 2,
            method: "GET".into(),
            path: "/risk-score".into(),
            status: 200,
            version: "v1.2".into(),
            timed_out: false,
        }
    }

    #[test]
    fn full_buffer_drops_the_oldest() {
        let mut out = Outbox::new(2, 10, 0);
        assert_eq!(out.push(span(1)), 0);
        assert_eq!(out.push(span(2)), 0);
        assert_eq!(out.push(span(3)), 1);
        let batch = out.take_batch().unwrap();
        assert_eq!(
            batch.iter().map(|s| s.span_id[0]).collect::<Vec<_>>(),
            [2, 3]
        );
    }

    #[test]
    fn batches_are_bounded_and_one_at_a_time() {
        let mut out = Outbox::new(100, 3, 1);
        for n in 0..5 {
            out.push(span(n));
        }
        let batch = out.take_batch().unwrap();
        assert_eq!(batch.len(), 3);
        out.sent(batch, 7, 0);
        assert!(out.take_batch().is_none());
        assert_eq!(out.settle(8, true), Settled::Unknown);
        assert_eq!(out.settle(7, true), Settled::Exported(3));
        assert_eq!(out.take_batch().unwrap().len(), 2);
    }

    #[test]
    fn failures_retry_then_drop() {
        let mut out = Outbox::new(100, 10, 1);
        out.push(span(1));
        let batch = out.take_batch().unwrap();
        out.sent(batch, 1, 0);
        assert_eq!(out.settle(1, false), Settled::WillRetry);
        assert_eq!(out.queued(), 1);
        let batch = out.take_batch().unwrap();
        assert_eq!(out.not_sent(batch), Settled::Dropped(1));
        assert_eq!(out.queued(), 0);
        assert!(out.take_batch().is_none());
    }

    #[test]
    fn a_call_never_answered_expires() {
        let mut out = Outbox::new(100, 10, 0);
        out.push(span(1));
        let batch = out.take_batch().unwrap();
        out.sent(batch, 1, 100);
        assert_eq!(out.expire(150, 100), None);
        assert_eq!(out.expire(200, 100), Some(Settled::Dropped(1)));
        assert!(!out.busy());
    }

    #[test]
    fn encodes_the_collector_attributes() {
        let mut s = span(1);
        s.status = 504;
        s.timed_out = true;
        s.parent_id = Some([9; 8]);
        let bytes = encode("lending-api", &[s]);
        let req = otlp::ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, otlp::SPAN_KIND_SERVER);
        assert_eq!(span.parent_span_id, vec![9; 8]);
        assert_eq!(span.status.as_ref().unwrap().code, otlp::STATUS_CODE_ERROR);
        assert!(span
            .attributes
            .contains(&otlp::string_attr("error.type", "timeout")));
        assert!(span
            .attributes
            .contains(&otlp::int_attr("http.response.status_code", 504)));
    }
}
