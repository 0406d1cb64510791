//! Shared data: the key/value store every VM (worker) of one proxy shares,
//! with Envoy's compare-and-swap rules, and [`Proxy`], a proxy of several
//! workers around one store.
//!
//! Like proxy-wasm-cpp-host: every write gives the key a new CAS value; a
//! write carrying a non-zero CAS that is not the key's current one answers
//! `CasMismatch`; a write to a new key ignores the CAS. Shared queues are not
//! here: the filter uses none (a queue wakes only the VM that registered it,
//! so it cannot tell every worker), and any call to them answers
//! `Unimplemented` (see `wasi::link_missing`).

use crate::host::Host;
use crate::memory::{enter, give, read, read_str, write, Ctx, NOT_FOUND, OK};
use crate::state::State;
use crate::Result;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use wasmtime::Linker;

/// `WasmResult::CasMismatch`.
const CAS_MISMATCH: u32 = 8;

/// The store: each key's value and CAS.
#[derive(Debug, Default)]
pub(crate) struct SharedData {
    entries: BTreeMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl SharedData {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.entries.get(key).cloned()
    }

    /// Envoy's `SharedData::set`.
    fn set(&mut self, key: String, value: Vec<u8>, cas: u32) -> u32 {
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        let next = self.next_cas;
        match self.entries.get_mut(&key) {
            Some((_, current)) if cas != 0 && cas != *current => CAS_MISMATCH,
            Some(entry) => {
                *entry = (value, next);
                OK
            }
            None => {
                self.entries.insert(key, (value, next));
                OK
            }
        }
    }
}

fn lock(shared: &Mutex<SharedData>) -> MutexGuard<'_, SharedData> {
    // A test that panicked while holding it has failed already.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Defines the shared-data calls.
pub(crate) fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Ctx<'_>, kp: u32, kl: u32, ret_ptr: u32, ret_size: u32, ret_cas: u32| {
            enter!(c, "proxy_get_shared_data");
            let key = read_str(&mut c, kp, kl)?;
            let Some((value, cas)) = lock(&c.data().shared).get(&key) else {
                return Ok(NOT_FOUND);
            };
            give(&mut c, &value, ret_ptr, ret_size)?;
            write(&mut c, ret_cas, &cas.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Ctx<'_>, kp: u32, kl: u32, vp: u32, vl: u32, cas: u32| {
            enter!(c, "proxy_set_shared_data");
            let key = read_str(&mut c, kp, kl)?;
            let value = read(&mut c, vp, vl)?;
            Ok(lock(&c.data().shared).set(key, value, cas))
        },
    )?;
    Ok(())
}

/// One proxy: workers (one VM each, as Envoy runs one per worker thread and
/// nginx one per worker process) sharing one store of shared data.
#[derive(Debug, Clone, Default)]
pub struct Proxy {
    shared: Arc<Mutex<SharedData>>,
    workers: Arc<Mutex<u64>>,
}

impl Proxy {
    /// A proxy with no workers yet and empty shared data.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts one more worker: a VM with the built filter, sharing this
    /// proxy's shared data (and its own seed for randomness, as real VMs
    /// have). Also how a VM that trapped is rebuilt.
    pub fn worker(&self) -> Result<Host> {
        let n = {
            let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            *workers += 1;
            *workers
        };
        let mut host = Host::new_with(self.shared.clone(), n)?;
        host.start()?;
        Ok(host)
    }

    /// A key's value in the shared data, as a worker would read it.
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        lock(&self.shared).get(key).map(|(value, _)| value)
    }

    /// Writes a key as a worker would (unconditionally), e.g. a record in
    /// a format the filter does not know.
    pub fn set_shared_data(&self, key: &str, value: &[u8]) {
        lock(&self.shared).set(key.to_owned(), value.to_vec(), 0);
    }

    /// The keys in the shared data.
    pub fn shared_keys(&self) -> Vec<String> {
        lock(&self.shared).entries.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_follow_envoys_compare_and_swap() {
        let mut data = SharedData::default();
        assert_eq!(
            data.set("k".into(), b"a".to_vec(), 77),
            OK,
            "a new key ignores the CAS"
        );
        let (_, cas) = data.get("k").unwrap();
        assert_eq!(data.set("k".into(), b"b".to_vec(), cas), OK);
        assert_eq!(
            data.set("k".into(), b"c".to_vec(), cas),
            CAS_MISMATCH,
            "stale CAS"
        );
        assert_eq!(data.get("k").unwrap().0, b"b");
        assert_eq!(
            data.set("k".into(), b"d".to_vec(), 0),
            OK,
            "0: unconditional"
        );
        assert_eq!(data.get("k").unwrap().0, b"d");
    }
}
