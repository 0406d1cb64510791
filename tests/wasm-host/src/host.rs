//! [`Host`]: one VM running the filter with one plugin (root context):
//! loading and linking the module, configuring the plugin, injecting
//! failures, and what a test inspects afterwards.
//!
//! Every guest call goes through [`trap`], so a trap is an error, never hidden.

use crate::module::compiled;
use crate::shared::SharedData;
use crate::state::State;
use crate::START_UNIX_NANOS;
use crate::{dispatch, fields, request, shared, telemetry, wasi, HostError, Result, Status};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wasmtime::{Engine, Instance, Linker, Memory, Module, Store, TypedFunc, Val};

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
    instance: Instance,
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
    /// VM and creates the root context. Call [`Host::configure`] next. The VM
    /// is a proxy of its own (see [`crate::Proxy`] for several workers).
    pub fn new() -> Result<Self> {
        let mut host = Self::new_with(Arc::default(), 0)?;
        host.start()?;
        Ok(host)
    }

    /// The built filter in a VM sharing `shared`, its randomness seeded by
    /// `worker`; not started.
    pub(crate) fn new_with(shared: Arc<Mutex<SharedData>>, worker: u64) -> Result<Self> {
        let compiled = compiled()?;
        Self::instantiate(&compiled.engine, &compiled.module, shared, worker)
    }

    /// Starts a VM from any compiled module (e.g. a variant under test).
    pub fn with_module(engine: &Engine, module: &Module) -> Result<Self> {
        let mut host = Self::instantiate(engine, module, Arc::default(), 0)?;
        host.start()?;
        Ok(host)
    }

    fn instantiate(
        engine: &Engine,
        module: &Module,
        shared: Arc<Mutex<SharedData>>,
        worker: u64,
    ) -> Result<Self> {
        let load = |e: wasmtime::Error| HostError::Load(format!("{e:?}"));
        let mut linker = Linker::new(engine);
        telemetry::link(&mut linker).map_err(load)?;
        dispatch::link(&mut linker).map_err(load)?;
        fields::link(&mut linker).map_err(load)?;
        request::link(&mut linker).map_err(load)?;
        shared::link(&mut linker).map_err(load)?;
        wasi::link(&mut linker).map_err(load)?;
        wasi::link_missing(&mut linker, engine, module).map_err(load)?;
        let state = State {
            clock_nanos: START_UNIX_NANOS,
            rng: 0x5eed ^ worker.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            shared,
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
        Ok(Self {
            store,
            instance,
            memory,
            entry,
            next_context: ROOT + 1,
        })
    }

    /// Creates the root context and starts the VM.
    pub(crate) fn start(&mut self) -> Result<()> {
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

    /// Sets an environment variable of the VM (Envoy's
    /// `vm_config.environment_variables`), read by the filter through WASI.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.store
            .data_mut()
            .env
            .push((key.to_owned(), value.to_owned()));
    }

    /// Makes the host call `name` (e.g. `proxy_get_header_map_value`)
    /// answer `status` without doing anything, until cleared.
    pub fn inject_failure(&mut self, name: &str, status: Status) {
        self.store
            .data_mut()
            .failures
            .insert(name.to_owned(), status as u32);
    }

    /// Makes the host call `name` trap, as ngx_wasm_module's calls it has
    /// not implemented do (e.g. `proxy_grpc_call`), until cleared. A VM
    /// that trapped is rebuilt by the host: see [`crate::Proxy::worker`].
    pub fn inject_trap(&mut self, name: &str) {
        self.store.data_mut().traps.insert(name.to_owned());
    }

    /// Removes every injected failure and trap.
    pub fn clear_failures(&mut self) {
        let state = self.store.data_mut();
        state.failures.clear();
        state.traps.clear();
    }

    /// Calls the module's export `name` with `args` (all `i32`, as every
    /// ABI callback takes), in the context `args[0]`; its `i32` result, if
    /// it has one. For callbacks the other methods do not drive.
    pub fn call_export(&mut self, name: &'static str, args: &[i32]) -> Result<Option<i32>> {
        let func = self
            .instance
            .get_func(&mut self.store, name)
            .ok_or(HostError::MissingExport(name))?;
        let params: Vec<Val> = args.iter().map(|a| Val::I32(*a)).collect();
        let mut results = vec![Val::I32(0); func.ty(&self.store).results().len()];
        if let Some(context) = args.first() {
            self.store.data_mut().context = *context as u32;
        }
        func.call(&mut self.store, &params, &mut results)
            .map_err(trap(name))?;
        self.store.data_mut().context = ROOT;
        Ok(results.first().and_then(Val::i32))
    }

    /// The root context's id (the first argument of root callbacks).
    pub fn root_context(&self) -> u32 {
        ROOT
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
