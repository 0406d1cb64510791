//! A channel that refuses answers that are not gRPC, keeping what answered.
//!
//! Pointed at the admin port (or the OTLP/HTTP one), a gRPC client gets an
//! HTTP 404 with a JSON or text body, which tonic reports as a "protocol
//! error: invalid compression flag". This wrapper looks at the response
//! head first: anything but `application/grpc` becomes a [`NotGrpc`] error
//! holding the HTTP status and the start of the body, from which the client
//! tells the user which port it reached and which one it wanted. It reads
//! at most [`BODY_PREFIX`] bytes of such a body and never touches a gRPC
//! response.

use std::task::{Context, Poll};

use http_body_util::BodyExt as _;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::transport::Channel;

use super::ClientError;

/// Bytes of a non-gRPC body kept to recognise what answered.
const BODY_PREFIX: usize = 512;

/// The response was not gRPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a gRPC answer: HTTP {status}, content-type {content_type:?}: {body:?}")]
pub struct NotGrpc {
    /// The HTTP status.
    pub status: u16,
    /// The `content-type`, empty when missing.
    pub content_type: String,
    /// The start of the body, as text.
    pub body: String,
}

impl NotGrpc {
    /// What answered, in the words of [`ClientError`]: a proxy's 502, 503
    /// or 504 is the collector being away (worth retrying); anything else
    /// is the wrong address, named when it is one of modelgate's own ports.
    pub fn to_error(&self, url: String) -> ClientError {
        if matches!(self.status, 502..=504) {
            return ClientError::Unreachable {
                url,
                message: format!("HTTP {} from a proxy: {}", self.status, self.body),
            };
        }
        let what = if self.body.contains("/api/v1/verdict") {
            "this is modelgate's admin port (dashboard, /metrics, /api/v1 over HTTP)".to_owned()
        } else if self.body.contains("OTLP/HTTP receiver") {
            "this is modelgate's OTLP/HTTP port".to_owned()
        } else {
            format!(
                "an HTTP server answered {} ({})",
                self.status,
                if self.content_type.is_empty() {
                    "no content-type"
                } else {
                    &self.content_type
                }
            )
        };
        ClientError::WrongService {
            url,
            detail: format!(
                "{what}; point at the OTLP/gRPC port (receiver.grpc_listen, 4317 by default)"
            ),
        }
    }

    async fn read(response: http::Response<Body>) -> Self {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut body = response.into_body();
        let mut prefix = Vec::new();
        while prefix.len() < BODY_PREFIX {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = BODY_PREFIX - prefix.len();
                        prefix.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                _ => break,
            }
        }
        let body = String::from_utf8_lossy(&prefix)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            status,
            content_type,
            body,
        }
    }
}

fn is_grpc(response: &http::Response<Body>) -> bool {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"))
}

/// A [`Channel`] whose non-gRPC answers are [`NotGrpc`] errors.
#[derive(Debug, Clone)]
pub struct GrpcOnly(pub Channel);

impl Service<http::Request<Body>> for GrpcOnly {
    type Response = http::Response<Body>;
    type Error = StdError;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let call = self.0.call(request);
        Box::pin(async move {
            let response = call.await?;
            if is_grpc(&response) {
                Ok(response)
            } else {
                Err(NotGrpc::read(response).await.into())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> NotGrpc {
        NotGrpc {
            status,
            content_type: "application/json".into(),
            body: body.into(),
        }
    }

    #[test]
    fn modelgates_own_ports_are_named() {
        let admin = answer(
            404,
            r#"{"error":"no such path; see / (dashboard), /api/v1/versions, /api/v1/verdict, /metrics"}"#,
        )
        .to_error("http://127.0.0.1:9464".into());
        assert!(matches!(admin, ClientError::WrongService { .. }));
        let text = admin.to_string();
        assert!(text.contains("admin port"), "{text}");
        assert!(text.contains("4317"), "{text}");
        let otlp_http = answer(
            404,
            "modelgate's OTLP/HTTP receiver serves POST /v1/traces and POST /v1/logs",
        )
        .to_error("u".into());
        assert!(
            otlp_http.to_string().contains("OTLP/HTTP port"),
            "{otlp_http}"
        );
        let other = answer(404, "<html>").to_error("u".into());
        assert!(
            other
                .to_string()
                .contains("HTTP server answered 404 (application/json)"),
            "{other}"
        );
    }

    #[test]
    fn a_proxys_unavailable_is_worth_retrying() {
        let away = answer(503, "no healthy upstream").to_error("u".into());
        assert!(away.is_transient(), "{away}");
    }

    #[test]
    fn a_not_grpc_error_survives_tonic() {
        // tonic keeps the transport's error as the status' source.
        let status =
            tonic::Status::from_error(Box::new(answer(404, "{\"error\":\"/api/v1/verdict\"}")));
        let error = ClientError::from_status(&status, "u", false);
        assert!(error.to_string().contains("admin port"), "{error}");
    }
}
