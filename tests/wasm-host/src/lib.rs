//! A proxy-wasm host (ABI 0.2.1) on wasmtime, for testing the edge filter.
//!
//! Envoy cannot be installed where the tests run, so the tests load the built
//! `wasm32-wasip1` module here. The host implements the calls the filter
//! makes (header maps, properties, time, metrics, timers, HTTP and gRPC
//! dispatch, logs) plus stubs for the WASI calls Envoy provides, and lets a
//! test drive request lifecycles, advance the clock, fire the timer, and
//! answer or fail dispatched calls, by hand (`take_grpc_calls`,
//! `answer_grpc`, ...) or through callbacks (`pump`) that can forward to a
//! real collector.
//!
//! It must never hide a trap: every guest call returns `HostError::Trap` when
//! the module traps, so a test fails on it. It keeps the clock manual (time is
//! a parameter), and state is per `Host`, so tests run in parallel.
//!
//! # Layout
//! One module per area of the ABI, each linking its own host calls:
//! - `memory`: guest memory, strings and the ABI's serialized maps.
//! - `state`: what the host calls read and write, per VM.
//! - `fields`: header maps, buffers and properties.
//! - `dispatch`: the clock, the timer, and dispatched HTTP and gRPC calls.
//! - `telemetry`: logs and metrics.
//! - `shared`: shared data, and [`Proxy`], workers sharing it.
//! - `wasi`: the WASI calls, and any other import as a host lacking it.
//! - `module`: the built `.wasm`: where it is, its imports and exports.
//! - `host`: [`Host`], one VM: load, configure, timer, failure injection.
//! - `request`: [`RequestSpec`] / [`Exchange`], one request's lifecycle.

mod dispatch;
mod fields;
mod host;
mod memory;
mod module;
mod request;
mod shared;
mod state;
mod telemetry;
mod wasi;

use std::path::PathBuf;

pub use dispatch::{GrpcAnswer, GrpcCall, HttpAnswer, HttpCall};
pub use host::Host;
pub use module::{
    built_module, built_module_path, export_signatures, module_exports, module_imports, Callback,
    ABI_CALLBACKS, ENVOY_WASI_CALLS, MODULE_SUBPATH,
};
pub use request::{Exchange, RequestSpec};
pub use shared::Proxy;
pub use telemetry::{LogLine, Metric};

/// The clock's start: 2025-11-20T17:00:00Z, in unix nanoseconds.
pub const START_UNIX_NANOS: u64 = 1_763_658_000_000_000_000;

/// Errors of the test host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The `.wasm` has not been built.
    #[error("filter module not found at {0}: run scripts/build-wasm first")]
    NotBuilt(PathBuf),
    /// Reading the `.wasm` failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// wasmtime refused the module or its imports.
    #[error("cannot load the module: {0}")]
    Load(String),
    /// The module lacks an export the host needs.
    #[error("the module does not export {0}")]
    MissingExport(&'static str),
    /// The module trapped (a panic, an out-of-bounds access, ...).
    #[error("the filter trapped in {call}: {message}")]
    Trap {
        /// The entry point that trapped.
        call: &'static str,
        /// wasmtime's report.
        message: String,
    },
    /// A dispatched call the host does not know.
    #[error("no pending dispatched call with token {0}")]
    UnknownToken(u32),
}

/// What a host call answers (the ABI's `WasmResult` codes), for injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// 1.
    NotFound = 1,
    /// 2.
    BadArgument = 2,
    /// 3.
    SerializationFailure = 3,
    /// 10.
    InternalFailure = 10,
    /// 12.
    Unimplemented = 12,
}

/// A header map or metadata: ordered `(name, value)` pairs.
pub type Headers = Vec<(String, Vec<u8>)>;

type Result<T, E = HostError> = std::result::Result<T, E>;

/// A header's value as text (names compare case-insensitively).
fn find(headers: &Headers, name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// Text pairs as a header map.
fn to_headers(pairs: &[(String, String)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect()
}

/// A map whose first entry is `:status`.
fn with_status(status: u16, rest: Headers) -> Headers {
    std::iter::once((":status".to_owned(), status.to_string().into_bytes()))
        .chain(rest)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_module_names_the_build_script() {
        let error = HostError::NotBuilt(PathBuf::from("/nowhere/x.wasm"));
        assert!(error.to_string().contains("scripts/build-wasm"), "{error}");
        assert!(built_module_path().ends_with(MODULE_SUBPATH));
    }
}
