//! The host calls of the proxy-wasm ABI 0.2.1 that the filter makes, each
//! turned into a `Result`.
//!
//! This is the only module that calls into the host. It must never panic,
//! whatever status or data the host answers with: a panic in a proxy-wasm
//! module traps and kills the VM (and every request on that worker). That is
//! why the filter does not use the proxy-wasm SDK's `hostcalls`, which panic
//! on statuses they do not expect. Buffers the host hands back were allocated
//! by `exports::proxy_on_memory_allocate` and are taken over here exactly once.
//!
//! On targets other than wasm32 the imports are replaced by stubs answering
//! `Unimplemented`, so the crate builds, links and unit-tests natively with no
//! unresolved `proxy_*` symbol.
#![allow(unsafe_code)]

use std::ptr::null_mut;

/// A status the host answered with (the ABI's `WasmResult`), other than Ok.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 1: the key, header, property or metric does not exist.
    NotFound,
    /// 2: the host refused an argument (e.g. an unknown cluster).
    BadArgument,
    /// 3, 4: the host could not (de)serialize a value.
    Serialization,
    /// 8: shared data changed since it was read (compare-and-swap).
    CasMismatch,
    /// 10: the host failed.
    InternalFailure,
    /// 12: the host does not implement the call.
    Unimplemented,
    /// Any other code, kept for the log.
    Other(u32),
}

impl Status {
    fn from_code(code: u32) -> Result<(), Self> {
        match code {
            0 => Ok(()),
            1 => Err(Self::NotFound),
            2 => Err(Self::BadArgument),
            3 | 4 => Err(Self::Serialization),
            8 => Err(Self::CasMismatch),
            10 => Err(Self::InternalFailure),
            12 => Err(Self::Unimplemented),
            other => Err(Self::Other(other)),
        }
    }
}

/// Log levels of the ABI.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum LogLevel {
    /// Debug.
    Debug = 1,
    /// Info.
    Info = 2,
    /// Warn.
    Warn = 3,
    /// Error.
    Error = 4,
}

/// Header maps of the ABI.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum MapType {
    /// Downstream request headers.
    RequestHeaders = 0,
    /// Response headers.
    ResponseHeaders = 2,
    /// Headers of a dispatched HTTP call's response.
    HttpCallResponseHeaders = 6,
}

/// Buffers of the ABI.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum BufferType {
    /// Body of a dispatched HTTP call's response.
    HttpCallResponseBody = 4,
    /// The plugin configuration (`on_configure`).
    PluginConfiguration = 7,
}

/// Metric kinds of the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MetricType {
    /// Monotonic counter.
    Counter = 0,
    /// Histogram of recorded values.
    Histogram = 2,
}

