//! The admin HTTP port: the dashboard at `/`, `/metrics`, the query API as
//! JSON under `/api/v1/`, `/healthz` and `/readyz`.
//!
//! Two routes write: `POST /api/v1/baseline` and `POST /api/v1/alerts/ack`
//! (JSON bodies; they reach these handlers only with the token, see
//! [`crate::auth`]).
//!
//! JSON bodies are the proto3 JSON mapping of `modelgate.v1` (proto field
//! names; 64-bit integers as strings, enums by name), so a client can switch
//! between gRPC and JSON without translating; the one exception is
//! `/api/v1/history`, the dashboard's own view (see [`super::history`]). Bad query parameters get a 400
//! with a JSON body naming the problem. Handlers only ask the pipeline task;
//! they never hold state.
//!
//! `/api/v1/regressions` and `/api/v1/verdict` carry a strong `ETag` (a hash
//! of the body) and answer `304 Not Modified` to an `If-None-Match` naming
//! it: the edge filter polls them several times a second, and while nothing
//! changes a poll costs no body to send or to parse.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use modelgate_proto::v1 as pb;
use serde::Deserialize;

use crate::emit::{api, dashboard, prometheus};
use crate::judge::ActionError;
use crate::pipeline::PipelineHandle;

/// How long `/readyz` waits for the pipeline task.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The admin routes, the dashboard's among them.
pub fn router(pipeline: PipelineHandle) -> Router {
    Router::new()
        .merge(dashboard::routes())
        .route("/metrics", get(metrics))
        .route("/api/v1/versions", get(versions))
        .route("/api/v1/verdict", get(verdict))
        .route("/api/v1/regressions", get(regressions))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/history", get(history))
        .route("/api/v1/baseline", post(set_baseline))
        .route("/api/v1/alerts/ack", post(acknowledge))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such path; see / (dashboard), /api/v1/versions, /api/v1/verdict, /api/v1/regressions, /api/v1/alerts, /api/v1/history, /metrics") })
        .with_state(pipeline)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the pipeline is not running",
    )
}

/// `value` as JSON with a strong `ETag` of its bytes, or `304 Not Modified`
/// (no body) when the request's `If-None-Match` names that tag.
fn json_with_etag<T: serde::Serialize>(request: &HeaderMap, value: &T) -> Response {
    let Ok(body) = serde_json::to_vec(value) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the answer",
        );
    };
    // A fixed-key hash: the same body gets the same tag in every process,
    // so pollers keep their tag across a collector restart.
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hasher::write(&mut hasher, &body);
    let etag = format!("\"{:016x}\"", std::hash::Hasher::finish(&hasher));
    let Ok(tag) = HeaderValue::from_str(&etag) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot tag the answer");
    };
    let matches = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        // If-None-Match compares weakly: a `W/` tag matches its strong twin.
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag);
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, tag),
        ],
        body,
    )
        .into_response()
}

/// Bytes per chunk of the streamed `/metrics` body.
const METRICS_CHUNK: usize = 64 * 1024;

async fn metrics(State(pipeline): State<PipelineHandle>) -> Response {
    let Ok(snapshot) = pipeline.metrics().await else {
        return unavailable();
    };
    // Encoding 100k series takes a while and hundreds of megabytes of text:
    // encode on a blocking thread and stream it out chunk by chunk.
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(4);
    tokio::task::spawn_blocking(move || {
        let mut writer = prometheus::ChunkWriter::new(METRICS_CHUNK, tx);
        // An error means the scraper went away; nothing else to do.
        if prometheus::encode_into(snapshot, &mut writer).is_ok() {
            let _ = writer.finish();
        }
    });
    let body = axum::body::Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>),
    );
    ([(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], body).into_response()
}

/// Filters of `/api/v1/versions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionsParams {
    #[serde(default)]
    service: String,
    #[serde(default)]
    endpoint: String,
}

async fn versions(
    State(pipeline): State<PipelineHandle>,
    params: Result<Query<VersionsParams>, QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let request = pb::ListVersionsRequest {
        service: p.service,
        endpoint: p.endpoint,
    };
    match pipeline.versions(request).await {
        Ok(r) => Json(r).into_response(),
        Err(_) => unavailable(),
    }
}

/// Parameters of `/api/v1/verdict`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerdictParams {
    service: String,
    candidate: String,
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    baseline: String,
    /// Overrides `judge.sla.limit` for this verdict: a duration, `150ms`.
    sla: Option<String>,
    /// Overrides every rule's `min_samples` for this verdict.
    min_samples: Option<u64>,
}

