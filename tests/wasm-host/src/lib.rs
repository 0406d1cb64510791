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
//! - [`Host`]: load, configure, drive requests, timer, dispatched calls.
//! - [`RequestSpec`] / [`Exchange`]: one request in, what the filter did out.
//! - [`GrpcCall`], [`HttpCall`], [`GrpcAnswer`], [`HttpAnswer`]: dispatched calls.
//! - [`Status`]: what a host call answers, for failure injection.
//! - [`built_module`], [`module_imports`], [`module_exports`]: the `.wasm` itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use wasmtime::{Caller, Engine, Instance, Linker, Memory, Module, Store, TypedFunc, Val};

/// Where `scripts/build-wasm` puts the module, under the cargo target dir.
pub const MODULE_SUBPATH: &str = "wasm32-wasip1/wasm/modelgate_wasm_filter.wasm";

/// The clock's start: 2025-11-20T17:00:00Z, in unix nanoseconds.
pub const START_UNIX_NANOS: u64 = 1_763_658_000_000_000_000;

/// The WASI calls Envoy's proxy-wasm host provides (proxy-wasm-cpp-host);
/// a filter importing any other WASI call would not load in Envoy.
pub const ENVOY_WASI_CALLS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "environ_get",
    "environ_sizes_get",
    "fd_close",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_prestat_dir_name",
    "fd_prestat_get",
    "fd_read",
    "fd_seek",
    "fd_write",
    "path_open",
    "poll_oneoff",
    "proc_exit",
    "random_get",
    "sched_yield",
];

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

/// A unary gRPC call the filter dispatched.
#[derive(Debug, Clone)]
pub struct GrpcCall {
    /// Token to answer it with.
    pub token: u32,
    /// Envoy cluster.
    pub cluster: String,
    /// gRPC service, e.g. `opentelemetry.proto.collector.trace.v1.TraceService`.
    pub service: String,
    /// gRPC method, e.g. `Export`.
    pub method: String,
    /// Initial metadata.
    pub metadata: Headers,
    /// The serialized request message.
    pub message: Vec<u8>,
    /// Timeout asked for.
    pub timeout: Duration,
}

/// An HTTP call the filter dispatched.
#[derive(Debug, Clone)]
pub struct HttpCall {
    /// Token to answer it with.
    pub token: u32,
    /// Envoy cluster.
    pub cluster: String,
    /// Headers, pseudo-headers (`:method`, `:path`, `:authority`) included.
    pub headers: Headers,
    /// Body.
    pub body: Vec<u8>,
    /// Timeout asked for.
    pub timeout: Duration,
}

impl HttpCall {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        find(&self.headers, name)
    }
}

/// How the host answers a dispatched gRPC call.
#[derive(Debug, Clone)]
pub enum GrpcAnswer {
    /// Success with this response message (`proxy_on_grpc_receive`).
    Ok(Vec<u8>),
    /// Failure with this gRPC status (`proxy_on_grpc_close`), e.g. 14
    /// UNAVAILABLE or 4 DEADLINE_EXCEEDED for a timeout.
    Status(u32),
    /// Leave it pending (never answered).
    Pending,
}

/// How the host answers a dispatched HTTP call.
#[derive(Debug, Clone)]
pub enum HttpAnswer {
    /// A response (`:status` is added from `status`).
    Response {
        /// HTTP status.
        status: u16,
        /// Other headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: Vec<u8>,
    },
    /// The call failed (reset, timeout, no host): Envoy calls back with no
    /// headers and no body.
    Failed,
    /// Leave it pending (never answered).
    Pending,
}

/// One request to drive through the filter.
#[derive(Debug, Clone, Default)]
pub struct RequestSpec {
    /// Request headers, e.g. `(":path", "/risk-score")`.
    pub headers: Vec<(String, String)>,
    /// Response status.
    pub status: u16,
    /// Response headers besides `:status`.
    pub response_headers: Vec<(String, String)>,
    /// How long the upstream takes: the clock advances by it.
    pub latency: Duration,
    /// Properties for this request only, e.g. `request.duration` as 8-byte
    /// little-endian nanoseconds (what Envoy serves).
    pub properties: Vec<(String, Vec<u8>)>,
}

impl RequestSpec {
    /// A GET of `path` answered 200 after `latency`.
    pub fn get(path: &str, latency: Duration) -> Self {
        Self {
            headers: vec![
                (":method".into(), "GET".into()),
                (":path".into(), path.into()),
                (":authority".into(), "lending.example".into()),
            ],
            status: 200,
            latency,
            ..Self::default()
        }
    }

    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the response status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Adds a response header.
    pub fn response_header(mut self, name: &str, value: &str) -> Self {
        self.response_headers.push((name.into(), value.into()));
        self
    }

