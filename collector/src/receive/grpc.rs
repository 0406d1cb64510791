//! OTLP/gRPC `TraceService/Export`, answering as the OTLP specification says.
//!
//! - gzip is accepted; the decompressed size is capped by
//!   `receiver.max_message_bytes` and a larger payload gets
//!   `RESOURCE_EXHAUSTED` without `RetryInfo` (retrying cannot help).
//! - A payload that does not decode gets `INVALID_ARGUMENT`.
//! - An empty request is a success.
//! - Spans that cannot be used are counted in `partial_success`.
//! - A full aggregation queue gets `UNAVAILABLE`, which OTLP clients retry.
//! - With forwarding on, a full forward queue gets `UNAVAILABLE` with
//!   `RetryInfo`; an accepted request is queued for [`crate::forward`] as
//!   the bytes that arrived (after gunzip), never re-encoded.
//!
//! The fast path: tonic hands the service the request's bytes as they are
//! ([`BytesCodec`], a `tonic::codec::Codec` whose decoder yields the
//! `Bytes` of the frame without copying), [`crate::extract::wire::scan`]
//! reads only the fields the rules need from them, and the samples name
//! their series through this thread's [`Interner`], so a span of a known
//! series allocates nothing. Undecodable bytes get `INVALID_ARGUMENT` from
//! the handler itself.
//!
//! tonic's decoder answers an oversized message with `OUT_OF_RANGE` (and a
//! gzip bomb with `RESOURCE_EXHAUSTED`); [`OtlpStatus`] rewrites those codes
//! (which the export handler itself never returns) to the OTLP ones and
//! counts the refusal, and would do the same for an `INTERNAL` decode error.
//! This is the only module that makes gRPC status codes for OTLP; it must
//! never hold a request waiting for the aggregator.

use std::cell::RefCell;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message as _;
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::{HeaderValue, Request as HttpRequest, Response as HttpResponse};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::Service;

use crate::codec::{BytesCodec, TRACE_EXPORT_PATH};
use crate::config::ExtractConfig;
use crate::extract::{wire, ExtractReport, InternedSample, Interner};
use crate::forward::{ForwardError, ForwardHandle, Signal, REFUSAL_RETRY_DELAY};
use crate::pipeline::{IngestError, PipelineHandle};
use crate::receive::hand_over;
use crate::telemetry::{RefusedReason, Telemetry};

/// Series names each receiving thread keeps before it starts over (a few
/// MiB per thread at most): enough for the hot series of a fleet; beyond
/// it, spans of series not cached cost an allocation, as before interning.
const INTERNED_NAMES: usize = 1 << 13;

/// About the fewest bytes a span of an instrumented request takes on the
/// wire (they take 300 to 1,000), to size a request's sample list up front;
/// a request of smaller spans only grows its list a few times more.
const SPAN_BYTES_AT_LEAST: usize = 256;

thread_local! {
    /// Per thread, so no lock is ever taken on the receive path.
    static INTERNER: RefCell<Interner> = RefCell::new(Interner::new(INTERNED_NAMES));
}

/// Reads an export's protobuf bytes into interned samples, on this thread's
/// interner. Shared by the gRPC and the OTLP/HTTP protobuf receivers.
pub(crate) fn read_traces(
    bytes: &[u8],
    config: &ExtractConfig,
) -> Result<(Vec<InternedSample>, ExtractReport), wire::WireError> {
    INTERNER.with(|interner| {
        let mut interner = interner.borrow_mut();
        // Sized so that the list rarely grows while it is filled.
        let mut samples = Vec::with_capacity(bytes.len() / SPAN_BYTES_AT_LEAST);
        let report = wire::scan(bytes, config, |s| samples.push(interner.intern(&s)))?;
        Ok((samples, report))
    })
}

/// The `TraceService/Export` handler: scan, hand over, forward the bytes.
#[derive(Debug, Clone)]
pub struct TraceReceiver {
    pipeline: PipelineHandle,
    extract: Arc<ExtractConfig>,
    forward: Option<ForwardHandle>,
}

/// [`TraceReceiver`] as a tonic service: the generated `TraceServiceServer`'s
/// routing, with [`BytesCodec`] in place of the prost codec.
#[derive(Debug, Clone)]
pub struct TraceServer {
    receiver: Arc<TraceReceiver>,
    max_message_bytes: usize,
}

