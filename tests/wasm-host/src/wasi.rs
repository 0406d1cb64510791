//! The WASI calls a Rust `wasm32-wasip1` module may import, as Envoy's host
//! provides them (stdout and stderr become log lines, the clock is the
//! host's, randomness is deterministic per host), and every other import
//! answered like a host that lacks it.

use crate::memory::{read, write, Ctx, OK};
use crate::state::State;
use crate::Status;
use wasmtime::{Engine, Linker, Module, Store, Val};

const WASI: &str = "wasi_snapshot_preview1";
/// WASI's `badf`.
const BADF: u32 = 8;
/// WASI's `nosys`: what an import the host lacks answers.
const NOSYS: i32 = 52;

/// Defines the WASI calls.
pub(crate) fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    link_output(linker)?;
    link_environment(linker)
}

fn link_output(linker: &mut Linker<State>) -> wasmtime::Result<()> {
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
            c.data_mut().logs.push(crate::LogLine {
                level: 9,
                message: String::from_utf8_lossy(&text).into_owned(),
            });
            write(&mut c, ret, &written.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Ctx<'_>, code: u32| -> wasmtime::Result<()> { wasmtime::bail!("proc_exit({code})") },
    )?;
    Ok(())
}

fn link_environment(linker: &mut Linker<State>) -> wasmtime::Result<()> {
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
    linker.func_wrap(
        WASI,
        "args_sizes_get",
        |mut c: Ctx<'_>, count: u32, size: u32| {
            write(&mut c, count, &0u32.to_le_bytes())?;
            write(&mut c, size, &0u32.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(WASI, "args_get", |_: Ctx<'_>, _: u32, _: u32| Ok(OK))?;
    // The VM's environment (Envoy's `vm_config.environment_variables`):
    // `KEY=VALUE\0` strings, and a pointer to each.
    linker.func_wrap(
        WASI,
        "environ_sizes_get",
        |mut c: Ctx<'_>, count: u32, size: u32| {
            let env = c.data().environment();
            let n = u32::try_from(env.len())?;
            let bytes = u32::try_from(env.iter().map(Vec::len).sum::<usize>())?;
            write(&mut c, count, &n.to_le_bytes())?;
            write(&mut c, size, &bytes.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        WASI,
        "environ_get",
        |mut c: Ctx<'_>, pointers: u32, buffer: u32| {
            let mut at = buffer;
            for (n, entry) in c.data().environment().iter().enumerate() {
                write(&mut c, pointers + 4 * u32::try_from(n)?, &at.to_le_bytes())?;
                write(&mut c, at, entry)?;
                at += u32::try_from(entry.len())?;
            }
            Ok(OK)
        },
    )?;
    linker.func_wrap(WASI, "sched_yield", |_: Ctx<'_>| Ok(OK))?;
    Ok(())
}

/// Any import of `module` the linker does not define yet answers like a host
/// that lacks it (`Unimplemented` for `env`, `nosys` for WASI), and is
/// counted as `module.name`.
pub(crate) fn link_missing(
    linker: &mut Linker<State>,
    engine: &Engine,
    module: &Module,
) -> wasmtime::Result<()> {
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
            NOSYS
        };
        let key = format!("{m}.{name}");
        linker.func_new(&m, &name, ty, move |mut c, _params, results| {
            *c.data_mut().calls.entry(key.clone()).or_default() += 1;
            if let Some(r) = results.first_mut() {
                *r = Val::I32(fallback);
            }
            Ok(())
        })?;
    }
    Ok(())
}