/// The JSON name of a `GetVerdictRequest` override field.
fn param_name(field: &str) -> &str {
    match field {
        "sla_limit_ms" => "sla",
        other => other,
    }
}

async fn verdict(
    State(pipeline): State<PipelineHandle>,
    headers: HeaderMap,
    params: Result<Query<VerdictParams>, QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} (parameters: service, candidate, optional endpoint, baseline, sla and min_samples)",
                    e.body_text()
                ),
            )
        }
    };
    let sla_limit_ms = match p.sla.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d.as_secs_f64() * 1e3),
        Some(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("sla: {e} (a duration such as 150ms)"),
            )
        }
    };
    let request = pb::GetVerdictRequest {
        service: p.service,
        candidate_version: p.candidate,
        endpoint: p.endpoint,
        baseline_version: p.baseline,
        sla_limit_ms,
        min_samples: p.min_samples,
    };
    let overrides = match api::overrides(&request) {
        Ok(o) => o,
        Err((field, e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{}: {e}", param_name(field)),
            )
        }
    };
    match pipeline.verdict(request, overrides).await {
        Ok(r) => json_with_etag(&headers, &r),
        Err(_) => unavailable(),
    }
}

/// Filter of `/api/v1/regressions` and `/api/v1/alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceParam {
    #[serde(default)]
    service: String,
}

async fn regressions(
    State(pipeline): State<PipelineHandle>,
    headers: HeaderMap,
    params: Result<Query<ServiceParam>, QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match pipeline
        .regressions(pb::ListRegressionsRequest { service: p.service })
        .await
    {
        Ok(r) => json_with_etag(&headers, &r),
        Err(_) => unavailable(),
    }
}

/// The dashboard's history: per endpoint and version, the points of the last
/// evaluation ticks; regressions firing and past.
async fn history(
    State(pipeline): State<PipelineHandle>,
    params: Result<Query<ServiceParam>, QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match pipeline.history(p.service).await {
        Ok(view) => Json(view).into_response(),
        Err(_) => unavailable(),
    }
}

/// Server-sent events, one `alert` event per state change.
async fn alerts(
    State(pipeline): State<PipelineHandle>,
    params: Result<Query<ServiceParam>, QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(api::alert_events(&pipeline, p.service).filter_map(|e| {
            // Serializing a generated message cannot fail; skip if it ever does.
            std::future::ready(Event::default().event("alert").json_data(&e).ok().map(Ok))
        }));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Body of `POST /api/v1/baseline`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineBody {
    service: String,
    /// Unset or empty: every endpoint of the service.
    #[serde(default)]
    endpoint: Option<String>,
    version: String,
}

/// The answer of a write: 200 with the result, 400 for a bad request, 404
/// when there is nothing to act on.
fn action<T: serde::Serialize>(
    answer: Result<Result<T, ActionError>, crate::pipeline::QueryError>,
) -> Response {
    match answer {
        Ok(Ok(r)) => Json(r).into_response(),
        Ok(Err(e @ ActionError::NoSuchAlert { .. })) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(_) => unavailable(),
    }
}

async fn set_baseline(
    State(pipeline): State<PipelineHandle>,
    body: Result<Json<BaselineBody>, JsonRejection>,
) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} (body: {{\"service\", \"endpoint\" (optional), \"version\"}})",
                    e.body_text()
                ),
            )
        }
    };
    let request = pb::SetBaselineRequest {
        service: b.service,
        endpoint: b.endpoint.unwrap_or_default(),
        version: b.version,
    };
    action(pipeline.set_baseline(request).await)
}

/// Body of `POST /api/v1/alerts/ack`: an alert as `/api/v1/regressions`
/// names it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    service: String,
    endpoint: String,
    candidate: String,
    rule: String,
}

async fn acknowledge(
    State(pipeline): State<PipelineHandle>,
    body: Result<Json<AckBody>, JsonRejection>,
) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} (body: {{\"service\", \"endpoint\", \"candidate\", \"rule\"}})",
                    e.body_text()
                ),
            )
        }
    };
    let request = pb::AcknowledgeAlertRequest {
        service: b.service,
        endpoint: b.endpoint,
        candidate_version: b.candidate,
        rule: b.rule,
    };
    action(pipeline.acknowledge(request).await)
}

async fn readyz(State(pipeline): State<PipelineHandle>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, pipeline.ping()).await {
        Ok(Ok(())) => "ready\n".into_response(),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pipeline task is not answering",
        ),
    }
}
