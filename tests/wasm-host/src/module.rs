//! The built filter module: where `scripts/build-wasm` puts it, its bytes,
//! its imports and exports, and the one compiled copy a test binary shares.

use crate::{HostError, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wasmtime::{Engine, ExternType, Module, ValType};

/// Where `scripts/build-wasm` puts the module, under the cargo target dir.
pub const MODULE_SUBPATH: &str = "wasm32-wasip1/wasm/modelgate_wasm_filter.wasm";

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

/// A callback of proxy-wasm ABI 0.2.1 a module may export: every argument
/// and result is an `i32` (`size_t` and pointers are 32-bit in wasm32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Callback {
    /// Its export name.
    pub name: &'static str,
    /// How many arguments it takes; the first is a context id, except for
    /// `proxy_on_memory_allocate`.
    pub params: usize,
    /// Whether it returns a value (an action, a bool or a pointer).
    pub returns: bool,
}

impl Callback {
    const fn new(name: &'static str, params: usize, returns: bool) -> Self {
        Self {
            name,
            params,
            returns,
        }
    }

    /// Its signature as [`export_signatures`] shows one.
    pub fn signature(&self) -> String {
        signature(self.params, usize::from(self.returns))
    }
}

fn signature(params: usize, results: usize) -> String {
    format!(
        "({}) -> ({})",
        vec!["i32"; params].join(", "),
        vec!["i32"; results].join(", ")
    )
}

/// Every callback of proxy-wasm ABI 0.2.1 (the spec's "callbacks exposed by
/// the Wasm module", less `main`, `_start` and the deprecated `malloc`,
/// which a module exporting `_initialize` and `proxy_on_memory_allocate`
/// does not need). The filter exports them all: a host may call any.
pub const ABI_CALLBACKS: &[Callback] = &[
    Callback::new("_initialize", 0, false),
    Callback::new("proxy_abi_version_0_2_1", 0, false),
    Callback::new("proxy_on_memory_allocate", 1, true),
    Callback::new("proxy_on_context_create", 2, false),
    Callback::new("proxy_on_vm_start", 2, true),
    Callback::new("proxy_on_configure", 2, true),
    Callback::new("proxy_on_tick", 1, false),
    Callback::new("proxy_on_new_connection", 1, true),
    Callback::new("proxy_on_downstream_data", 3, true),
    Callback::new("proxy_on_downstream_connection_close", 2, false),
    Callback::new("proxy_on_upstream_data", 3, true),
    Callback::new("proxy_on_upstream_connection_close", 2, false),
    Callback::new("proxy_on_request_headers", 3, true),
    Callback::new("proxy_on_request_body", 3, true),
    Callback::new("proxy_on_request_trailers", 2, true),
    Callback::new("proxy_on_response_headers", 3, true),
    Callback::new("proxy_on_response_body", 3, true),
    Callback::new("proxy_on_response_trailers", 2, true),
    Callback::new("proxy_on_http_call_response", 5, false),
    Callback::new("proxy_on_grpc_receive_initial_metadata", 3, false),
    Callback::new("proxy_on_grpc_receive", 3, false),
    Callback::new("proxy_on_grpc_receive_trailing_metadata", 3, false),
    Callback::new("proxy_on_grpc_close", 3, false),
    Callback::new("proxy_on_queue_ready", 2, false),
    Callback::new("proxy_on_foreign_function", 3, false),
    Callback::new("proxy_on_log", 1, false),
    Callback::new("proxy_on_done", 1, true),
    Callback::new("proxy_on_delete", 1, false),
];

/// The compiled module, shared by every `Host` of a test binary (compiling
/// is the slow part).
pub(crate) struct Compiled {
    pub(crate) engine: Engine,
    pub(crate) module: Module,
}

static BUILT: OnceLock<std::result::Result<Compiled, String>> = OnceLock::new();

/// The built filter, compiled once per test binary.
pub(crate) fn compiled() -> Result<&'static Compiled> {
    let compiled = BUILT.get_or_init(|| {
        let wasm = built_module().map_err(|e| e.to_string())?;
        let engine = Engine::default();
        let module = Module::new(&engine, wasm).map_err(|e| format!("{e:?}"))?;
        Ok(Compiled { engine, module })
    });
    compiled.as_ref().map_err(|e| {
        if e.contains("scripts/build-wasm") {
            HostError::NotBuilt(built_module_path())
        } else {
            HostError::Load(e.clone())
        }
    })
}

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

fn parse(wasm: &[u8]) -> Result<Module> {
    Module::new(&Engine::default(), wasm).map_err(|e| HostError::Load(format!("{e:?}")))
}

/// The module's imports as `(module, name)`.
pub fn module_imports(wasm: &[u8]) -> Result<Vec<(String, String)>> {
    Ok(parse(wasm)?
        .imports()
        .map(|i| (i.module().to_owned(), i.name().to_owned()))
        .collect())
}

/// The module's exported functions and their signatures, as
/// [`Callback::signature`] writes them (`?` for a type other than `i32`).
pub fn export_signatures(wasm: &[u8]) -> Result<Vec<(String, String)>> {
    Ok(parse(wasm)?
        .exports()
        .filter_map(|e| match e.ty() {
            ExternType::Func(f) => {
                let all_i32 = f
                    .params()
                    .chain(f.results())
                    .all(|t| matches!(t, ValType::I32));
                let shown = if all_i32 {
                    signature(f.params().len(), f.results().len())
                } else {
                    "?".to_owned()
                };
                Some((e.name().to_owned(), shown))
            }
            _ => None,
        })
        .collect())
}

/// The module's export names.
pub fn module_exports(wasm: &[u8]) -> Result<Vec<String>> {
    Ok(parse(wasm)?
        .exports()
        .map(|e| e.name().to_owned())
        .collect())
}
