//! The admin HTTP port: the dashboard at `/`, `/metrics`, the query API as
//! JSON under `/api/v1/`, `/healthz` and `/readyz`.
//!
//! Three routes write: `POST /api/v1/baseline`, `POST /api/v1/alerts/ack`
//! and `POST /api/v1/verdict/reset` (JSON bodies; they reach these handlers
//! only with the token, see [`crate::auth`]).
//!
//! JSON bodies are the proto3 JSON mapping of `modelgate.v1` (proto field
//! names; 64-bit integers as strings, enums by name), so a client can switch
//! between gRPC and JSON without translating; the one exception is
//! `/api/v1/history`, the dashboard's own view (see [`crate::emit::history`]). Bad query parameters get a 400
//! with a JSON body naming the problem. Handlers only ask the pipeline task;
//! they never hold state.
//!
//! Every answer is gzip-compressed when the request's `Accept-Encoding`
//! asks for it (the dashboard's history at 1,000 series is megabytes of
//! repetitive JSON); `/metrics` is compressed once per encoding and shared
//! like the page itself, and the alert event stream is never compressed
//! (it must reach the client event by event).
//!
//! `/api/v1/regressions` and `/api/v1/verdict` carry a strong `ETag` (a hash
//! of the body) and answer `304 Not Modified` to an `If-None-Match` naming
//! it: the edge filter polls them several times a second, and while nothing
//! changes a poll costs no body to send or to parse.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

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

use crate::emit::{prometheus, scrape};
use crate::judge::ActionError;
use crate::pipeline::PipelineHandle;
use crate::query::api::{self, ApiError};
use crate::query::dashboard;

/// How long `/readyz` waits for the pipeline task.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `/metrics`: one page per `admin.metrics_interval`, shared by every
/// scraper (and bounded by `admin.metrics_max_bytes`), so thirty scrapers,
/// stalled or not, cost one page of memory. Each page is made from the
/// last one, re-encoding only what changed ([`scrape`]).
#[derive(Debug)]
pub struct MetricsPage {
    interval: Duration,
    max_bytes: usize,
    /// What is shown of each series (`emit.prometheus`).
    prometheus: crate::config::PrometheusConfig,
    /// The page, when it was made, and the groups it was made of; locked
    /// while one is made, so the others wait for it instead of making
    /// their own.
    page: tokio::sync::Mutex<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    page: Option<(tokio::time::Instant, Page)>,
    /// Taken while a page is made on a blocking thread.
    pages: scrape::Pages,
}

impl MetricsPage {
    /// Pages of `admin.metrics_interval` and `admin.metrics_max_bytes`,
    /// showing what `emit.prometheus` says of each series.
    pub fn new(
        config: &crate::config::AdminConfig,
        prometheus: crate::config::PrometheusConfig,
    ) -> Self {
        Self {
            interval: config.metrics_interval,
            max_bytes: config.metrics_max_bytes,
            prometheus,
            page: tokio::sync::Mutex::new(Shared::default()),
        }
    }
}

/// One page of `/metrics`, gzip-compressed (Prometheus asks for gzip):
/// compressed once, not once per scraper; as text only once a scraper
/// asks for it so.
#[derive(Debug, Clone)]
struct Page {
    gzip: Bytes,
    /// Its length as text.
    text_len: usize,
    text: Arc<tokio::sync::OnceCell<Bytes>>,
}

