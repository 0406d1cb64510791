//! OTLP/gRPC `TraceService/Export`, `LogsService/Export` and
//! `MetricsService/Export`, answering as the OTLP specification says.
//!
//! - gzip is accepted; the decompressed size is capped by
//!   `receiver.max_message_bytes` and a larger payload gets
//!   `RESOURCE_EXHAUSTED` without `RetryInfo` (retrying cannot help).
//! - A payload that does not decode gets `INVALID_ARGUMENT`.
//! - An empty request is a success.
//! - Spans, log records or data points that cannot be used are counted in
//!   `partial_success`.
//! - A full aggregation queue gets `UNAVAILABLE`, which OTLP clients retry.
//! - With forwarding on, a full forward queue gets `UNAVAILABLE` with
//!   `RetryInfo`; an accepted request is queued for [`crate::forward`] as
//!   the bytes that arrived (after gunzip), never re-encoded.
//!
//! The fast path: the export is one unary call, so this service reads the
//! gRPC message out of the HTTP/2 body itself (`unary_message`) instead
//! of going through tonic's codec, which copies every message into a
//! buffer of its own: a message that came in one DATA frame (senders honour
//! the 1 MiB frames [`crate::serve`] allows) is the very `Bytes` h2 read.
//! [`crate::extract::wire::scan`] reads only the fields the rules need from
//! a trace export (`receive::read_traces`); logs and metrics are decoded
//! (the same reading as OTLP/HTTP's, [`Receiver::accept`]).
//!
//! This is the only module that makes gRPC status codes for OTLP, and it
//! counts every refusal; it must never hold a request waiting for the
//! aggregator.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, StreamBody};
use tonic::body::Body;
use tonic::codegen::http::header::CONTENT_TYPE;
use tonic::codegen::http::{
    HeaderMap, HeaderValue, Request as HttpRequest, Response as HttpResponse,
};
use tonic::metadata::GRPC_CONTENT_TYPE;
use tonic::server::NamedService;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::Service;

use crate::forward::REFUSAL_RETRY_DELAY;
use crate::receive::{gunzip, BodyError, Encoding, Limits, Receiver, Refused, Reservation};
use crate::signal::Signal;
use crate::telemetry::RefusedReason;

/// One OTLP export service: tonic routes by a service's name, a constant,
/// so each signal is a type of its own.
pub trait Export: Send + Sync + 'static {
    /// What it receives.
    const SIGNAL: Signal;
    /// The gRPC service name.
    const NAME: &'static str;
}

/// `opentelemetry.proto.collector.trace.v1.TraceService`.
#[derive(Debug)]
pub enum Traces {}

/// `opentelemetry.proto.collector.logs.v1.LogsService`.
#[derive(Debug)]
pub enum Logs {}

/// `opentelemetry.proto.collector.metrics.v1.MetricsService`.
#[derive(Debug)]
pub enum Metrics {}

