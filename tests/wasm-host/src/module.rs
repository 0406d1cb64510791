//! The built filter module: where `scripts/build-wasm` puts it, its bytes,
//! its imports and exports, and the one compiled copy a test binary shares.

use crate::{HostError, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wasmtime::{Engine, Module};

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

/// The module's export names.
pub fn module_exports(wasm: &[u8]) -> Result<Vec<String>> {
    Ok(parse(wasm)?
        .exports()
        .map(|e| e.name().to_owned())
        .collect())
}
