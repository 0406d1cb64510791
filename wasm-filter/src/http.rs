//! One HTTP request through the filter: stamp it on the way in, note the
//! response, then time, record and buffer it at `on_log`.
//!
//! It must never block or fail a request: every callback returns Continue,
//! a host error leaves the request as it was, and headers are treated as
//! untrusted bytes (any size, any content). It keeps only capped strings.

use crate::abi::{self, LogLevel, MapType};
use crate::export::SpanRecord;
use crate::root::{log, Root};
use crate::stamp::{self, TraceParent};

/// Longest path kept as the span's endpoint.
const MAX_PATH_CHARS: usize = 256;
/// Longest method kept.
const MAX_METHOD_CHARS: usize = 16;
/// Longest sticky-header value hashed (a longer one is hashed by its prefix).
const MAX_STICKY_BYTES: usize = 1024;

/// What the filter remembers about one request between its callbacks.
#[derive(Debug)]
pub struct Request {
    start_unix_nanos: Option<u64>,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    method: String,
    path: String,
    version: String,
    served_version: Option<String>,
    status: u16,
    logged: bool,
}

fn header(map: MapType, name: &str) -> Option<Vec<u8>> {
    abi::get_header(map, name).ok().flatten()
}

fn capped(bytes: &[u8], max_chars: usize) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(max_chars)
        .collect()
}

/// A property the host serializes as an 8-byte little-endian integer
/// (Envoy's durations, timestamps and codes).
fn int_property(path: &[&str]) -> Option<i64> {
    let bytes = abi::get_property(path).ok().flatten()?;
    let bytes: [u8; 8] = bytes.as_slice().try_into().ok()?;
    Some(i64::from_le_bytes(bytes))
}

fn stamp_header(name: &str, value: &str) {
    if let Err(status) = abi::set_header(MapType::RequestHeaders, name, value) {
        log(LogLevel::Debug, &format!("cannot stamp {name}: {status:?}"));
    }
}

impl Request {
    /// `proxy_on_request_headers`: stamps request id, traceparent and
    /// version. `None` when the plugin is not configured (nothing stamped).
    pub fn on_request_headers(root: &mut Root) -> Option<Self> {
        let config = root.config()?;
        let request_id_header = config.request_id_header.clone();
        let version_header = config.version_header.clone();
        let sticky_header = config.sticky_header.clone();
        let basis_points = config.canary_basis_points();

        let start_unix_nanos = abi::now_nanos().ok();

        let request_id = match header(MapType::RequestHeaders, &request_id_header) {
            Some(id) if !id.is_empty() => id,
            _ => {
                let id = root.ids().request_id();
                stamp_header(&request_id_header, &id);
                id.into_bytes()
            }
        };

        let incoming =
            header(MapType::RequestHeaders, "traceparent").and_then(|v| TraceParent::parse(&v));
        let span_id = root.ids().span_id();
        let (trace_id, parent_id) = match incoming {
            // Kept as it came: the edge span is the caller's child.
            Some(tp) => (tp.trace_id, Some(tp.parent_id)),
            None => {
                // Absent or invalid: a new trace whose root is the edge span.
                let trace_id = root.ids().trace_id();
                stamp_header(
                    "traceparent",
                    &stamp::format_traceparent(&trace_id, &span_id),
                );
                (trace_id, None)
            }
        };

        let explicit = header(MapType::RequestHeaders, &version_header)
            .and_then(|v| stamp::valid_version(&v).map(str::to_owned));
        let version = match explicit {
            Some(version) => version,
            None => {
                let sticky = sticky_header
                    .and_then(|h| header(MapType::RequestHeaders, &h))
                    .filter(|v| !v.is_empty());
                let key = sticky.as_deref().unwrap_or(&request_id);
                let key = &key[..key.len().min(MAX_STICKY_BYTES)];
                let choice = stamp::choose(key, basis_points, root.rolled_back());
                let version = root.version_for(choice)?.to_owned();
                stamp_header(&version_header, &version);
                version
            }
        };

        let method = header(MapType::RequestHeaders, ":method").unwrap_or_default();
        let path = header(MapType::RequestHeaders, ":path").unwrap_or_default();
        let path = path.split(|b| *b == b'?').next().unwrap_or_default();
        Some(Self {
            start_unix_nanos,
            trace_id,
            span_id,
            parent_id,
            method: capped(&method, MAX_METHOD_CHARS),
            path: capped(path, MAX_PATH_CHARS),
            version,
            served_version: None,
            status: 0,
            logged: false,
        })
    }

    /// `proxy_on_response_headers`: the status, and the version the upstream
    /// says served the request (it wins over the stamped one).
    pub fn on_response_headers(&mut self, root: &Root) {
        if let Some(status) = header(MapType::ResponseHeaders, ":status") {
            self.status = std::str::from_utf8(&status)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
        if let Some(config) = root.config() {
            self.served_version = header(MapType::ResponseHeaders, &config.version_header)
                .and_then(|v| stamp::valid_version(&v).map(str::to_owned));
        }
    }

    /// `proxy_on_log`: the latency (Envoy's `request.duration` when it has
    /// it, else the host clock since the request headers), stats, and the span.
    pub fn on_log(&mut self, root: &mut Root) {
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        let duration = int_property(&["request", "duration"])
            .and_then(|d| u64::try_from(d).ok())
            .or_else(|| {
                let now = abi::now_nanos().ok()?;
                Some(now.saturating_sub(self.start_unix_nanos?))
            });
        if let Some(code) = int_property(&["response", "code"]) {
            self.status = u16::try_from(code).unwrap_or(self.status);
        }
        let upstream_timeout = abi::get_property(&["response", "code_details"])
            .ok()
            .flatten()
            .is_some_and(|d| d.len() <= 256 && d.windows(7).any(|w| w == b"timeout"));
        let timed_out = upstream_timeout || self.status == 408 || self.status == 504;

        let version = self
            .served_version
            .take()
            .unwrap_or_else(|| self.version.clone());
        root.record(&version, duration.map(|ns| ns / 1_000_000));

        let (Some(duration), Some(start)) = (
            duration,
            self.start_unix_nanos.or_else(|| {
                let now = abi::now_nanos().ok()?;
                Some(now.saturating_sub(duration?))
            }),
        ) else {
            return;
        };
        root.enqueue(SpanRecord {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_id: self.parent_id,
            start_unix_nanos: start,
            end_unix_nanos: start.saturating_add(duration),
            method: std::mem::take(&mut self.method),
            path: std::mem::take(&mut self.path),
            status: self.status,
            version,
            timed_out,
        });
    }
}
