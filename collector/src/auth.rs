//! Bearer-token authentication for every listener.
//!
//! One token (`auth.token_file` or `auth.token`) guards everything that
//! carries or reveals telemetry: OTLP exports (gRPC and HTTP), the gRPC query
//! API, the admin port's `/api/*` and `/metrics` (it names every service and
//! version; Prometheus sends the token with `authorization: {credentials_file: ...}`).
//! `/healthz`, `/readyz` and the dashboard's static files stay open, so
//! probes need no secret; the dashboard's script sends the token it is given
//! in the page's URL fragment (`/#token=...`). Write operations of the API
//! always need a token: with none configured they are refused (403 /
//! `PERMISSION_DENIED`) with a message saying to configure `auth.token_file`.
//!
//! The comparison is constant-time in the token's content (`subtle`); only
//! its length can leak. Like [`crate::receive`], this module makes protocol
//! answers (401 with `WWW-Authenticate`, `UNAUTHENTICATED`) — for refusals
//! that happen before any receiver or API handler runs.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::future::{BoxFuture, Either};
use subtle::ConstantTimeEq;
use tonic::body::Body;
use tonic::codegen::http::{Request as HttpRequest, Response as HttpResponse};
use tonic::server::NamedService;
use tonic::Status;
use tower::Service;

use crate::config::AuthConfig;

/// The `WWW-Authenticate` challenge of a 401.
const CHALLENGE: &str = "Bearer realm=\"modelgate\"";

/// Why the token could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `auth.token_file` could not be read.
    #[error("cannot read auth.token_file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `auth.token_file` holds only whitespace.
    #[error("auth.token_file {} is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: health probes, the dashboard's static files.
    Open,
    /// The token, when one is configured.
    Token,
    /// The token, and one must be configured: the API's write operations.
    Write,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    #[error("this needs a bearer token: send `authorization: Bearer <token>` (auth.token)")]
    Missing,
    /// A token that is not the configured one.
    #[error("the bearer token is not valid")]
    Wrong,
    /// A write while no token is configured.
    #[error("write operations are refused until a token is configured: set auth.token_file (or auth.token, MODELGATE_AUTH__TOKEN) and send it as `authorization: Bearer <token>`")]
    WritesDisabled,
}

/// The configured token, if any; cheap to clone.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Auth {
    /// The token of `config`, reading `auth.token_file` if that names it.
    pub fn load(config: &AuthConfig) -> Result<Self, AuthError> {
        let token = match (&config.token_file, &config.token) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
                    path: path.clone(),
                    source,
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(AuthError::Empty { path: path.clone() });
                }
                Some(token.to_owned())
            }
            (None, Some(secret)) => Some(secret.0.trim().to_owned()),
            (None, None) => None,
        };
        Ok(Self::with_token(token.as_deref()))
    }

    /// `token`, as given (no file); `None` or empty: no authentication.
    pub fn with_token(token: Option<&str>) -> Self {
        Self {
            token: token
                .filter(|t| !t.is_empty())
                .map(|t| Arc::from(t.as_bytes())),
        }
    }

    /// Whether a token is configured.
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a request with `headers` may do what needs `access`.
    pub fn check(&self, access: Access, headers: &HeaderMap) -> Result<(), Denied> {
        let token = match (access, &self.token) {
            (Access::Open, _) | (Access::Token, None) => return Ok(()),
            (Access::Write, None) => return Err(Denied::WritesDisabled),
            (_, Some(token)) => token,
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()))
            .ok_or(Denied::Missing)?;
        if bool::from(presented.ct_eq(token)) {
            Ok(())
        } else {
            Err(Denied::Wrong)
        }
    }
}

