//! The clock, the timer, and the HTTP and gRPC calls the filter dispatches:
//! recorded here as they are made, answered by the test (by hand or
//! through [`Host::pump`]) the way Envoy answers them.
//!
//! The clock only moves when the test moves it.

use crate::host::{trap, Host, ROOT};
use crate::memory::{enter, parse_pairs, read, read_str, write, Ctx, BAD_ARGUMENT, OK};
use crate::state::State;
use crate::{find, with_status, Headers, Result};
use std::time::Duration;
use wasmtime::Linker;

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

/// Defines the clock, timer and dispatch calls.
pub(crate) fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    link_clock(linker)?;
    link_http_call(linker)?;
    link_grpc_call(linker)
}

fn link_clock(linker: &mut Linker<State>) -> wasmtime::Result<()> {
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
    Ok(())
}

/// Records a dispatched call under a new token, and writes the token to
/// the guest's `ret`.
fn dispatched(
    c: &mut Ctx<'_>,
    ret: u32,
    record: impl FnOnce(&mut State, u32),
) -> wasmtime::Result<u32> {
    let token = c.data_mut().token();
    record(c.data_mut(), token);
    write(c, ret, &token.to_le_bytes())?;
    Ok(OK)
}

fn link_http_call(linker: &mut Linker<State>) -> wasmtime::Result<()> {
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
            dispatched(&mut c, ret, |state, token| {
                state.http_calls.push(HttpCall {
                    token,
                    cluster,
                    headers,
                    body,
                    timeout: Duration::from_millis(u64::from(timeout)),
                });
            })
        },
    )?;
    Ok(())
}

fn link_grpc_call(linker: &mut Linker<State>) -> wasmtime::Result<()> {
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
            dispatched(&mut c, ret, |state, token| {
                state.grpc_calls.push(GrpcCall {
                    token,
                    cluster,
                    service,
                    method,
                    metadata,
                    message,
                    timeout: Duration::from_millis(u64::from(timeout)),
                });
            })
        },
    )?;
    Ok(())
}

impl Host {
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
                with_status(
                    status,
                    headers
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect(),
                ),
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
}