impl Export for Traces {
    const SIGNAL: Signal = Signal::Traces;
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl Export for Logs {
    const SIGNAL: Signal = Signal::Logs;
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

impl Export for Metrics {
    const SIGNAL: Signal = Signal::Metrics;
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

/// The `Export` method of signal `S` as a tonic service, with OTLP status
/// codes, gzip and the size limit; its unary call read by
/// `unary_message`.
#[derive(Debug)]
pub struct ExportServer<S> {
    receiver: Arc<Receiver>,
    signal: PhantomData<fn() -> S>,
}

impl<S> Clone for ExportServer<S> {
    fn clone(&self) -> Self {
        Self {
            receiver: self.receiver.clone(),
            signal: PhantomData,
        }
    }
}

impl<S: Export> NamedService for ExportServer<S> {
    const NAME: &'static str = S::NAME;
}

impl<S: Export> ExportServer<S> {
    /// The service of signal `S` on `receiver`.
    pub fn new(receiver: Arc<Receiver>) -> Self {
        Self {
            receiver,
            signal: PhantomData,
        }
    }

    /// One Export call: its message read, accepted, answered.
    async fn answer<B>(self, request: HttpRequest<B>) -> HttpResponse<Body>
    where
        B: tonic::codegen::Body,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let limits = self.receiver.limits();
        let read = if limits.memory.shedding() {
            Err(Refusal::Shedding)
        } else {
            tokio::time::timeout(limits.body_timeout, unary_message(request, limits))
                .await
                .unwrap_or(Err(Refusal::Timeout))
        };
        // Held until the answer: the bytes of this request count in flight.
        let (bytes, _reservation) = match read {
            Ok(read) => read,
            Err(refusal) => {
                let (status, reason) = refusal.status(limits);
                self.receiver
                    .telemetry()
                    .refused(reason, 1, status.message());
                return status.into_http();
            }
        };
        match self.receiver.accept(S::SIGNAL, Encoding::Protobuf, bytes) {
            Ok(answer) => grpc_ok(&answer),
            Err(refused) => status_of(&refused).into_http(),
        }
    }
}

/// The gRPC answer to a refused export: `UNAVAILABLE` is what OTLP clients
/// retry; a full forward queue adds `RetryInfo`.
fn status_of(refused: &Refused) -> Status {
    match refused {
        Refused::Invalid(message) => Status::invalid_argument(message.clone()),
        Refused::ForwardFull => Status::with_error_details(
            Code::Unavailable,
            refused.message(),
            ErrorDetails::with_retry_info(Some(REFUSAL_RETRY_DELAY)),
        ),
        Refused::QueueFull | Refused::Closed => Status::unavailable(refused.message()),
    }
}

/// The flag byte and big-endian length before every gRPC message.
const GRPC_PREFIX_BYTES: usize = 5;

/// Why a unary request's body does not hold one acceptable message.
#[derive(Debug)]
enum Refusal {
    /// Over the limit, compressed or not.
    TooLarge,
    /// Not one well-formed gRPC message.
    Invalid(String),
    /// Compressed with something other than gzip.
    Unsupported(String),
    /// Not whole within `receiver.body_timeout`.
    Timeout,
    /// Over `receiver.max_bytes_in_flight` (retryable).
    InFlight,
    /// Over `receiver.memory_limit` (retryable).
    Shedding,
}

impl Refusal {
    /// The answer and the reason it is counted under.
    fn status(self, limits: &Limits) -> (Status, RefusedReason) {
        let retryable = |message: &str| {
            Status::with_error_details(
                Code::Unavailable,
                message,
                ErrorDetails::with_retry_info(Some(REFUSAL_RETRY_DELAY)),
            )
        };
        match self {
            // Retrying cannot help: no RetryInfo.
            Refusal::TooLarge => (
                Status::resource_exhausted(format!(
                    "the message exceeds receiver.max_message_bytes ({} bytes)",
                    limits.max_message_bytes
                )),
                RefusedReason::TooLarge,
            ),
            Refusal::Timeout => (
                Status::deadline_exceeded(format!(
                    "the message did not arrive within receiver.body_timeout ({})",
                    humantime::format_duration(limits.body_timeout)
                )),
                RefusedReason::Timeout,
            ),
            Refusal::InFlight => (
                retryable("modelgate holds receiver.max_bytes_in_flight of other requests; retry with backoff"),
                RefusedReason::BytesInFlight,
            ),
            Refusal::Shedding => (
                retryable("modelgate is over receiver.memory_limit; retry with backoff"),
                RefusedReason::MemoryLimit,
            ),
            Refusal::Invalid(message) => (
                Status::invalid_argument(message),
                RefusedReason::InvalidPayload,
            ),
            Refusal::Unsupported(encoding) => {
                let mut status = Status::unimplemented(format!(
                    "grpc-encoding {encoding:?} is not supported (gzip or identity)"
                ));
                status.metadata_mut().insert(
                    "grpc-accept-encoding",
                    tonic::metadata::MetadataValue::from_static("gzip"),
                );
                (status, RefusedReason::InvalidPayload)
            }
        }
    }
}

impl From<BodyError> for Refusal {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge => Refusal::TooLarge,
            BodyError::Invalid(message) => Refusal::Invalid(message),
            BodyError::Timeout => Refusal::Timeout,
            BodyError::InFlight => Refusal::InFlight,
        }
    }
}

