//! The modelgate edge filter: a proxy-wasm HTTP filter for Envoy, Istio and
//! nginx/Kong with ngx_wasm_module (`HOSTS.md`).
//!
//! It stamps each request (request id, W3C `traceparent`, model version),
//! measures its latency at the edge, records Envoy stats per version, exports
//! the measurements to the modelgate collector as OTLP SERVER spans, splits
//! unversioned traffic between a baseline and a canary, and moves that
//! traffic back to the baseline by itself when the collector reports that
//! the canary regressed.
//!
//! It never blocks or fails a request because of its own trouble (fail open)
//! and never panics: a panic traps the VM.
//!
//! # Layout
//! - `exports`: the ABI entry points the host calls, and the context table.
//! - `abi`: the host calls the filter makes, each a `Result` (the only FFI).
//! - `config`: the JSON configuration and its validation (pure).
//! - `http`: one request: stamp, note the response, time and record it.
//! - `stamp`: ids, `traceparent`, the sticky split (pure).
//! - `stats`: Envoy metric names, the per-version id cache (pure).
//! - `root`: the plugin: configure, timer, export calls (gRPC or HTTP).
//! - `export`: span records, the bounded outbox, the OTLP encoding (pure).
//! - `otlp`: the OTLP trace messages the filter sends (prost).
//! - `gzip`: gzip for the OTLP/HTTP export (pure).
//! - `poll`: the poll and the decision the proxy's workers share.
//! - `verdict`: the collector's query API: what to ask, what it said (pure).
//! - `rollback`: the shared decision record and how a verdict moves it (pure).
//!
//! The pure modules are public so their unit tests and the docs can reach
//! them; the filter's behaviour as a whole is tested by running the built
//! `.wasm` in `tests/wasm-host`.

pub mod abi;
pub mod config;
pub mod export;
pub mod exports;
pub mod gzip;
pub mod http;
pub mod otlp;
pub mod poll;
pub mod rollback;
pub mod root;
pub mod stamp;
pub mod stats;
pub mod verdict;
