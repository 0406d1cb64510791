//! The dashboard: one HTML page, its stylesheet and its script, compiled into
//! the binary and served on the admin port at `/`.
//!
//! The page draws its charts itself (inline SVG) from `/api/v1/history`:
//! the whole history on its first load, then every few seconds only the
//! points after the newest it holds (`?since=`). Services are grouped by
//! severity; the selection and the search live in the page's address
//! (`/?service=&endpoint=&version=&q=`), so an alert can link to them. It must never load anything from another
//! host (no CDN, no web fonts): the collector often runs where nothing else
//! is reachable, and the `Content-Security-Policy` sent here makes the
//! browser refuse anything off-host. This module holds no state.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page.
pub const INDEX_HTML: &str = include_str!("dashboard/index.html");
/// Its stylesheet.
pub const STYLE_CSS: &str = include_str!("dashboard/dashboard.css");
/// Its script: fetches the history, draws the charts and tables.
pub const SCRIPT_JS: &str = include_str!("dashboard/dashboard.js");

/// Same-origin only: the page works with no network beyond the collector.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `/`, `/dashboard.css` and `/dashboard.js`, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT_JS) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_loads_only_its_own_assets() {
        assert!(INDEX_HTML.contains("src=\"/dashboard.js\""));
        assert!(INDEX_HTML.contains("href=\"/dashboard.css\""));
        assert!(SCRIPT_JS.contains("/api/v1/history"));
        for text in [INDEX_HTML, STYLE_CSS, SCRIPT_JS] {
            // The SVG namespace is a name, not a request.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://"), "no off-host URL");
            assert!(!text.contains("https://"), "no off-host URL");
            assert!(!text.contains("//cdn"), "no CDN");
        }
    }
}