    /// Adds a property.
    pub fn property(mut self, path: &str, value: Vec<u8>) -> Self {
        self.properties.push((path.into(), value));
        self
    }
}

/// What the filter did to one request.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request headers as the upstream would see them.
    pub request_headers: Headers,
}

impl Exchange {
    /// A request header's value as text, after the filter ran.
    pub fn header(&self, name: &str) -> Option<String> {
        find(&self.request_headers, name)
    }
}

fn find(headers: &Headers, name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// One log line of the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// ABI level (0 trace .. 5 critical); 9 for WASI stdout/stderr.
    pub level: u32,
    /// The message.
    pub message: String,
}

/// A metric the filter defined.
#[derive(Debug, Clone)]
pub struct Metric {
    /// Its name.
    pub name: String,
    /// 0 counter, 1 gauge, 2 histogram.
    pub kind: u32,
    /// Counter or gauge value.
    pub value: u64,
    /// Values recorded into a histogram.
    pub samples: Vec<u64>,
}

/// Per-request maps the header calls work on.
#[derive(Debug, Default)]
struct StreamState {
    request_headers: Headers,
    response_headers: Headers,
    properties: BTreeMap<String, Vec<u8>>,
}

/// Everything the host calls read and write.
#[derive(Default)]
struct State {
    clock_nanos: u64,
    plugin_config: Vec<u8>,
    /// The context the current callback runs in.
    context: u32,
    streams: BTreeMap<u32, StreamState>,
    properties: BTreeMap<String, Vec<u8>>,
    http_response: Option<(Headers, Vec<u8>)>,
    grpc_response: Option<Vec<u8>>,
    metrics: Vec<Metric>,
    logs: Vec<LogLine>,
    tick_period_ms: u32,
    http_calls: Vec<HttpCall>,
    grpc_calls: Vec<GrpcCall>,
    next_token: u32,
    failures: BTreeMap<String, u32>,
    calls: BTreeMap<String, u64>,
    rng: u64,
    /// The guest's allocator, looked up once after instantiation.
    alloc: Option<TypedFunc<u32, u32>>,
    /// The guest's memory, looked up once after instantiation.
    memory: Option<Memory>,
}

impl State {
    /// Counts the call, and answers it with the injected status if any.
    fn enter(&mut self, name: &str) -> Option<u32> {
        match self.calls.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                self.calls.insert(name.to_owned(), 1);
            }
        }
        if self.failures.is_empty() {
            return None;
        }
        self.failures.get(name).copied()
    }

    fn stream(&mut self) -> &mut StreamState {
        self.streams.entry(self.context).or_default()
    }

    fn map(&mut self, map: u32) -> Option<&mut Headers> {
        match map {
            0 => Some(&mut self.stream().request_headers),
            2 => Some(&mut self.stream().response_headers),
            6 => self.http_response.as_mut().map(|(h, _)| h),
            _ => None,
        }
    }
}

type Result<T, E = HostError> = std::result::Result<T, E>;
type Ctx<'a> = Caller<'a, State>;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const BAD_ARGUMENT: u32 = 2;

fn memory(caller: &mut Ctx<'_>) -> wasmtime::Result<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::format_err!("module exports no memory"))
}

fn read(caller: &mut Ctx<'_>, ptr: u32, len: u32) -> wasmtime::Result<Vec<u8>> {
    let mut out = vec![0u8; len as usize];
    memory(caller)?.read(&*caller, ptr as usize, &mut out)?;
    Ok(out)
}