/// Why `/metrics` has no page to send.
#[derive(Debug, thiserror::Error)]
enum PageFailure {
    /// The pipeline task is gone.
    #[error("the pipeline is not running")]
    Unavailable,
    /// Encoding or compressing failed.
    #[error(transparent)]
    Page(#[from] scrape::PageError),
    /// The blocking thread making it panicked or was cancelled.
    #[error("the page's thread failed")]
    Thread,
}

/// Makes a page: the pipeline task's slices, one turn each, then the
/// encoding on a blocking thread (on every core).
async fn make_page(
    pipeline: &PipelineHandle,
    metrics: &MetricsPage,
    shared: &mut Shared,
) -> Result<Page, PageFailure> {
    let prometheus = metrics.prometheus;
    let known = Arc::new(shared.pages.known());
    let mut slices = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let known = Arc::clone(&known);
        let from = after.take();
        let slice = pipeline
            .ask(move |s, now| {
                let shape = scrape::Shape {
                    bounds_ms: &s.bounds_ms,
                    dimensions: &s.dimensions,
                    prometheus,
                };
                scrape::slice(&s.aggregator, &s.judge, shape, &known, from.as_deref(), now)
            })
            .await
            .map_err(|_| PageFailure::Unavailable)?;
        after = slice.next.clone();
        slices.push(slice);
        if after.is_none() {
            break;
        }
    }
    let max_bytes = metrics.max_bytes;
    let telemetry = pipeline.telemetry().clone();
    let mut pages = std::mem::take(&mut shared.pages);
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let (pages, made) = tokio::task::spawn_blocking(move || {
        let made = pages.page(slices, telemetry.readings(), max_bytes, threads);
        if let Ok(page) = &made {
            if page.omitted > 0 {
                telemetry.metrics_omitted(page.omitted);
            }
        }
        (pages, made)
    })
    .await
    .map_err(|_| PageFailure::Thread)?;
    shared.pages = pages;
    let made = made?;
    Ok(Page {
        gzip: made.gzip,
        text_len: made.text_len,
        text: Arc::default(),
    })
}

/// Whether `Accept-Encoding` takes gzip (a `q=0` refuses it).
fn accepts_gzip(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// What the admin handlers share.
#[derive(Debug, Clone)]
struct Admin {
    pipeline: PipelineHandle,
    metrics: Arc<MetricsPage>,
}

impl axum::extract::FromRef<Admin> for PipelineHandle {
    fn from_ref(admin: &Admin) -> Self {
        admin.pipeline.clone()
    }
}

impl axum::extract::FromRef<Admin> for Arc<MetricsPage> {
    fn from_ref(admin: &Admin) -> Self {
        admin.metrics.clone()
    }
}

/// The admin routes, the dashboard's among them.
pub fn router(pipeline: PipelineHandle, page: MetricsPage) -> Router {
    Router::new()
        .merge(dashboard::routes())
        .route("/metrics", get(metrics))
        .route("/api/v1/versions", get(versions))
        .route("/api/v1/verdict", get(verdict))
        .route("/api/v1/regressions", get(regressions))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/history", get(history))
        .route("/api/v1/baseline", post(write::<BaselineBody>))
        .route("/api/v1/alerts/ack", post(write::<AckBody>))
        .route("/api/v1/verdict/reset", post(write::<ResetBody>))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such path; see / (dashboard), /api/v1/versions, /api/v1/verdict, /api/v1/regressions, /api/v1/alerts, /api/v1/history, /metrics; writes: POST /api/v1/baseline, /api/v1/alerts/ack, /api/v1/verdict/reset") })
        .with_state(Admin {
            pipeline,
            metrics: Arc::new(page),
        })
        // Its default predicate leaves out small bodies, images, gRPC and
        // `text/event-stream`, and bodies already encoded (`/metrics`).
        .layer(tower_http::compression::CompressionLayer::new())
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

/// An API answer as JSON, or its refusal with the status that fits.
fn answer<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(r) => Json(r).into_response(),
        Err(ApiError::Invalid(m)) => error(StatusCode::BAD_REQUEST, m),
        Err(ApiError::Action(
            e @ (ActionError::NoSuchAlert { .. } | ActionError::NoSuchVerdict { .. }),
        )) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(ApiError::Action(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(ApiError::Unavailable(_)) => unavailable(),
    }
}

/// An API answer as JSON with its `ETag` (see [`json_with_etag`]), or its
/// refusal.
fn answer_tagged<T: serde::Serialize>(
    request: &HeaderMap,
    result: Result<T, ApiError>,
) -> Response {
    match result {
        Ok(value) => json_with_etag(request, &value),
        Err(e) => answer::<()>(Err(e)),
    }
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

async fn metrics(
    State(pipeline): State<PipelineHandle>,
    State(metrics): State<Arc<MetricsPage>>,
    request: HeaderMap,
) -> Response {
    let mut shared = metrics.page.lock().await;
    let fresh = shared
        .page
        .as_ref()
        .filter(|(at, _)| at.elapsed() < metrics.interval)
        .map(|(_, page)| page.clone());
    let encoded = match fresh {
        Some(encoded) => encoded,
        None => match make_page(&pipeline, &metrics, &mut shared).await {
            Ok(page) => {
                shared.page = Some((tokio::time::Instant::now(), page.clone()));
                page
            }
            Err(PageFailure::Unavailable) => return unavailable(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot make /metrics");
                return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode /metrics");
            }
        },
    };
    drop(shared);
    let vary = (header::VARY, HeaderValue::from_static("accept-encoding"));
    let content_type = (
        header::CONTENT_TYPE,
        HeaderValue::from_static(prometheus::CONTENT_TYPE),
    );
    if accepts_gzip(&request) {
        let encoding = (header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        return ([content_type, encoding, vary], encoded.gzip).into_response();
    }
    let (gzip, text_len) = (encoded.gzip.clone(), encoded.text_len);
    // Its members inflated as one stream.
    let text = encoded
        .text
        .get_or_try_init(|| async move {
            let inflate = move || crate::receive::gunzip(&gzip, text_len);
            match tokio::task::spawn_blocking(inflate).await {
                Ok(Ok(text)) => Ok(Bytes::from(text)),
                _ => Err(()),
            }
        })
        .await;
    match text {
        Ok(text) => ([content_type, vary], text.clone()).into_response(),
        Err(()) => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot decode /metrics"),
    }
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
    answer(api::answer_versions(&pipeline, request).await)
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
    if let Err((field, e)) = api::overrides(&request) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{}: {e}", param_name(field)),
        );
    }
    answer_tagged(&headers, api::answer_verdict(&pipeline, request).await)
}

/// Filter of `/api/v1/history` and `/api/v1/alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceParam {
    #[serde(default)]
    service: String,
}

/// Filters of `/api/v1/regressions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegressionsParams {
    #[serde(default)]
    service: String,
    /// `warning` (the default: everything) or `critical`.
    #[serde(default)]
    min_severity: Option<String>,
}

