//! [`Host`]: one VM running the filter with one plugin (root context):
//! loading and linking the module, configuring the plugin, injecting
//! failures, and what a test inspects afterwards.
//!
//! Every guest call goes through [`trap`], so a trap is an error, never hidden.

use crate::module::compiled;
use crate::state::State;
use crate::START_UNIX_NANOS;
use crate::{dispatch, fields, request, telemetry, wasi, HostError, Result, Status};
use std::collections::BTreeMap;
use wasmtime::{Engine, Instance, Linker, Memory, Module, Store, TypedFunc};

/// The root context id the host gives the plugin.
pub(crate) const ROOT: u32 = 1;

/// The ABI entry points the host calls.
pub(crate) struct Entry {
    pub(crate) context_create: TypedFunc<(u32, u32), ()>,
    pub(crate) vm_start: TypedFunc<(u32, u32), u32>,
    pub(crate) configure: TypedFunc<(u32, u32), u32>,
    pub(crate) tick: TypedFunc<u32, ()>,
    pub(crate) request_headers: TypedFunc<(u32, u32, u32), u32>,
    pub(crate) response_headers: TypedFunc<(u32, u32, u32), u32>,
    pub(crate) log: TypedFunc<u32, ()>,
    pub(crate) done: TypedFunc<u32, u32>,
    pub(crate) delete: TypedFunc<u32, ()>,
    pub(crate) http_call_response: TypedFunc<(u32, u32, u32, u32, u32), ()>,
    pub(crate) grpc_receive: TypedFunc<(u32, u32, u32), ()>,
    pub(crate) grpc_close: TypedFunc<(u32, u32, u32), ()>,
}

impl Entry {
    fn look_up(instance: &Instance, store: &mut Store<State>) -> Result<Self> {
        macro_rules! func {
            ($name:literal) => {
                instance
                    .get_typed_func(&mut *store, $name)
                    .map_err(|_| HostError::MissingExport($name))?
            };
        }
        Ok(Self {
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
        })
    }
}

/// The error of a guest call that trapped.
pub(crate) fn trap(call: &'static str) -> impl FnOnce(wasmtime::Error) -> HostError {
    move |e| HostError::Trap {
        call,
        message: format!("{e:?}"),
    }
}

/// One VM running the filter with one plugin (root context).
pub struct Host {
    pub(crate) store: Store<State>,
    pub(crate) memory: Memory,
    pub(crate) entry: Entry,
    pub(crate) next_context: u32,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("next_context", &self.next_context)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Loads the built filter (see [`crate::built_module_path`]), starts the
    /// VM and creates the root context. Call [`Host::configure`] next.
    pub fn new() -> Result<Self> {
        let compiled = compiled()?;
        Self::with_module(&compiled.engine, &compiled.module)
    }

    /// Starts a VM from any compiled module (e.g. a variant under test).
    pub fn with_module(engine: &Engine, module: &Module) -> Result<Self> {
        let load = |e: wasmtime::Error| HostError::Load(format!("{e:?}"));
        let mut linker = Linker::new(engine);
        telemetry::link(&mut linker).map_err(load)?;
        dispatch::link(&mut linker).map_err(load)?;
        fields::link(&mut linker).map_err(load)?;
        request::link(&mut linker).map_err(load)?;
        wasi::link(&mut linker).map_err(load)?;
        wasi::link_missing(&mut linker, engine, module).map_err(load)?;
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
        let entry = Entry::look_up(&instance, &mut store)?;
        store.data_mut().alloc = Some(
            instance
                .get_typed_func(&mut store, "proxy_on_memory_allocate")
                .map_err(|_| HostError::MissingExport("proxy_on_memory_allocate"))?,
        );
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
        host.start()?;
        Ok(host)
    }

    /// Creates the root context and starts the VM.
    fn start(&mut self) -> Result<()> {
        self.store.data_mut().context = ROOT;
        self.entry
            .context_create
            .call(&mut self.store, (ROOT, 0))
            .map_err(trap("proxy_on_context_create"))?;
        self.entry
            .vm_start
            .call(&mut self.store, (ROOT, 0))
            .map_err(trap("proxy_on_vm_start"))?;
        Ok(())
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

    /// The size of the module's linear memory, bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }
}