impl NamedService for TraceServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl TraceReceiver {
    /// The tonic service, with OTLP status codes, gzip and the size limit.
    pub fn service(
        pipeline: PipelineHandle,
        extract: ExtractConfig,
        max_message_bytes: usize,
        forward: Option<ForwardHandle>,
    ) -> OtlpStatus<TraceServer> {
        let telemetry = pipeline.telemetry().clone();
        let server = TraceServer {
            receiver: Arc::new(TraceReceiver {
                pipeline,
                extract: Arc::new(extract),
                forward,
            }),
            max_message_bytes,
        };
        OtlpStatus {
            inner: server,
            telemetry,
        }
    }

    fn export(&self, bytes: Bytes) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let (samples, report) = read_traces(&bytes, &self.extract).map_err(|e| {
            let message = e.to_string();
            self.pipeline
                .telemetry()
                .refused(RefusedReason::InvalidPayload, 1, &message);
            Status::invalid_argument(message)
        })?;
        // The slot is taken first and filled only once the pipeline took the
        // samples, so an export is forwarded exactly when it is accepted.
        let slot = self
            .forward
            .as_ref()
            .map(ForwardHandle::reserve)
            .transpose()
            .map_err(forward_refused)?;
        let partial = hand_over(&self.pipeline, samples, report, RefusedReason::InvalidSpan)
            .map_err(|e| match e {
                IngestError::Full => Status::unavailable(
                    "modelgate's aggregation queue is full (receiver.queue_batches); retry with backoff",
                ),
                IngestError::Closed => Status::unavailable("modelgate is shutting down"),
            })?;
        if let Some(slot) = slot {
            slot.send(Signal::Traces, bytes);
        }
        let partial_success = partial.map(|p| ExportTracePartialSuccess {
            rejected_spans: p.rejected,
            error_message: p.message,
        });
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success,
        }))
    }
}

/// One Export call.
struct ExportCall(Arc<TraceReceiver>);

impl UnaryService<Bytes> for ExportCall {
    type Response = Bytes;
    type Future = std::future::Ready<Result<Response<Bytes>, Status>>;
    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        // Synchronous on purpose: nothing here waits.
        let answer = self.0.export(request.into_inner());
        std::future::ready(answer.map(|r| r.map(|m| m.encode_to_vec().into())))
    }
}

impl<B> Service<HttpRequest<B>> for TraceServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = HttpResponse<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<HttpResponse<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest<B>) -> Self::Future {
        if request.uri().path() != TRACE_EXPORT_PATH {
            return Box::pin(async move {
                let mut response = HttpResponse::new(Body::default());
                let headers = response.headers_mut();
                headers.insert(Status::GRPC_STATUS, (Code::Unimplemented as i32).into());
                headers.insert(
                    tonic::codegen::http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let method = ExportCall(self.receiver.clone());
        let mut grpc = tonic::server::Grpc::new(BytesCodec)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(self.max_message_bytes);
        Box::pin(async move { Ok(grpc.unary(method, request).await) })
    }
}

/// The retryable answer to an export the forward queue cannot take.
fn forward_refused(e: ForwardError) -> Status {
    match e {
        ForwardError::Full => Status::with_error_details(
            Code::Unavailable,
            "modelgate's forward queue is full (forward.queue_items); retry with backoff",
            ErrorDetails::with_retry_info(Some(REFUSAL_RETRY_DELAY)),
        ),
        ForwardError::Closed => Status::unavailable("modelgate is shutting down"),
    }
}

/// Wraps an OTLP tonic service to answer decode failures with the codes the
/// OTLP specification requires, counting each; see the module docs.
#[derive(Debug, Clone)]
pub struct OtlpStatus<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
}

impl<S: NamedService> NamedService for OtlpStatus<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<HttpRequest<Body>> for OtlpStatus<S>
where
    S: Service<HttpRequest<Body>, Response = HttpResponse<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest<Body>) -> Self::Future {
        let telemetry = self.telemetry.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            // Decode errors come back trailers-only: the status is a header.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(Code::from_i32);
            let rewrite = match code {
                Some(Code::OutOfRange) => Some((Code::ResourceExhausted, RefusedReason::TooLarge)),
                // A gzip bomb: tonic stops decompressing at the limit.
                Some(Code::ResourceExhausted) => {
                    Some((Code::ResourceExhausted, RefusedReason::TooLarge))
                }
                Some(Code::Internal) => {
                    Some((Code::InvalidArgument, RefusedReason::InvalidPayload))
                }
                _ => None,
            };
            if let Some((code, reason)) = rewrite {
                let detail = response
                    .headers()
                    .get("grpc-message")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                telemetry.refused(reason, 1, &detail);
                response
                    .headers_mut()
                    .insert("grpc-status", HeaderValue::from(code as i32));
            }
            Ok(response)
        })
    }
}