/// `/api/v1/regressions`, with an `ETag` of its body: a poller (the edge
/// filter polls every few hundred milliseconds) that sends it back in
/// `If-None-Match` gets an empty `304 Not Modified` until something changed.
async fn regressions(
    State(pipeline): State<PipelineHandle>,
    headers: HeaderMap,
    params: Result<Query<RegressionsParams>, QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let min_severity = match p.min_severity.as_deref() {
        None | Some("") | Some("warning") => pb::Severity::Warning,
        Some("critical") => pb::Severity::Critical,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("min_severity: {other:?} is neither warning nor critical"),
            )
        }
    };
    let request = pb::ListRegressionsRequest {
        service: p.service,
        min_severity: min_severity as i32,
    };
    answer_tagged(&headers, api::answer_regressions(&pipeline, request).await)
}

/// Parameters of `/api/v1/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    /// Only this service; every service when empty.
    #[serde(default)]
    service: String,
    /// Only points newer than this (unix ms): what a page that already has
    /// the points up to `since` needs to be current.
    since: Option<u64>,
}

/// The body of `/api/v1/history`: the history view, the points after
/// `since` only when asked, and every candidate's verdict.
#[derive(Debug, serde::Serialize)]
struct HistoryAnswer {
    #[serde(flatten)]
    view: crate::emit::history::HistoryView,
    /// The `since` asked (the points are those after it), `null` for all.
    since_unix_ms: Option<u64>,
    verdicts: Vec<crate::emit::views::CandidateVerdict>,
}

/// The dashboard's history: per endpoint and version, the points of the last
/// evaluation ticks (after `since` when given: a page refreshing asks only
/// for the points it lacks); regressions firing and past; verdicts.
async fn history(
    State(pipeline): State<PipelineHandle>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} (parameters: optional service, and since: unix milliseconds)",
                    e.body_text()
                ),
            )
        }
    };
    let answer = pipeline
        .ask(move |s, now| {
            let mut view = s.history.view(
                &s.judge,
                &p.service,
                s.evaluation_interval.as_millis() as u64,
                s.window_ms,
                now,
            );
            if let Some(since) = p.since {
                for version in view.endpoints.iter_mut().flat_map(|e| &mut e.versions) {
                    version.points.retain(|point| point.unix_ms > since);
                }
            }
            HistoryAnswer {
                view,
                since_unix_ms: p.since,
                verdicts: crate::emit::views::candidate_verdicts(&s.judge, &p.service),
            }
        })
        .await;
    match answer {
        Ok(answer) => Json(answer).into_response(),
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

/// A write's JSON body: what it must look like (for the error) and the
/// API call it stands for.
trait WriteBody: serde::de::DeserializeOwned + Send + 'static {
    /// The body's fields, as a refusal names them.
    const SHAPE: &'static str;
    /// The `modelgate.v1` answer.
    type Answer: serde::Serialize;
    /// The API call (`query::api`), as the gRPC service makes it.
    fn answer(
        self,
        pipeline: &PipelineHandle,
    ) -> impl std::future::Future<Output = Result<Self::Answer, ApiError>> + Send;
}

