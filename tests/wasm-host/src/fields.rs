//! Header maps, buffers and properties: the host calls that read and change
//! a request, read the plugin configuration, and read a dispatched call's
//! answer.
//!
//! Names compare case-insensitively, as HTTP field names do; a map or buffer
//! the current callback has no access to answers NotFound.

use crate::memory::{
    enter, give, give_or_not_found, read, read_str, serialize_pairs, Ctx, NOT_FOUND, OK,
};
use crate::state::State;
use wasmtime::Linker;

/// Defines the buffer, header map and property calls.
pub(crate) fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    link_buffers(linker)?;
    link_header_reads(linker)?;
    link_header_writes(linker)?;
    link_properties(linker)
}

fn link_buffers(linker: &mut Linker<State>) -> wasmtime::Result<()> {
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
    Ok(())
}

fn link_header_reads(linker: &mut Linker<State>) -> wasmtime::Result<()> {
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
            give_or_not_found(&mut c, value, ret_ptr, ret_size)
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
    Ok(())
}

fn link_header_writes(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    for (name, replace) in [
        ("proxy_replace_header_map_value", true),
        ("proxy_add_header_map_value", false),
    ] {
        linker.func_wrap(
            "env",
            name,
            move |mut c: Ctx<'_>, map: u32, kp: u32, kl: u32, vp: u32, vl: u32| {
                enter!(c, name);
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
    Ok(())
}

fn link_properties(linker: &mut Linker<State>) -> wasmtime::Result<()> {
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
            give_or_not_found(&mut c, value, ret_ptr, ret_size)
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
    Ok(())
}
