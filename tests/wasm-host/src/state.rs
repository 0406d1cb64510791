//! What the host calls of one VM read and write: the clock, the contexts'
//! header maps and properties, dispatched calls, metrics, logs, and the
//! failures a test injected.
//!
//! Plain data: nothing here calls into the guest.

use crate::dispatch::{GrpcCall, HttpCall};
use crate::shared::SharedData;
use crate::telemetry::{LogLine, Metric};
use crate::Headers;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use wasmtime::{Memory, TypedFunc};

/// Per-request maps the header calls work on.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub(crate) request_headers: Headers,
    pub(crate) response_headers: Headers,
    pub(crate) properties: BTreeMap<String, Vec<u8>>,
}

/// Everything the host calls read and write.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) clock_nanos: u64,
    pub(crate) plugin_config: Vec<u8>,
    /// The context the current callback runs in.
    pub(crate) context: u32,
    pub(crate) streams: BTreeMap<u32, StreamState>,
    pub(crate) properties: BTreeMap<String, Vec<u8>>,
    pub(crate) http_response: Option<(Headers, Vec<u8>)>,
    pub(crate) grpc_response: Option<Vec<u8>>,
    pub(crate) metrics: Vec<Metric>,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) tick_period_ms: u32,
    pub(crate) http_calls: Vec<HttpCall>,
    pub(crate) grpc_calls: Vec<GrpcCall>,
    pub(crate) next_token: u32,
    pub(crate) failures: BTreeMap<String, u32>,
    /// Host calls that trap, as a host that lacks them may do.
    pub(crate) traps: BTreeSet<String>,
    pub(crate) calls: BTreeMap<String, u64>,
    /// The VM's environment variables.
    pub(crate) env: Vec<(String, String)>,
    /// The proxy's shared data: this VM's alone, or every worker's.
    pub(crate) shared: Arc<Mutex<SharedData>>,
    pub(crate) rng: u64,
    /// The guest's allocator, looked up once after instantiation.
    pub(crate) alloc: Option<TypedFunc<u32, u32>>,
    /// The guest's memory, looked up once after instantiation.
    pub(crate) memory: Option<Memory>,
}

impl State {
    /// Counts the call, and answers it with the injected status if any, or
    /// traps if the test made it trap.
    pub(crate) fn enter(&mut self, name: &str) -> wasmtime::Result<Option<u32>> {
        match self.calls.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                self.calls.insert(name.to_owned(), 1);
            }
        }
        if self.failures.is_empty() && self.traps.is_empty() {
            return Ok(None);
        }
        if self.traps.contains(name) {
            wasmtime::bail!("{name}: not yet implemented (a trap the test injected)");
        }
        Ok(self.failures.get(name).copied())
    }

    /// The maps of the context the current callback runs in.
    pub(crate) fn stream(&mut self) -> &mut StreamState {
        self.streams.entry(self.context).or_default()
    }

    /// A header map by its ABI number.
    pub(crate) fn map(&mut self, map: u32) -> Option<&mut Headers> {
        match map {
            0 => Some(&mut self.stream().request_headers),
            2 => Some(&mut self.stream().response_headers),
            6 => self.http_response.as_mut().map(|(h, _)| h),
            _ => None,
        }
    }

    /// The environment as WASI hands it over: `KEY=VALUE` and a NUL each.
    pub(crate) fn environment(&self) -> Vec<Vec<u8>> {
        self.env
            .iter()
            .map(|(k, v)| format!("{k}={v}\0").into_bytes())
            .collect()
    }

    /// A new token for a dispatched call.
    pub(crate) fn token(&mut self) -> u32 {
        self.next_token += 1;
        self.next_token
    }

    /// The next pseudo-random word for `random_get`.
    pub(crate) fn next_random(&mut self) -> u64 {
        // splitmix64: deterministic per host, good enough for ids.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