/// The credentials of `Bearer <token>` (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// The admin port's policy: probes and the dashboard's static files are
/// open, anything but GET/HEAD under `/api/` is a write, the rest (`/api/*`
/// reads, `/metrics`, unknown paths) needs the token.
pub fn admin_access(method: &Method, path: &str) -> Access {
    match path {
        "/healthz" | "/readyz" | "/" | "/dashboard.css" | "/dashboard.js" => Access::Open,
        _ if path.starts_with("/api/") && !matches!(*method, Method::GET | Method::HEAD) => {
            Access::Write
        }
        _ => Access::Token,
    }
}

/// The OTLP/HTTP receiver's policy: every path needs the token.
pub fn receiver_access(_: &Method, _: &str) -> Access {
    Access::Token
}

/// The gRPC policy: the query API's writes, and the token for the rest.
pub fn grpc_access(path: &str) -> Access {
    match path {
        "/modelgate.v1.Query/SetBaseline"
        | "/modelgate.v1.Query/AcknowledgeAlert"
        | "/modelgate.v1.Query/ResetVerdict" => Access::Write,
        _ => Access::Token,
    }
}

/// State of [`http_guard`]: the token and the listener's policy.
#[derive(Debug, Clone)]
pub struct HttpGuard {
    auth: Auth,
    policy: fn(&Method, &str) -> Access,
}

impl HttpGuard {
    /// `auth` under `policy`.
    pub fn new(auth: Auth, policy: fn(&Method, &str) -> Access) -> Self {
        Self { auth, policy }
    }

    /// `router` behind this guard.
    pub fn protect(self, router: axum::Router) -> axum::Router {
        router.layer(axum::middleware::from_fn_with_state(self, http_guard))
    }
}

/// axum middleware: refuses with 401 (and `WWW-Authenticate`) or 403.
pub async fn http_guard(State(guard): State<HttpGuard>, request: Request, next: Next) -> Response {
    let access = (guard.policy)(request.method(), request.uri().path());
    match guard.auth.check(access, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            tracing::debug!(path = request.uri().path(), %denied, "request refused");
            http_refusal(denied)
        }
    }
}

fn http_refusal(denied: Denied) -> Response {
    let body = Json(serde_json::json!({ "error": denied.to_string() }));
    match denied {
        Denied::WritesDisabled => (StatusCode::FORBIDDEN, body).into_response(),
        Denied::Missing => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(CHALLENGE),
            )],
            body,
        )
            .into_response(),
        Denied::Wrong => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"modelgate\", error=\"invalid_token\""),
            )],
            body,
        )
            .into_response(),
    }
}

/// The gRPC status of a refusal: `UNAUTHENTICATED`, or `PERMISSION_DENIED`
/// for a write while no token is configured.
pub fn grpc_status(denied: Denied) -> Status {
    match denied {
        Denied::WritesDisabled => Status::permission_denied(denied.to_string()),
        Denied::Missing | Denied::Wrong => Status::unauthenticated(denied.to_string()),
    }
}

/// Wraps a tonic service so that each call is checked with [`grpc_access`]
/// before it reaches the service.
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Auth,
}

