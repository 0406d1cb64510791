//! One request through the filter: what a test sends ([`RequestSpec`]),
//! the lifecycle Envoy drives (context create, request headers, response
//! headers, log, done, delete), what the filter did ([`Exchange`]), and the
//! stream and context calls the filter may make meanwhile.

use crate::host::{trap, Host, ROOT};
use crate::memory::{enter, Ctx, OK};
use crate::state::{State, StreamState};
use crate::{find, to_headers, with_status, Headers, Result};
use std::time::Duration;
use wasmtime::Linker;

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

/// Defines the context and stream calls.
pub(crate) fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Ctx<'_>, context: u32| {
            enter!(c, "proxy_set_effective_context");
            c.data_mut().context = context;
            Ok(OK)
        },
    )?;
    for name in ["proxy_continue_stream", "proxy_close_stream"] {
        linker.func_wrap("env", name, move |mut c: Ctx<'_>, _: u32| {
            Ok(c.data_mut().enter(name)?.unwrap_or(OK))
        })?;
    }
    linker.func_wrap("env", "proxy_done", |mut c: Ctx<'_>| {
        Ok(c.data_mut().enter("proxy_done")?.unwrap_or(OK))
    })?;
    Ok(())
}

impl Host {
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
                request_headers: to_headers(headers),
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
        find(
            &self.store.data().streams.get(&context)?.request_headers,
            name,
        )
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
        stream.response_headers = with_status(status, to_headers(headers));
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
}
