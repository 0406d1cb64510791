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
//!   `RetryInfo`; an accepted request is re-encoded from tonic's decoded
//!   message and queued for [`crate::forward`].
//!
//! tonic's decoder answers an oversized message with `OUT_OF_RANGE` and an
//! undecodable one with `INTERNAL`; [`OtlpStatus`] rewrites those two codes
//! (which the export handler itself never returns) to the OTLP ones and
//! counts the refusal. This is the only module that makes gRPC status codes
//! for OTLP; it must never hold a request waiting for the aggregator.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::{HeaderValue, Request as HttpRequest, Response as HttpResponse};
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::Service;

use crate::config::ExtractConfig;
use crate::extract::extract;
use crate::forward::{ForwardError, ForwardHandle, Signal, REFUSAL_RETRY_DELAY};
use crate::pipeline::{IngestError, PipelineHandle};
use crate::receive::hand_over;
use crate::telemetry::{RefusedReason, Telemetry};

/// The `TraceService` implementation: decode (by tonic), extract, hand over.
#[derive(Debug, Clone)]
pub struct TraceReceiver {
    pipeline: PipelineHandle,
    extract: Arc<ExtractConfig>,
    forward: Option<ForwardHandle>,
}

impl TraceReceiver {
    /// The tonic service, with OTLP status codes, gzip and the size limit.
    pub fn service(
        pipeline: PipelineHandle,
        extract: ExtractConfig,
        max_message_bytes: usize,
        forward: Option<ForwardHandle>,
    ) -> OtlpStatus<TraceServiceServer<TraceReceiver>> {
        let telemetry = pipeline.telemetry().clone();
        let server = TraceServiceServer::new(TraceReceiver {
            pipeline,
            extract: Arc::new(extract),
            forward,
        })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes);
        OtlpStatus {
            inner: server,
            telemetry,
        }
    }
}

#[tonic::async_trait]
impl TraceService for TraceReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let request = request.into_inner();
        let mut samples = Vec::new();
        let report = extract(&request, &self.extract, &mut samples);
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
            slot.send(Signal::Traces, request.encode_to_vec().into());
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