#[cfg(target_arch = "wasm32")]
mod raw {
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub(super) fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
        pub(super) fn proxy_get_current_time_nanoseconds(ret: *mut u64) -> u32;
        pub(super) fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub(super) fn proxy_get_buffer_bytes(
            kind: u32,
            start: usize,
            max: usize,
            ret_data: *mut *mut u8,
            ret_size: *mut usize,
        ) -> u32;
        pub(super) fn proxy_get_header_map_value(
            map: u32,
            key: *const u8,
            key_size: usize,
            ret_data: *mut *mut u8,
            ret_size: *mut usize,
        ) -> u32;
        pub(super) fn proxy_replace_header_map_value(
            map: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        pub(super) fn proxy_get_property(
            path: *const u8,
            path_size: usize,
            ret_data: *mut *mut u8,
            ret_size: *mut usize,
        ) -> u32;
        pub(super) fn proxy_http_call(
            upstream: *const u8,
            upstream_size: usize,
            headers: *const u8,
            headers_size: usize,
            body: *const u8,
            body_size: usize,
            trailers: *const u8,
            trailers_size: usize,
            timeout_ms: u32,
            ret_token: *mut u32,
        ) -> u32;
        pub(super) fn proxy_grpc_call(
            upstream: *const u8,
            upstream_size: usize,
            service: *const u8,
            service_size: usize,
            method: *const u8,
            method_size: usize,
            metadata: *const u8,
            metadata_size: usize,
            message: *const u8,
            message_size: usize,
            timeout_ms: u32,
            ret_token: *mut u32,
        ) -> u32;
        pub(super) fn proxy_get_shared_data(
            key: *const u8,
            key_size: usize,
            ret_data: *mut *mut u8,
            ret_size: *mut usize,
            ret_cas: *mut u32,
        ) -> u32;
        pub(super) fn proxy_set_shared_data(
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
        pub(super) fn proxy_define_metric(
            kind: u32,
            name: *const u8,
            name_size: usize,
            ret_id: *mut u32,
        ) -> u32;
        pub(super) fn proxy_increment_metric(id: u32, offset: i64) -> u32;
        pub(super) fn proxy_record_metric(id: u32, value: u64) -> u32;
    }
}

/// Native stand-ins: same signatures, every call answers `Unimplemented`.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::too_many_arguments, clippy::missing_safety_doc)]
mod raw {
    const UNIMPLEMENTED: u32 = 12;
    pub(super) unsafe fn proxy_log(_: u32, _: *const u8, _: usize) -> u32 {
        UNIMPLEMENTED
    }
    pub(super) unsafe fn proxy_get_current_time_nanoseconds(_: *mut u64) -> u32 {
        UNIMPLEMENTED
    }
    pub(super) unsafe fn proxy_set_tick_period_milliseconds(_: u32) -> u32 {
        UNIMPLEMENTED
    }
    pub(super) unsafe fn proxy_get_buffer_bytes(
        _: u32,
        _: usize,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub(super) unsafe fn proxy_get_header_map_value(
        _: u32,
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub(super) unsafe fn proxy_replace_header_map_value(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub(super) unsafe fn proxy_get_property(
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub(super) unsafe fn proxy_http_call(
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: u32,
        _: *mut u32,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub(super) unsafe fn proxy_grpc_call(
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: u32,
        _: *mut u32,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub(super) unsafe fn proxy_get_shared_data(
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
        _: *mut u32,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub(super) unsafe fn proxy_set_shared_data(
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: u32,
    ) -> u32 {
        UNIMPLEMENTED
    }
    pub(super) unsafe fn proxy_define_metric(_: u32, _: *const u8, _: usize, _: *mut u32) -> u32 {
        UNIMPLEMENTED
    }
    pub(super) unsafe fn proxy_increment_metric(_: u32, _: i64) -> u32 {
        UNIMPLEMENTED
    }
    pub(super) unsafe fn proxy_record_metric(_: u32, _: u64) -> u32 {
        UNIMPLEMENTED
    }
}

/// Takes over a buffer the host allocated through `proxy_on_memory_allocate`.
///
/// # Safety
/// `data` is null or was returned by `proxy_on_memory_allocate(size)` and is
/// not owned by anyone else.
unsafe fn take_host_buffer(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: the allocator hands out `Box<[u8]>` of exactly `size` bytes, so
    // length == capacity == size and the layout matches.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Writes a line to the proxy's log. A failing log is ignored: there is
/// nowhere else to report it.
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: pointer and length of a live str.
    let _ = unsafe { raw::proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// The host's wall clock, in unix nanoseconds.
pub fn now_nanos() -> Result<u64, Status> {
    let mut now = 0u64;
    // SAFETY: `now` outlives the call.
    Status::from_code(unsafe { raw::proxy_get_current_time_nanoseconds(&mut now) })?;
    Ok(now)
}

/// Asks the host to call `proxy_on_tick` every `millis` (0 stops it).
pub fn set_tick_period(millis: u32) -> Result<(), Status> {
    // SAFETY: plain value.
    Status::from_code(unsafe { raw::proxy_set_tick_period_milliseconds(millis) })
}

/// Reads at most `max` bytes of a host buffer. `Ok(None)`: no such buffer.
pub fn get_buffer(kind: BufferType, max: usize) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut::<u8>(), 0usize);
    // SAFETY: out-pointers outlive the call.
    let code = unsafe { raw::proxy_get_buffer_bytes(kind as u32, 0, max, &mut data, &mut size) };
    match Status::from_code(code) {
        // SAFETY: on Ok the host returned a buffer from our allocator (or null).
        Ok(()) => Ok(unsafe { take_host_buffer(data, size) }),
        Err(Status::NotFound) => Ok(None),
        Err(status) => Err(status),
    }
}

/// One header's value as bytes. `Ok(None)`: the header is absent.
pub fn get_header(map: MapType, name: &str) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut::<u8>(), 0usize);
    // SAFETY: key slice and out-pointers outlive the call.
    let code = unsafe {
        raw::proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    match Status::from_code(code) {
        // SAFETY: as in `get_buffer`; a null buffer is an empty value.
        Ok(()) => Ok(Some(
            unsafe { take_host_buffer(data, size) }.unwrap_or_default(),
        )),
        Err(Status::NotFound) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Sets (adds or replaces) one header.
pub fn set_header(map: MapType, name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: slices outlive the call.
    Status::from_code(unsafe {
        raw::proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// A property (e.g. `["request", "duration"]`) as the host serializes it.
/// `Ok(None)`: the host does not have it.
pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    // The ABI's path: each segment followed by a NUL byte.
    let mut serialized = Vec::with_capacity(path.iter().map(|p| p.len() + 1).sum());
    for part in path {
        serialized.extend_from_slice(part.as_bytes());
        serialized.push(0);
    }
    let (mut data, mut size) = (null_mut::<u8>(), 0usize);
    // SAFETY: path slice and out-pointers outlive the call.
    let code = unsafe {
        raw::proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size)
    };
    match Status::from_code(code) {
        // SAFETY: as in `get_buffer`.
        Ok(()) => Ok(unsafe { take_host_buffer(data, size) }),
        Err(Status::NotFound) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Serializes a header map the way the ABI expects: the pair count, each
/// key and value length (u32 little endian), then each key and value
/// followed by a NUL byte.
fn serialize_pairs(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| 10 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&u32::try_from(pairs.len()).unwrap_or(0).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(0).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

fn as_pairs<'a>(text: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a [u8])> {
    text.iter().map(|(k, v)| (*k, v.as_bytes())).collect()
}

/// Dispatches an HTTP call to an Envoy cluster; the answer arrives in
/// `proxy_on_http_call_response` with the returned token.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout_ms: u32,
) -> Result<u32, Status> {
    let headers = serialize_pairs(&as_pairs(headers));
    let trailers = serialize_pairs(&[]);
    let mut token = 0u32;
    // SAFETY: all slices and the out-pointer outlive the call.
    Status::from_code(unsafe {
        raw::proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

/// Dispatches a unary gRPC call to an Envoy cluster; the answer arrives in
/// `proxy_on_grpc_receive` (success) or `proxy_on_grpc_close` (failure).
pub fn grpc_call(
    cluster: &str,
    (service, method): (&str, &str),
    metadata: &[(&str, &str)],
    message: &[u8],
    timeout_ms: u32,
) -> Result<u32, Status> {
    let metadata = serialize_pairs(&as_pairs(metadata));
    let mut token = 0u32;
    // SAFETY: all slices and the out-pointer outlive the call.
    Status::from_code(unsafe {
        raw::proxy_grpc_call(
            cluster.as_ptr(),
            cluster.len(),
            service.as_ptr(),
            service.len(),
            method.as_ptr(),
            method.len(),
            metadata.as_ptr(),
            metadata.len(),
            message.as_ptr(),
            message.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

/// A shared-data value (shared by every VM of the proxy with the same VM
/// id) and its compare-and-swap token. `Ok(None)`: no such key.
pub fn get_shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, Status> {
    let (mut data, mut size, mut cas) = (null_mut::<u8>(), 0usize, 0u32);
    // SAFETY: key slice and out-pointers outlive the call.
    let code = unsafe {
        raw::proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
    };
    match Status::from_code(code) {
        // SAFETY: as in `get_buffer`; a null buffer is an empty value.
        Ok(()) => Ok(Some((
            unsafe { take_host_buffer(data, size) }.unwrap_or_default(),
            cas,
        ))),
        Err(Status::NotFound) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Sets a shared-data value if its compare-and-swap token is still `cas`
/// (0: unconditionally); `Err(CasMismatch)` when another VM wrote first.
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: slices outlive the call.
    Status::from_code(unsafe {
        raw::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Defines a metric and returns its id. Envoy hands out a new id on every
/// call, so callers cache the id (see `stats`).
pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: name slice and out-pointer outlive the call.
    Status::from_code(unsafe {
        raw::proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id)
    })?;
    Ok(id)
}

/// Adds `offset` to a counter.
pub fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: plain values.
    Status::from_code(unsafe { raw::proxy_increment_metric(id, offset) })
}

/// Records one value into a histogram.
pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: plain values.
    Status::from_code(unsafe { raw::proxy_record_metric(id, value) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_serialize_as_the_abi_expects() {
        let out = serialize_pairs(&[(":path", b"/x"), ("a", b"")]);
        assert_eq!(&out[..4], &2u32.to_le_bytes());
        assert_eq!(&out[4..8], &5u32.to_le_bytes());
        assert_eq!(&out[8..12], &2u32.to_le_bytes());
        assert_eq!(&out[20..], b":path\0/x\0a\0\0");
    }

    #[test]
    fn native_stubs_answer_unimplemented() {
        assert_eq!(now_nanos(), Err(Status::Unimplemented));
        assert_eq!(
            get_header(MapType::RequestHeaders, "x"),
            Err(Status::Unimplemented)
        );
    }
}
