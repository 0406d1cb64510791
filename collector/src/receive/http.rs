//! OTLP/HTTP: `POST /v1/traces`, `POST /v1/logs` and `POST /v1/metrics`,
//! answering as the OTLP specification says.
//!
//! - Bodies are binary protobuf (`application/x-protobuf`) or OTLP/JSON
//!   (`application/json`); the answer uses the request's encoding. Any
//!   other content type gets `415`.
//! - `Content-Encoding: gzip` is accepted (every member); the body is
//!   capped at `receiver.max_message_bytes` before and after decompression,
//!   and a larger one gets `413` (retrying cannot help).
//! - A body not whole within `receiver.body_timeout` gets `408`; one that
//!   would take the receivers past `receiver.max_bytes_in_flight`, or any
//!   export while over `receiver.memory_limit`, the retryable `503`.
//! - A body that does not decode gets `400` with a `google.rpc.Status`.
//! - A full aggregation queue gets the retryable `503` with `Retry-After`.
//! - With forwarding on, a full forward queue gets the same `503`; an
//!   accepted request is queued for [`crate::forward`] as the received
//!   protobuf bytes (after gunzip), or re-encoded from OTLP/JSON.
//! - Protobuf traces take the gRPC receiver's fast path
//!   ([`crate::extract::wire::scan`], interned series names); JSON, logs
//!   and metrics are decoded in full.
//! - Spans, log records or data points that cannot be used are reported in
//!   `partial_success`, and counted.
//!
//! Like the gRPC receiver it never waits for the aggregator and keeps no
//! state; every refusal is counted in [`crate::telemetry`].

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Serialize;

use crate::receive::{gunzip, BodyError, Encoding, Limits, Receiver, Refused, Reservation};
use crate::signal::Signal;
use crate::telemetry::RefusedReason;

/// Seconds a sender is asked to wait when the queue is full.
const RETRY_AFTER_SECONDS: &str = "1";

/// gRPC code `INVALID_ARGUMENT`, for the `google.rpc.Status` of a `400`.
const INVALID_ARGUMENT: i32 = 3;
/// gRPC code `DEADLINE_EXCEEDED`, for a `408`.
const DEADLINE_EXCEEDED: i32 = 4;
/// gRPC code `RESOURCE_EXHAUSTED`, for a `413`.
const RESOURCE_EXHAUSTED: i32 = 8;
/// gRPC code `UNAVAILABLE`, for a `503`.
const UNAVAILABLE: i32 = 14;

/// `google.rpc.Status`, the body of every OTLP/HTTP error answer.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Option<Self> {
        let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let media = content_type.split(';').next()?.trim();
        if media.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Encoding::Protobuf)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }

    fn respond(self, status: StatusCode, body: Vec<u8>) -> Response {
        (
            status,
            [(header::CONTENT_TYPE, self.content_type())],
            Bytes::from(body),
        )
            .into_response()
    }

    fn error(self, status: StatusCode, code: i32, message: String) -> Response {
        self.respond(status, self.encode(&RpcStatus { code, message }))
    }
}

/// The OTLP/HTTP routes: one per signal.
pub fn router(receiver: Arc<Receiver>) -> Router {
    let mut router = Router::new();
    for signal in Signal::ALL {
        router = router.route(
            signal.http_path(),
            post(move |State(receiver), headers, body| export(receiver, signal, headers, body)),
        );
    }
    router
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "modelgate's OTLP/HTTP receiver serves POST /v1/traces, /v1/logs and /v1/metrics\n",
            )
        })
        .with_state(receiver)
}