/// The one message of a unary gRPC request: the bytes h2 read when one DATA
/// frame holds it (later frames, from senders with small frames, are
/// gathered into one copy), gunzipped when flagged so, never more than
/// `limit` bytes either way; the declared length is checked before the
/// rest of the body is read. Its bytes (and the inflated copy) are
/// reserved in `receiver.max_bytes_in_flight` as they come.
async fn unary_message<B>(
    request: HttpRequest<B>,
    limits: &Limits,
) -> Result<(Bytes, Reservation), Refusal>
where
    B: tonic::codegen::Body,
    B::Error: Into<tonic::codegen::StdError>,
{
    let gzip = match request.headers().get("grpc-encoding").map(|v| v.as_bytes()) {
        None | Some(b"identity") => false,
        Some(b"gzip") => true,
        Some(other) => {
            return Err(Refusal::Unsupported(
                String::from_utf8_lossy(other).into_owned(),
            ))
        }
    };
    let limit = limits.max_message_bytes;
    let mut reservation = limits.in_flight.reserve(0).ok_or(Refusal::InFlight)?;
    let mut body = std::pin::pin!(request.into_body());
    let mut first = Bytes::new();
    let mut gathered: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Refusal::Invalid(format!("reading the request: {}", e.into())))?;
        // Request trailers carry nothing for a unary call.
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let chunk = data.copy_to_bytes(data.remaining());
        if chunk.is_empty() {
            // The END_STREAM frame of a sender that learnt late that the
            // body was over.
            continue;
        }
        if !reservation.grow(chunk.len()) {
            return Err(Refusal::InFlight);
        }
        let so_far = match &mut gathered {
            None if first.is_empty() => {
                first = chunk;
                &first[..]
            }
            None => {
                let all = gathered.insert(BytesMut::from(&first[..]));
                all.extend_from_slice(&chunk);
                &all[..]
            }
            Some(all) => {
                all.extend_from_slice(&chunk);
                &all[..]
            }
        };
        if so_far.len() > GRPC_PREFIX_BYTES + limit
            || declared_len(so_far).is_some_and(|n| n > limit)
        {
            return Err(Refusal::TooLarge);
        }
    }
    let body = gathered.map_or(first, BytesMut::freeze);
    let Some(len) = declared_len(&body) else {
        return Err(Refusal::Invalid("the request holds no gRPC message".into()));
    };
    let held = body.len() - GRPC_PREFIX_BYTES;
    if held != len {
        return Err(Refusal::Invalid(format!(
            "the gRPC message declares {len} bytes and {held} came (a unary call holds exactly one message)"
        )));
    }
    let message = body.slice(GRPC_PREFIX_BYTES..);
    match (body.first(), gzip) {
        (Some(0), _) => Ok((message, reservation)),
        (Some(1), true) => {
            let inflated = gunzip(&message, limit)?;
            if !reservation.grow(inflated.len()) {
                return Err(Refusal::InFlight);
            }
            Ok((Bytes::from(inflated), reservation))
        }
        (Some(1), false) => Err(Refusal::Invalid(
            "the gRPC message is flagged compressed but the call has no grpc-encoding".into(),
        )),
        (flag, _) => Err(Refusal::Invalid(format!(
            "invalid gRPC compression flag {flag:?} (0 or 1)"
        ))),
    }
}

/// The length a gRPC message prefix declares, once all of it has come.
fn declared_len(body: &[u8]) -> Option<usize> {
    let prefix: &[u8; GRPC_PREFIX_BYTES] = body.first_chunk()?;
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    usize::try_from(len).ok()
}

