//! Guest memory: reading and writing it, handing the guest buffers from its
//! own allocator, and the ABI's serialized header maps.
//!
//! Every access is bounds-checked by wasmtime; an out-of-bounds pointer from
//! the guest becomes an error that traps the call, never a host panic.

use crate::state::State;
use crate::Headers;
use wasmtime::{Caller, Memory};

/// The caller of a host call.
pub(crate) type Ctx<'a> = Caller<'a, State>;

/// `WasmResult::Ok`.
pub(crate) const OK: u32 = 0;
/// `WasmResult::NotFound`.
pub(crate) const NOT_FOUND: u32 = 1;
/// `WasmResult::BadArgument`.
pub(crate) const BAD_ARGUMENT: u32 = 2;

/// Counts a host call, and returns early with the status (or the trap)
/// injected for it.
macro_rules! enter {
    ($caller:expr, $name:expr) => {
        if let Some(code) = $caller.data_mut().enter($name)? {
            return Ok(code);
        }
    };
}
pub(crate) use enter;

fn memory(caller: &mut Ctx<'_>) -> wasmtime::Result<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::format_err!("module exports no memory"))
}

/// `len` bytes at `ptr`.
pub(crate) fn read(caller: &mut Ctx<'_>, ptr: u32, len: u32) -> wasmtime::Result<Vec<u8>> {
    let mut out = vec![0u8; len as usize];
    memory(caller)?.read(&*caller, ptr as usize, &mut out)?;
    Ok(out)
}

/// `len` bytes at `ptr` as text (lossy).
pub(crate) fn read_str(caller: &mut Ctx<'_>, ptr: u32, len: u32) -> wasmtime::Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

/// Writes `bytes` at `ptr`.
pub(crate) fn write(caller: &mut Ctx<'_>, ptr: u32, bytes: &[u8]) -> wasmtime::Result<()> {
    memory(caller)?.write(&mut *caller, ptr as usize, bytes)?;
    Ok(())
}

/// Hands `data` to the guest: memory from its allocator, then the pointer
/// and size written to the out-parameters.
pub(crate) fn give(
    caller: &mut Ctx<'_>,
    data: &[u8],
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<()> {
    let alloc = caller
        .data()
        .alloc
        .clone()
        .ok_or_else(|| wasmtime::format_err!("no proxy_on_memory_allocate"))?;
    let len = u32::try_from(data.len())?;
    let ptr = alloc.call(&mut *caller, len)?;
    write(caller, ptr, data)?;
    write(caller, ret_ptr, &ptr.to_le_bytes())?;
    write(caller, ret_size, &len.to_le_bytes())
}

/// Hands `value` to the guest and answers Ok, or answers NotFound.
pub(crate) fn give_or_not_found(
    caller: &mut Ctx<'_>,
    value: Option<Vec<u8>>,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    match value {
        Some(value) => {
            give(caller, &value, ret_ptr, ret_size)?;
            Ok(OK)
        }
        None => Ok(NOT_FOUND),
    }
}

/// Decodes a serialized ABI header map.
pub(crate) fn parse_pairs(bytes: &[u8]) -> Option<Headers> {
    let u32_at = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let count = u32_at(0)?;
    let mut sizes = Vec::new();
    for i in 0..count {
        sizes.push((u32_at(4 + i * 8)?, u32_at(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut out = Vec::new();
    for (k, v) in sizes {
        let key = bytes.get(at..at + k)?;
        at += k + 1;
        let value = bytes.get(at..at + v)?;
        at += v + 1;
        out.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
    }
    Some(out)
}

/// Serializes a header map the ABI way (for `proxy_get_header_map_pairs`).
pub(crate) fn serialize_pairs(pairs: &Headers) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_maps_round_trip() {
        let pairs: Headers = vec![(":path".into(), b"/x".to_vec()), ("a".into(), Vec::new())];
        assert_eq!(parse_pairs(&serialize_pairs(&pairs)), Some(pairs));
        assert_eq!(parse_pairs(&[9, 0, 0, 0]), None);
    }
}