/// One export of `signal`: its body read within the limit, then accepted
/// or refused in the OTLP/HTTP terms.
async fn export(
    receiver: Arc<Receiver>,
    signal: Signal,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let telemetry = receiver.telemetry();
    let Some(encoding) = Encoding::of(&headers) else {
        telemetry.refused(RefusedReason::InvalidPayload, 1, "unsupported content type");
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/x-protobuf or application/json\n",
        )
            .into_response();
    };
    let limits = receiver.limits();
    if limits.memory.shedding() {
        let message = "modelgate is over receiver.memory_limit; retry with backoff";
        telemetry.refused(RefusedReason::MemoryLimit, 1, message);
        return unavailable(encoding, message);
    }
    // Held until the answer: the bytes of this request count in flight.
    let (body, _reservation) = match read_body(body, &headers, limits).await {
        Ok(read) => read,
        Err(BodyError::TooLarge) => {
            let message = format!(
                "the request exceeds receiver.max_message_bytes ({} bytes)",
                limits.max_message_bytes
            );
            telemetry.refused(RefusedReason::TooLarge, 1, &message);
            return encoding.error(StatusCode::PAYLOAD_TOO_LARGE, RESOURCE_EXHAUSTED, message);
        }
        Err(BodyError::Invalid(message)) => {
            telemetry.refused(RefusedReason::InvalidPayload, 1, &message);
            return encoding.error(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, message);
        }
        Err(BodyError::Timeout) => {
            let message = format!(
                "the body did not arrive within receiver.body_timeout ({})",
                humantime::format_duration(limits.body_timeout)
            );
            telemetry.refused(RefusedReason::Timeout, 1, &message);
            return encoding.error(StatusCode::REQUEST_TIMEOUT, DEADLINE_EXCEEDED, message);
        }
        Err(BodyError::InFlight) => {
            let message = "modelgate holds receiver.max_bytes_in_flight of other requests; retry with backoff";
            telemetry.refused(RefusedReason::BytesInFlight, 1, message);
            return unavailable(encoding, message);
        }
    };
    match receiver.accept(signal, encoding, body) {
        Ok(answer) => encoding.respond(StatusCode::OK, answer),
        Err(Refused::Invalid(message)) => {
            encoding.error(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, message)
        }
        Err(refused) => unavailable(encoding, refused.message()),
    }
}

/// The retryable `503` with `Retry-After`.
fn unavailable(encoding: Encoding, message: &str) -> Response {
    let mut answer = encoding.error(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE, message.into());
    answer.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    answer
}

/// The body (as received, unless gunzipped), never more than
/// `receiver.max_message_bytes` either way (a small gzip bomb stays small),
/// whole within `receiver.body_timeout`, and its bytes (both copies of a
/// gzipped one) reserved in flight as they come.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limits: &Limits,
) -> Result<(Bytes, Reservation), BodyError> {
    use http_body_util::BodyExt as _;
    let limit = limits.max_message_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut reservation = limits
        .in_flight
        .reserve(declared.unwrap_or(0))
        .ok_or(BodyError::InFlight)?;
    let read = async {
        let mut body = body;
        let mut raw = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            // A body that stopped arriving is not the sender's encoding
            // mistake, but it is not something to retry with the same
            // bytes either.
            let frame = frame.map_err(|e| BodyError::Invalid(format!("reading the body: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let total = raw.len() + data.len();
            if total > limit {
                return Err(BodyError::TooLarge);
            }
            if total > declared.unwrap_or(0) && !reservation.grow(data.len()) {
                return Err(BodyError::InFlight);
            }
            raw.extend_from_slice(&data);
        }
        Ok(raw.freeze())
    };
    let raw = tokio::time::timeout(limits.body_timeout, read)
        .await
        .map_err(|_| BodyError::Timeout)??;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("" | "identity") => Ok((raw, reservation)),
        Some("gzip") => {
            let inflated = gunzip(&raw, limit)?;
            if !reservation.grow(inflated.len()) {
                return Err(BodyError::InFlight);
            }
            Ok((Bytes::from(inflated), reservation))
        }
        Some(other) => Err(BodyError::Invalid(format!(
            "unsupported Content-Encoding {other:?} (gzip or none)"
        ))),
    }
}