/// The successful answer: the encoded response message, uncompressed (a
/// few bytes), then `grpc-status: 0` in the trailers.
fn grpc_ok(response: &[u8]) -> HttpResponse<Body> {
    let mut message = BytesMut::with_capacity(GRPC_PREFIX_BYTES + response.len());
    message.put_u8(0);
    // An answer holds a count and at most a few reasons: far below 4 GiB.
    message.put_u32(u32::try_from(response.len()).unwrap_or(u32::MAX));
    message.put_slice(response);
    let mut trailers = HeaderMap::new();
    trailers.insert(Status::GRPC_STATUS, HeaderValue::from_static("0"));
    let frames = [
        Ok::<_, Infallible>(http_body::Frame::data(message.freeze())),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let mut answer = HttpResponse::new(Body::new(StreamBody::new(futures_util::stream::iter(
        frames,
    ))));
    answer.headers_mut().insert(CONTENT_TYPE, GRPC_CONTENT_TYPE);
    answer
        .headers_mut()
        .insert("grpc-accept-encoding", HeaderValue::from_static("gzip"));
    answer
}

impl<S, B> Service<HttpRequest<B>> for ExportServer<S>
where
    S: Export,
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
        if request.uri().path() != S::SIGNAL.grpc_path() {
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
        let server = self.clone();
        Box::pin(async move { Ok(server.answer(request).await) })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::write::GzEncoder;
    use http_body::Frame;
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    use prost::Message as _;

    use super::*;

    /// A request whose body arrives as `chunks`, one DATA frame each.
    fn request(chunks: &[Bytes], encoding: Option<&'static str>) -> HttpRequest<Body> {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> =
            chunks.iter().cloned().map(|c| Ok(Frame::data(c))).collect();
        let mut request = HttpRequest::new(Body::new(StreamBody::new(futures_util::stream::iter(
            frames,
        ))));
        if let Some(encoding) = encoding {
            request
                .headers_mut()
                .insert("grpc-encoding", HeaderValue::from_static(encoding));
        }
        request
    }

    /// `message` behind a gRPC prefix with compression flag `flag`.
    fn framed(flag: u8, message: &[u8]) -> Bytes {
        let mut bytes = vec![flag];
        bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
        bytes.extend_from_slice(message);
        bytes.into()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn limits() -> Limits {
        let config = crate::config::ReceiverConfig {
            max_message_bytes: 1024,
            ..crate::config::ReceiverConfig::default()
        };
        Limits::new(&config, Arc::new(crate::telemetry::Telemetry::default()))
    }

    async fn read(chunks: &[Bytes], encoding: Option<&'static str>) -> Result<Bytes, Refusal> {
        unary_message(request(chunks, encoding), &limits())
            .await
            .map(|(bytes, _)| bytes)
    }

    #[tokio::test]
    async fn a_message_in_one_frame_is_the_bytes_that_came() {
        let body = framed(0, b"hello");
        let message = read(std::slice::from_ref(&body), None).await.unwrap();
        assert_eq!(&message[..], b"hello");
        assert_eq!(message.as_ptr(), body[GRPC_PREFIX_BYTES..].as_ptr());
        // The empty END_STREAM frame some senders add changes nothing.
        let message = read(&[body.clone(), Bytes::new()], None).await.unwrap();
        assert_eq!(message.as_ptr(), body[GRPC_PREFIX_BYTES..].as_ptr());
    }

    #[tokio::test]
    async fn a_message_in_many_frames_is_gathered() {
        let body = framed(0, b"hello world");
        let chunks: Vec<Bytes> = body.chunks(3).map(Bytes::copy_from_slice).collect();
        let message = read(&chunks, Some("identity")).await.unwrap();
        assert_eq!(&message[..], b"hello world");
    }

    #[tokio::test]
    async fn gzip_is_inflated_within_the_limit() {
        let message = read(&[framed(1, &gzip(b"hello"))], Some("gzip")).await;
        assert_eq!(&message.unwrap()[..], b"hello");
        // A bomb: 512 KiB of zeros in half a kilobyte.
        let bomb = framed(1, &gzip(&[0; 1 << 19]));
        assert!(bomb.len() < 1024 + GRPC_PREFIX_BYTES);
        let refusal = read(&[bomb], Some("gzip")).await.unwrap_err();
        assert!(matches!(refusal, Refusal::TooLarge), "{refusal:?}");
        let refusal = read(&[framed(1, b"not gzip")], Some("gzip"))
            .await
            .unwrap_err();
        assert!(matches!(refusal, Refusal::Invalid(_)), "{refusal:?}");
    }

    #[tokio::test]
    async fn too_large_is_refused_from_the_prefix_or_the_bytes() {
        // Declared too large: refused from the first frame's prefix.
        let mut prefix = vec![0];
        prefix.extend_from_slice(&2000u32.to_be_bytes());
        let refusal = read(&[prefix.into()], None).await.unwrap_err();
        assert!(matches!(refusal, Refusal::TooLarge), "{refusal:?}");
        // Declared small, but more bytes keep coming.
        let mut lying = framed(0, b"x").to_vec();
        lying.extend_from_slice(&[0; 2000]);
        let refusal = read(&[lying.into()], None).await.unwrap_err();
        assert!(matches!(refusal, Refusal::TooLarge), "{refusal:?}");
        let (status, reason) = Refusal::TooLarge.status(&limits());
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status
            .message()
            .contains("receiver.max_message_bytes (1024 bytes)"));
        assert_eq!(reason, RefusedReason::TooLarge);
    }

    #[tokio::test]
    async fn malformed_calls_are_invalid_and_say_why() {
        let cases: [(Vec<Bytes>, Option<&'static str>, &str); 6] = [
            (vec![], None, "no gRPC message"),
            (
                vec![Bytes::from_static(&[0, 0, 0])],
                None,
                "no gRPC message",
            ),
            (
                vec![framed(0, b"hello").slice(..7)],
                None,
                "declares 5 bytes and 2 came",
            ),
            (
                vec![framed(0, b"one"), framed(0, b"two")],
                None,
                "exactly one message",
            ),
            (vec![framed(1, b"hello")], None, "no grpc-encoding"),
            (vec![framed(2, b"hello")], None, "compression flag Some(2)"),
        ];
        for (chunks, encoding, why) in cases {
            match read(&chunks, encoding).await {
                Err(Refusal::Invalid(message)) => assert!(message.contains(why), "{message}"),
                other => panic!("{chunks:?}: {other:?}"),
            }
        }
        let refusal = read(&[framed(1, b"hello")], Some("zstd"))
            .await
            .unwrap_err();
        let (status, reason) = refusal.status(&limits());
        assert_eq!(status.code(), Code::Unimplemented);
        assert!(
            status.message().contains("\"zstd\""),
            "{}",
            status.message()
        );
        assert_eq!(
            status.metadata().get("grpc-accept-encoding").unwrap(),
            "gzip"
        );
        assert_eq!(reason, RefusedReason::InvalidPayload);
    }

    #[tokio::test]
    async fn the_answer_is_one_message_then_an_ok_status() {
        let response = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 2,
                error_message: "two bad spans".into(),
            }),
        };
        let answer = grpc_ok(&response.encode_to_vec());
        assert_eq!(answer.headers()[CONTENT_TYPE], "application/grpc");
        let collected = answer.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()[Status::GRPC_STATUS], "0");
        let body = collected.to_bytes();
        assert_eq!(body[0], 0);
        assert_eq!(declared_len(&body), Some(body.len() - GRPC_PREFIX_BYTES));
        let decoded = ExportTraceServiceResponse::decode(&body[GRPC_PREFIX_BYTES..]).unwrap();
        assert_eq!(decoded, response);
    }
}