/// A write: its body's API call answered, or the 400 that names what was
/// wrong with the body and what it must be.
async fn write<B: WriteBody>(
    State(pipeline): State<PipelineHandle>,
    body: Result<Json<B>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(b)) => answer(b.answer(&pipeline).await),
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("{} (body: {})", e.body_text(), B::SHAPE),
        ),
    }
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

impl WriteBody for BaselineBody {
    const SHAPE: &'static str = r#"{"service", "endpoint" (optional), "version"}"#;
    type Answer = pb::SetBaselineResponse;
    fn answer(
        self,
        pipeline: &PipelineHandle,
    ) -> impl std::future::Future<Output = Result<Self::Answer, ApiError>> + Send {
        let request = pb::SetBaselineRequest {
            service: self.service,
            endpoint: self.endpoint.unwrap_or_default(),
            version: self.version,
        };
        api::answer_set_baseline(pipeline, request)
    }
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
    /// A generative model's phase; the request when absent.
    #[serde(default)]
    phase: String,
}

impl WriteBody for AckBody {
    const SHAPE: &'static str =
        r#"{"service", "endpoint", "candidate", "rule", "phase" (optional)}"#;
    type Answer = pb::AcknowledgeAlertResponse;
    fn answer(
        self,
        pipeline: &PipelineHandle,
    ) -> impl std::future::Future<Output = Result<Self::Answer, ApiError>> + Send {
        let request = pb::AcknowledgeAlertRequest {
            service: self.service,
            endpoint: self.endpoint,
            candidate_version: self.candidate,
            rule: self.rule,
            phase: self.phase,
        };
        api::answer_acknowledge(pipeline, request)
    }
}

/// Body of `POST /api/v1/verdict/reset`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    service: String,
    candidate: String,
}

impl WriteBody for ResetBody {
    const SHAPE: &'static str = r#"{"service", "candidate"}"#;
    type Answer = pb::ResetVerdictResponse;
    fn answer(
        self,
        pipeline: &PipelineHandle,
    ) -> impl std::future::Future<Output = Result<Self::Answer, ApiError>> + Send {
        let request = pb::ResetVerdictRequest {
            service: self.service,
            candidate_version: self.candidate,
        };
        api::answer_reset_verdict(pipeline, request)
    }
}

/// `200 ok` while every long-lived task runs; `503` naming the one that
/// failed (the process is then shutting down, to exit non-zero).
async fn healthz(State(pipeline): State<PipelineHandle>) -> Response {
    match pipeline.telemetry().failure() {
        None => "ok\n".into_response(),
        Some(failure) => error(StatusCode::SERVICE_UNAVAILABLE, failure),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_taken_unless_refused() {
        let headers = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
            h
        };
        assert!(accepts_gzip(&headers("gzip")));
        assert!(accepts_gzip(&headers("br, GZIP;q=0.5, identity")));
        assert!(accepts_gzip(&headers("*")));
        assert!(!accepts_gzip(&headers("gzip;q=0")));
        assert!(!accepts_gzip(&headers("identity, br")));
        assert!(!accepts_gzip(&HeaderMap::new()));
        let text = "modelgate_request_duration_seconds_bucket{le=\"0.1\"} 1\n".repeat(1000);
        let packed = scrape::gzip(text.as_bytes()).unwrap();
        assert!(packed.len() * 10 < text.len(), "{}", packed.len());
        let out = crate::receive::gunzip(&packed, text.len()).unwrap();
        assert_eq!(out, text.as_bytes());
    }
}