fn read_str(caller: &mut Ctx<'_>, ptr: u32, len: u32) -> wasmtime::Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

fn write(caller: &mut Ctx<'_>, ptr: u32, bytes: &[u8]) -> wasmtime::Result<()> {
    memory(caller)?.write(&mut *caller, ptr as usize, bytes)?;
    Ok(())
}

/// Hands `data` to the guest: memory from its allocator, then the pointer
/// and size written to the out-parameters.
fn give(caller: &mut Ctx<'_>, data: &[u8], ret_ptr: u32, ret_size: u32) -> wasmtime::Result<()> {
    let alloc = caller
        .data()
        .alloc
        .clone()
        .ok_or_else(|| wasmtime::format_err!("no proxy_on_memory_allocate"))?;
    let len = u32::try_from(data.len())?;
    let ptr = alloc.call(&mut *caller, len)?;
    write(caller, ptr, data)?;
    write(caller, ret_ptr, &ptr.to_le_bytes())?;
    write(caller, ret_size, &len.to_le_bytes())
}

/// Decodes a serialized ABI header map.
fn parse_pairs(bytes: &[u8]) -> Option<Headers> {
    let u32_at = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let count = u32_at(0)?;
    let mut sizes = Vec::new();
    for i in 0..count {
        sizes.push((u32_at(4 + i * 8)?, u32_at(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut out = Vec::new();
    for (k, v) in sizes {
        let key = bytes.get(at..at + k)?;
        at += k + 1;
        let value = bytes.get(at..at + v)?;
        at += v + 1;
        out.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
    }
    Some(out)
}

/// Serializes a header map the ABI way (for `proxy_get_header_map_pairs`).
fn serialize_pairs(pairs: &Headers) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

macro_rules! enter {
    ($caller:expr, $name:literal) => {
        if let Some(code) = $caller.data_mut().enter($name) {
            return Ok(code);
        }
    };
}

/// Defines the `env.proxy_*` calls.
fn link_proxy(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: Ctx<'_>, level: u32, ptr: u32, len: u32| {
            enter!(c, "proxy_log");
            let message = read_str(&mut c, ptr, len)?;
            c.data_mut().logs.push(LogLine { level, message });
            Ok(OK)
        },
    )?;
    linker.func_wrap("env", "proxy_get_log_level", |mut c: Ctx<'_>, ret: u32| {
        enter!(c, "proxy_get_log_level");
        write(&mut c, ret, &1u32.to_le_bytes())?;
        Ok(OK)
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Ctx<'_>, ret: u32| {
            enter!(c, "proxy_get_current_time_nanoseconds");
            let now = c.data().clock_nanos;
            write(&mut c, ret, &now.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Ctx<'_>, ms: u32| {
            enter!(c, "proxy_set_tick_period_milliseconds");
            c.data_mut().tick_period_ms = ms;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Ctx<'_>, kind: u32, start: u32, max: u32, ret_ptr: u32, ret_size: u32| {
            enter!(c, "proxy_get_buffer_bytes");
            let state = c.data();
            let buffer = match kind {
                4 => state.http_response.as_ref().map(|(_, body)| body.clone()),
                5 => state.grpc_response.clone(),
                6 => Some(Vec::new()),
                7 => Some(state.plugin_config.clone()),
                _ => None,
            };
            let Some(buffer) = buffer else {
                return Ok(NOT_FOUND);
            };
            let start = (start as usize).min(buffer.len());
            let end = start.saturating_add(max as usize).min(buffer.len());
            give(&mut c, &buffer[start..end], ret_ptr, ret_size)?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Ctx<'_>, map: u32, kp: u32, kl: u32, ret_ptr: u32, ret_size: u32| {
            enter!(c, "proxy_get_header_map_value");
            let key = read_str(&mut c, kp, kl)?;
            let Some(headers) = c.data_mut().map(map) else {
                return Ok(NOT_FOUND);
            };
            let value = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&key))
                .map(|(_, v)| v.clone());
            match value {
                Some(value) => {
                    give(&mut c, &value, ret_ptr, ret_size)?;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Ctx<'_>, map: u32, ret_ptr: u32, ret_size: u32| {
            enter!(c, "proxy_get_header_map_pairs");
            let Some(headers) = c.data_mut().map(map) else {
                return Ok(NOT_FOUND);
            };
            let bytes = serialize_pairs(headers);
            give(&mut c, &bytes, ret_ptr, ret_size)?;
            Ok(OK)
        },
    )?;
    for (name, replace) in [
        ("proxy_replace_header_map_value", true),
        ("proxy_add_header_map_value", false),
    ] {
        linker.func_wrap(
            "env",
            name,
            move |mut c: Ctx<'_>, map: u32, kp: u32, kl: u32, vp: u32, vl: u32| {
                if let Some(code) = c.data_mut().enter(name) {
                    return Ok(code);
                }
                let key = read_str(&mut c, kp, kl)?;
                let value = read(&mut c, vp, vl)?;
                let Some(headers) = c.data_mut().map(map) else {
                    return Ok(NOT_FOUND);
                };
                if replace {
                    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
                }
                headers.push((key, value));
                Ok(OK)
            },
        )?;
    }
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Ctx<'_>, map: u32, kp: u32, kl: u32| {
            enter!(c, "proxy_remove_header_map_value");
            let key = read_str(&mut c, kp, kl)?;
            let Some(headers) = c.data_mut().map(map) else {
                return Ok(NOT_FOUND);
            };
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Ctx<'_>, pp: u32, pl: u32, ret_ptr: u32, ret_size: u32| {
            enter!(c, "proxy_get_property");
            let raw = read(&mut c, pp, pl)?;
            let path = raw
                .split(|b| *b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>()
                .join(".");
            let value = {
                let state = c.data_mut();
                let global = state.properties.get(&path).cloned();
                state.stream().properties.get(&path).cloned().or(global)
            };
            match value {
                Some(value) => {
                    give(&mut c, &value, ret_ptr, ret_size)?;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Ctx<'_>, _: u32, _: u32, _: u32, _: u32| {
            enter!(c, "proxy_set_property");
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Ctx<'_>,
         up: u32,
         upl: u32,
         hp: u32,
         hl: u32,
         bp: u32,
         bl: u32,
         _tp: u32,
         _tl: u32,
         timeout: u32,
         ret: u32| {
            enter!(c, "proxy_http_call");
            let cluster = read_str(&mut c, up, upl)?;
            let Some(headers) = parse_pairs(&read(&mut c, hp, hl)?) else {
                return Ok(BAD_ARGUMENT);
            };
            let body = read(&mut c, bp, bl)?;
            let token = c.data_mut().token();
            c.data_mut().http_calls.push(HttpCall {
                token,
                cluster,
                headers,
                body,
                timeout: Duration::from_millis(u64::from(timeout)),
            });
            write(&mut c, ret, &token.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: Ctx<'_>,
         up: u32,
         upl: u32,
         sp: u32,
         sl: u32,
         mp: u32,
         ml: u32,
         mdp: u32,
         mdl: u32,
         msgp: u32,
         msgl: u32,
         timeout: u32,
         ret: u32| {
            enter!(c, "proxy_grpc_call");
            let cluster = read_str(&mut c, up, upl)?;
            let service = read_str(&mut c, sp, sl)?;
            let method = read_str(&mut c, mp, ml)?;
            let Some(metadata) = parse_pairs(&read(&mut c, mdp, mdl)?) else {
                return Ok(BAD_ARGUMENT);
            };
            let message = read(&mut c, msgp, msgl)?;
            let token = c.data_mut().token();
            c.data_mut().grpc_calls.push(GrpcCall {
                token,
                cluster,
                service,
                method,
                metadata,
                message,
                timeout: Duration::from_millis(u64::from(timeout)),
            });
            write(&mut c, ret, &token.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Ctx<'_>, context: u32| {
            enter!(c, "proxy_set_effective_context");
            c.data_mut().context = context;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Ctx<'_>, kind: u32, np: u32, nl: u32, ret: u32| {
            enter!(c, "proxy_define_metric");
            let name = read_str(&mut c, np, nl)?;
            let metrics = &mut c.data_mut().metrics;
            // Like Envoy: every definition is a new metric with a new id.
            let id = u32::try_from(metrics.len())?;
            metrics.push(Metric {
                name,
                kind,
                value: 0,
                samples: Vec::new(),
            });
            write(&mut c, ret, &id.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut c: Ctx<'_>, id: u32, offset: i64| {
            enter!(c, "proxy_increment_metric");
            let Some(metric) = c.data_mut().metrics.get_mut(id as usize) else {
                return Ok(NOT_FOUND);
            };
            if metric.kind == 2 {
                return Ok(BAD_ARGUMENT);
            }
            metric.value = metric.value.saturating_add_signed(offset);
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut c: Ctx<'_>, id: u32, value: u64| {
            enter!(c, "proxy_record_metric");
            let Some(metric) = c.data_mut().metrics.get_mut(id as usize) else {
                return Ok(NOT_FOUND);
            };
            if metric.kind == 2 {
                metric.samples.push(value);
            } else {
                metric.value = value;
            }
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Ctx<'_>, id: u32, ret: u32| {
            enter!(c, "proxy_get_metric");
            let Some(value) = c.data().metrics.get(id as usize).map(|m| m.value) else {
                return Ok(NOT_FOUND);
            };
            write(&mut c, ret, &value.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    for name in ["proxy_continue_stream", "proxy_close_stream"] {
        linker.func_wrap("env", name, move |mut c: Ctx<'_>, _: u32| {
            Ok(c.data_mut().enter(name).unwrap_or(OK))
        })?;
    }
    linker.func_wrap("env", "proxy_done", |mut c: Ctx<'_>| {
        Ok(c.data_mut().enter("proxy_done").unwrap_or(OK))
    })?;
    Ok(())
}

/// Defines the WASI calls a Rust `wasm32-wasip1` module may import.
fn link_wasi(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    const WASI: &str = "wasi_snapshot_preview1";
    const BADF: u32 = 8;
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Ctx<'_>, fd: u32, iovs: u32, n: u32, ret: u32| {
            let mut text = Vec::new();
            for i in 0..n {
                let iov = read(&mut c, iovs + i * 8, 8)?;
                let ptr = u32::from_le_bytes(iov[0..4].try_into()?);
                let len = u32::from_le_bytes(iov[4..8].try_into()?);
                text.extend(read(&mut c, ptr, len)?);
            }
            if fd != 1 && fd != 2 {
                return Ok(BADF);
            }
            let written = u32::try_from(text.len())?;
            c.data_mut().logs.push(LogLine {
                level: 9,
                message: String::from_utf8_lossy(&text).into_owned(),
            });
            write(&mut c, ret, &written.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(WASI, "random_get", |mut c: Ctx<'_>, ptr: u32, len: u32| {
        let mut bytes = Vec::with_capacity(len as usize);
        while bytes.len() < len as usize {
            bytes.extend_from_slice(&c.data_mut().next_random().to_le_bytes());
        }
        bytes.truncate(len as usize);
        write(&mut c, ptr, &bytes)?;
        Ok(OK)
    })?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Ctx<'_>, _id: u32, _precision: u64, ret: u32| {
            let now = c.data().clock_nanos;
            write(&mut c, ret, &now.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        linker.func_wrap(WASI, name, |mut c: Ctx<'_>, count: u32, size: u32| {
            write(&mut c, count, &0u32.to_le_bytes())?;
            write(&mut c, size, &0u32.to_le_bytes())?;
            Ok(OK)
        })?;
    }
    for name in ["environ_get", "args_get"] {
        linker.func_wrap(WASI, name, |_: Ctx<'_>, _: u32, _: u32| Ok(OK))?;
    }
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Ctx<'_>, code: u32| -> wasmtime::Result<()> { wasmtime::bail!("proc_exit({code})") },
    )?;
    linker.func_wrap(WASI, "sched_yield", |_: Ctx<'_>| Ok(OK))?;
    Ok(())
}

impl State {
    fn token(&mut self) -> u32 {
        self.next_token += 1;
        self.next_token
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: deterministic per host, good enough for ids.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The ABI entry points the host calls.
struct Entry {
    context_create: TypedFunc<(u32, u32), ()>,
    vm_start: TypedFunc<(u32, u32), u32>,
    configure: TypedFunc<(u32, u32), u32>,
    tick: TypedFunc<u32, ()>,
    request_headers: TypedFunc<(u32, u32, u32), u32>,
    response_headers: TypedFunc<(u32, u32, u32), u32>,
    log: TypedFunc<u32, ()>,
    done: TypedFunc<u32, u32>,
    delete: TypedFunc<u32, ()>,
    http_call_response: TypedFunc<(u32, u32, u32, u32, u32), ()>,
    grpc_receive: TypedFunc<(u32, u32, u32), ()>,
    grpc_close: TypedFunc<(u32, u32, u32), ()>,
}

/// The compiled module, shared by every `Host` of a test binary (compiling
/// is the slow part).
struct Compiled {
    engine: Engine,
    module: Module,
}

static BUILT: OnceLock<std::result::Result<Compiled, String>> = OnceLock::new();

/// The built filter's path: `$CARGO_TARGET_DIR` (or the workspace's
/// `target/`) + [`MODULE_SUBPATH`].
pub fn built_module_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let target = if target.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(target)
    } else {
        target
    };
    target.join(MODULE_SUBPATH)
}

/// The built filter's bytes; `HostError::NotBuilt` names `scripts/build-wasm`.
pub fn built_module() -> Result<Vec<u8>> {
    let path = built_module_path();
    if !path.exists() {
        return Err(HostError::NotBuilt(path));
    }
    std::fs::read(&path).map_err(|source| HostError::Read { path, source })
}

/// The module's imports as `(module, name)`.
pub fn module_imports(wasm: &[u8]) -> Result<Vec<(String, String)>> {
    let engine = Engine::default();
    let module = Module::new(&engine, wasm).map_err(|e| HostError::Load(format!("{e:?}")))?;
    Ok(module
        .imports()
        .map(|i| (i.module().to_owned(), i.name().to_owned()))
        .collect())
}

/// The module's export names.
pub fn module_exports(wasm: &[u8]) -> Result<Vec<String>> {
    let engine = Engine::default();
    let module = Module::new(&engine, wasm).map_err(|e| HostError::Load(format!("{e:?}")))?;
    Ok(module.exports().map(|e| e.name().to_owned()).collect())
}

fn trap(call: &'static str) -> impl FnOnce(wasmtime::Error) -> HostError {
    move |e| HostError::Trap {
        call,
        message: format!("{e:?}"),
    }
}

/// The root context id the host gives the plugin.
const ROOT: u32 = 1;

/// One VM running the filter with one plugin (root context).
pub struct Host {
    store: Store<State>,
    memory: Memory,
    entry: Entry,
    next_context: u32,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("next_context", &self.next_context)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Loads the built filter (see [`built_module_path`]), starts the VM and
    /// creates the root context. Call [`Host::configure`] next.
    pub fn new() -> Result<Self> {
        let compiled = BUILT.get_or_init(|| {
            let wasm = built_module().map_err(|e| e.to_string())?;
            let engine = Engine::default();
            let module = Module::new(&engine, wasm).map_err(|e| format!("{e:?}"))?;
            Ok(Compiled { engine, module })
        });
        let compiled = compiled.as_ref().map_err(|e| {
            if e.contains("scripts/build-wasm") {
                HostError::NotBuilt(built_module_path())
            } else {
                HostError::Load(e.clone())
            }
        })?;
        Self::with_module(&compiled.engine, &compiled.module)
    }

    /// Starts a VM from any compiled module (e.g. a variant under test).
    pub fn with_module(engine: &Engine, module: &Module) -> Result<Self> {
        let load = |e: wasmtime::Error| HostError::Load(format!("{e:?}"));
        let mut linker = Linker::new(engine);
        link_proxy(&mut linker).map_err(load)?;
        link_wasi(&mut linker).map_err(load)?;
        // Any other import answers like a host that lacks it, and is counted.
        for import in module.imports() {
            let (m, name) = (import.module().to_owned(), import.name().to_owned());
            if linker
                .get_by_import(&mut Store::new(engine, State::default()), &import)
                .is_some()
            {
                continue;
            }
            let Some(ty) = import.ty().func().cloned() else {
                continue;
            };
            let fallback = if m == "env" {
                Status::Unimplemented as i32
            } else {
                52
            };
            let key = format!("{m}.{name}");
            linker
                .func_new(&m, &name, ty, move |mut c, _params, results| {
                    *c.data_mut().calls.entry(key.clone()).or_default() += 1;
                    if let Some(r) = results.first_mut() {
                        *r = Val::I32(fallback);
                    }
                    Ok(())
                })
                .map_err(load)?;
        }
        let state = State {
            clock_nanos: START_UNIX_NANOS,
            rng: 0x5eed,
            ..State::default()
        };
        let mut store = Store::new(engine, state);
        let instance: Instance = linker.instantiate(&mut store, module).map_err(load)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or(HostError::MissingExport("memory"))?;
        macro_rules! func {
            ($name:literal) => {
                instance
                    .get_typed_func(&mut store, $name)
                    .map_err(|_| HostError::MissingExport($name))?
            };
        }
        let entry = Entry {
            context_create: func!("proxy_on_context_create"),
            vm_start: func!("proxy_on_vm_start"),
            configure: func!("proxy_on_configure"),
            tick: func!("proxy_on_tick"),
            request_headers: func!("proxy_on_request_headers"),
            response_headers: func!("proxy_on_response_headers"),
            log: func!("proxy_on_log"),
            done: func!("proxy_on_done"),
            delete: func!("proxy_on_delete"),
            http_call_response: func!("proxy_on_http_call_response"),
            grpc_receive: func!("proxy_on_grpc_receive"),
            grpc_close: func!("proxy_on_grpc_close"),
        };
        store.data_mut().alloc = Some(func!("proxy_on_memory_allocate"));
        store.data_mut().memory = Some(memory);
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ()).map_err(trap("_initialize"))?;
        }
        let mut host = Self {
            store,
            memory,
            entry,
            next_context: ROOT + 1,
        };
        host.store.data_mut().context = ROOT;
        let entry = &host.entry;
        entry
            .context_create
            .call(&mut host.store, (ROOT, 0))
            .map_err(trap("proxy_on_context_create"))?;
        entry
            .vm_start
            .call(&mut host.store, (ROOT, 0))
            .map_err(trap("proxy_on_vm_start"))?;
        Ok(host)
    }

    /// Hands the plugin its configuration; `Ok(false)`: the plugin refused it.
    pub fn configure(&mut self, json: &str) -> Result<bool> {
        self.configure_bytes(json.as_bytes())
    }

    /// [`Host::configure`] with raw bytes.
    pub fn configure_bytes(&mut self, config: &[u8]) -> Result<bool> {
        let size = u32::try_from(config.len()).unwrap_or(u32::MAX);
        let state = self.store.data_mut();
        state.plugin_config = config.to_vec();
        state.context = ROOT;
        let accepted = self
            .entry
            .configure
            .call(&mut self.store, (ROOT, size))
            .map_err(trap("proxy_on_configure"))?;
        Ok(accepted != 0)
    }

    /// Drives one whole request: headers, the upstream's latency on the
    /// clock, response headers, log, done, delete.
    pub fn request(&mut self, spec: &RequestSpec) -> Result<Exchange> {
        let context = self.begin(&spec.headers)?;
        self.advance(spec.latency);
        self.respond(
            context,
            spec.status,
            &spec.response_headers,
            &spec.properties,
        )?;
        self.end(context)
    }

    /// Starts a request: creates its context and runs
    /// `proxy_on_request_headers`. Returns the context id.
    pub fn begin(&mut self, headers: &[(String, String)]) -> Result<u32> {
        let context = self.next_context;
        self.next_context += 1;
        let state = self.store.data_mut();
        state.context = context;
        state.streams.insert(
            context,
            StreamState {
                request_headers: headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                    .collect(),
                ..StreamState::default()
            },
        );
        self.entry
            .context_create
            .call(&mut self.store, (context, ROOT))
            .map_err(trap("proxy_on_context_create"))?;
        let n = u32::try_from(headers.len()).unwrap_or(u32::MAX);
        self.entry
            .request_headers
            .call(&mut self.store, (context, n, 1))
            .map_err(trap("proxy_on_request_headers"))?;
        Ok(context)
    }

    /// A request header of a request in flight, as the filter left it (e.g.
    /// the version it stamped at `proxy_on_request_headers`).
    pub fn request_header(&self, context: u32, name: &str) -> Option<String> {
        let stream = self.store.data().streams.get(&context)?;
        stream
            .request_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The upstream answered: response headers (with `:status`) and any
    /// per-request properties, then `proxy_on_response_headers`.
    pub fn respond(
        &mut self,
        context: u32,
        status: u16,
        headers: &[(String, String)],
        properties: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let state = self.store.data_mut();
        state.context = context;
        let stream = state.stream();
        stream.response_headers =
            std::iter::once((":status".to_owned(), status.to_string().into_bytes()))
                .chain(
                    headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
                )
                .collect();
        stream.properties.extend(properties.iter().cloned());
        let n = u32::try_from(stream.response_headers.len()).unwrap_or(u32::MAX);
        self.entry
            .response_headers
            .call(&mut self.store, (context, n, 1))
            .map_err(trap("proxy_on_response_headers"))?;
        Ok(())
    }

    /// Ends a request: `proxy_on_log`, `proxy_on_done`, `proxy_on_delete`.
    pub fn end(&mut self, context: u32) -> Result<Exchange> {
        self.store.data_mut().context = context;
        self.entry
            .log
            .call(&mut self.store, context)
            .map_err(trap("proxy_on_log"))?;
        self.entry
            .done
            .call(&mut self.store, context)
            .map_err(trap("proxy_on_done"))?;
        self.entry
            .delete
            .call(&mut self.store, context)
            .map_err(trap("proxy_on_delete"))?;
        let stream = self
            .store
            .data_mut()
            .streams
            .remove(&context)
            .unwrap_or_default();
        self.store.data_mut().context = ROOT;
        Ok(Exchange {
            request_headers: stream.request_headers,
        })
    }

    /// Moves the clock forward.
    pub fn advance(&mut self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let state = self.store.data_mut();
        state.clock_nanos = state.clock_nanos.saturating_add(nanos);
    }

    /// The clock, unix nanoseconds.
    pub fn now_nanos(&self) -> u64 {
        self.store.data().clock_nanos
    }

    /// Fires the plugin's timer once (`proxy_on_tick`).
    pub fn tick(&mut self) -> Result<()> {
        self.store.data_mut().context = ROOT;
        self.entry
            .tick
            .call(&mut self.store, ROOT)
            .map_err(trap("proxy_on_tick"))
    }

    /// The timer period the plugin asked for, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        let ms = self.store.data().tick_period_ms;
        (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
    }

    /// Advances the clock by one timer period (or `fallback` when the plugin
    /// set none) and fires the timer.
    pub fn advance_tick(&mut self, fallback: Duration) -> Result<()> {
        let period = self.tick_period().unwrap_or(fallback);
        self.advance(period);
        self.tick()
    }

    /// The gRPC calls dispatched and not yet taken.
    pub fn take_grpc_calls(&mut self) -> Vec<GrpcCall> {
        std::mem::take(&mut self.store.data_mut().grpc_calls)
    }

    /// The HTTP calls dispatched and not yet taken.
    pub fn take_http_calls(&mut self) -> Vec<HttpCall> {
        std::mem::take(&mut self.store.data_mut().http_calls)
    }

    /// Answers a dispatched gRPC call the way Envoy does for a unary call.
    pub fn answer_grpc(&mut self, token: u32, answer: GrpcAnswer) -> Result<()> {
        self.store.data_mut().context = ROOT;
        match answer {
            GrpcAnswer::Ok(message) => {
                let size = u32::try_from(message.len()).unwrap_or(u32::MAX);
                self.store.data_mut().grpc_response = Some(message);
                let r = self
                    .entry
                    .grpc_receive
                    .call(&mut self.store, (ROOT, token, size));
                self.store.data_mut().grpc_response = None;
                r.map_err(trap("proxy_on_grpc_receive"))
            }
            GrpcAnswer::Status(status) => self
                .entry
                .grpc_close
                .call(&mut self.store, (ROOT, token, status))
                .map_err(trap("proxy_on_grpc_close")),
            GrpcAnswer::Pending => Ok(()),
        }
    }

    /// Answers a dispatched HTTP call (`proxy_on_http_call_response`).
    pub fn answer_http(&mut self, token: u32, answer: HttpAnswer) -> Result<()> {
        let (headers, body) = match answer {
            HttpAnswer::Response {
                status,
                headers,
                body,
            } => (
                std::iter::once((":status".to_owned(), status.to_string().into_bytes()))
                    .chain(headers.into_iter().map(|(k, v)| (k, v.into_bytes())))
                    .collect::<Headers>(),
                body,
            ),
            HttpAnswer::Failed => (Vec::new(), Vec::new()),
            HttpAnswer::Pending => return Ok(()),
        };
        let n = u32::try_from(headers.len()).unwrap_or(u32::MAX);
        let size = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let state = self.store.data_mut();
        state.context = ROOT;
        state.http_response = Some((headers, body));
        let r = self
            .entry
            .http_call_response
            .call(&mut self.store, (ROOT, token, n, size, 0));
        self.store.data_mut().http_response = None;
        r.map_err(trap("proxy_on_http_call_response"))
    }

    /// Answers every pending dispatched call through the callbacks; returns
    /// how many were answered. This is the hook for end-to-end tests: the
    /// gRPC callback can send `call.message` (an `ExportTraceServiceRequest`)
    /// to a real collector, the HTTP one can proxy the poll to its admin port.
    pub fn pump(
        &mut self,
        grpc: &mut dyn FnMut(&GrpcCall) -> GrpcAnswer,
        http: &mut dyn FnMut(&HttpCall) -> HttpAnswer,
    ) -> Result<usize> {
        let mut answered = 0;
        for call in self.take_grpc_calls() {
            let answer = grpc(&call);
            if matches!(answer, GrpcAnswer::Pending) {
                self.store.data_mut().grpc_calls.push(call);
                continue;
            }
            self.answer_grpc(call.token, answer)?;
            answered += 1;
        }
        for call in self.take_http_calls() {
            let answer = http(&call);
            if matches!(answer, HttpAnswer::Pending) {
                self.store.data_mut().http_calls.push(call);
                continue;
            }
            self.answer_http(call.token, answer)?;
            answered += 1;
        }
        Ok(answered)
    }

    /// Sets a property for every request (e.g. `plugin_name`).
    pub fn set_property(&mut self, path: &str, value: Vec<u8>) {
        self.store
            .data_mut()
            .properties
            .insert(path.to_owned(), value);
    }

    /// Makes the host call `name` (e.g. `proxy_get_header_map_value`)
    /// answer `status` without doing anything, until cleared.
    pub fn inject_failure(&mut self, name: &str, status: Status) {
        self.store
            .data_mut()
            .failures
            .insert(name.to_owned(), status as u32);
    }

    /// Removes every injected failure.
    pub fn clear_failures(&mut self) {
        self.store.data_mut().failures.clear();
    }

    /// How many times each host call was made (unimplemented ones as
    /// `module.name`).
    pub fn call_counts(&self) -> &BTreeMap<String, u64> {
        &self.store.data().calls
    }

    /// Every metric defined, in definition order (id = index).
    pub fn metrics(&self) -> &[Metric] {
        &self.store.data().metrics
    }

    /// The value of the counter `name` (the last definition of that name).
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.metrics()
            .iter()
            .rev()
            .find(|m| m.name == name && m.kind == 0)
            .map(|m| m.value)
    }

    /// The samples of the histogram `name`.
    pub fn histogram(&self, name: &str) -> Option<&[u64]> {
        self.metrics()
            .iter()
            .rev()
            .find(|m| m.name == name && m.kind == 2)
            .map(|m| m.samples.as_slice())
    }

    /// The filter's log lines so far.
    pub fn logs(&self) -> &[LogLine] {
        &self.store.data().logs
    }

    /// Forgets the log lines so far (long runs).
    pub fn clear_logs(&mut self) {
        self.store.data_mut().logs.clear();
    }

    /// Whether some log line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.logs().iter().any(|l| l.message.contains(text))
    }

    /// The size of the module's linear memory, bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }
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

    #[test]
    fn header_maps_round_trip() {
        let pairs: Headers = vec![(":path".into(), b"/x".to_vec()), ("a".into(), Vec::new())];
        assert_eq!(parse_pairs(&serialize_pairs(&pairs)), Some(pairs));
        assert_eq!(parse_pairs(&[9, 0, 0, 0]), None);
    }
}