impl<S> Authenticated<S> {
    /// `inner` behind `auth`.
    pub fn new(inner: S, auth: Auth) -> Self {
        Self { inner, auth }
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<HttpRequest<Body>> for Authenticated<S>
where
    S: Service<HttpRequest<Body>, Response = HttpResponse<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<HttpResponse<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest<Body>) -> Self::Future {
        let access = grpc_access(request.uri().path());
        match self.auth.check(access, request.headers()) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(denied) => {
                tracing::debug!(path = request.uri().path(), %denied, "call refused");
                let response = grpc_status(denied).into_http::<Body>();
                Either::Right(Box::pin(async move { Ok(response) }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn no_token_opens_everything_but_writes() {
        let auth = Auth::default();
        assert!(!auth.enabled());
        assert_eq!(auth.check(Access::Token, &headers(None)), Ok(()));
        assert_eq!(
            auth.check(Access::Write, &headers(Some("Bearer x"))),
            Err(Denied::WritesDisabled)
        );
    }

    #[test]
    fn a_token_is_required_and_compared() {
        let auth = Auth::with_token(Some("s3cret"));
        assert_eq!(auth.check(Access::Open, &headers(None)), Ok(()));
        assert_eq!(
            auth.check(Access::Token, &headers(None)),
            Err(Denied::Missing)
        );
        assert_eq!(
            auth.check(Access::Token, &headers(Some("Basic czNjcmV0"))),
            Err(Denied::Missing)
        );
        for wrong in ["Bearer s3cre", "Bearer s3cretx", "Bearer S3CRET", "Bearer "] {
            assert_eq!(
                auth.check(Access::Token, &headers(Some(wrong))),
                Err(Denied::Wrong),
                "{wrong}"
            );
        }
        for right in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret "] {
            assert_eq!(auth.check(Access::Token, &headers(Some(right))), Ok(()));
            assert_eq!(auth.check(Access::Write, &headers(Some(right))), Ok(()));
        }
    }

    #[test]
    fn the_token_file_is_read_and_trimmed() {
        let path = std::env::temp_dir().join(format!("modelgate-token-{}", std::process::id()));
        std::fs::write(&path, "  tok\n").unwrap();
        let auth = Auth::load(&AuthConfig {
            token: None,
            token_file: Some(path.clone()),
        })
        .unwrap();
        assert_eq!(
            auth.check(Access::Token, &headers(Some("Bearer tok"))),
            Ok(())
        );
        std::fs::write(&path, "\n").unwrap();
        let err = Auth::load(&AuthConfig {
            token: None,
            token_file: Some(path.clone()),
        })
        .unwrap_err();
        assert!(matches!(err, AuthError::Empty { .. }), "{err}");
        let _ = std::fs::remove_file(&path);
        let err = Auth::load(&AuthConfig {
            token: None,
            token_file: Some("/nonexistent/token".into()),
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("auth.token_file") && err.contains("/nonexistent/token"));
        let auth = Auth::load(&AuthConfig {
            token: Some(Secret("inline".into())),
            token_file: None,
        })
        .unwrap();
        assert!(!format!("{auth:?}").contains("inline"));
    }

    #[test]
    fn policies() {
        assert_eq!(admin_access(&Method::GET, "/healthz"), Access::Open);
        assert_eq!(admin_access(&Method::GET, "/readyz"), Access::Open);
        assert_eq!(admin_access(&Method::GET, "/"), Access::Open);
        assert_eq!(admin_access(&Method::GET, "/metrics"), Access::Token);
        assert_eq!(
            admin_access(&Method::GET, "/api/v1/versions"),
            Access::Token
        );
        assert_eq!(
            admin_access(&Method::POST, "/api/v1/baseline"),
            Access::Write
        );
        assert_eq!(
            admin_access(&Method::POST, "/api/v1/alerts/ack"),
            Access::Write
        );
        assert_eq!(
            grpc_access("/modelgate.v1.Query/SetBaseline"),
            Access::Write
        );
        assert_eq!(
            grpc_access("/modelgate.v1.Query/AcknowledgeAlert"),
            Access::Write
        );
        assert_eq!(
            grpc_access("/modelgate.v1.Query/ResetVerdict"),
            Access::Write
        );
        assert_eq!(
            admin_access(&Method::POST, "/api/v1/verdict/reset"),
            Access::Write
        );
        assert_eq!(
            grpc_access("/modelgate.v1.Query/ListVersions"),
            Access::Token
        );
        assert_eq!(
            grpc_access("/opentelemetry.proto.collector.trace.v1.TraceService/Export"),
            Access::Token
        );
    }

    #[test]
    fn refusals_carry_their_codes() {
        let r = http_refusal(Denied::Missing);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(
            http_refusal(Denied::WritesDisabled).status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            grpc_status(Denied::Wrong).code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            grpc_status(Denied::WritesDisabled).code(),
            tonic::Code::PermissionDenied
        );
    }
}
