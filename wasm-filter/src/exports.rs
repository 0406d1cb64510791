//! The functions the host calls (proxy-wasm ABI 0.2.1), and the table of
//! contexts they are routed to.
//!
//! Every callback of the ABI is exported, even those the filter has no use
//! for: the ABI makes them optional, but hosts are tested with SDK-built
//! filters that export them all, and one (ngx_wasm_module) calls the body
//! callbacks through a null reference when they are missing. Those pass
//! through: bodies, trailers and TCP data continue untouched, the others do
//! nothing.
//!
//! This module must never panic or trap: every entry point reaches the state
//! through `try_borrow_mut` and does nothing if it cannot (fail open), ids
//! the filter does not know are ignored, and nothing here unwraps. Request
//! contexts are forgotten at `proxy_on_delete`, and at most
//! `MAX_REQUESTS` are tracked at once.
#![allow(unsafe_code)] // `#[no_mangle]` exports and the allocator.

use crate::http::Request;
use crate::root::Root;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};

/// Most request contexts tracked at once; past it requests pass unstamped
/// instead of growing memory (a host that never deletes contexts).
const MAX_REQUESTS: usize = 100_000;

/// One request context: its root and what was stamped.
struct Stream {
    root: u32,
    request: Option<Request>,
}

#[derive(Default)]
struct Vm {
    roots: BTreeMap<u32, Root>,
    streams: BTreeMap<u32, Stream>,
}

thread_local! {
    static VM: RefCell<Vm> = RefCell::new(Vm::default());
}

fn with_vm<R: Default>(f: impl FnOnce(&mut Vm) -> R) -> R {
    VM.try_with(|vm| match vm.try_borrow_mut() {
        Ok(mut vm) => f(&mut vm),
        Err(_) => R::default(),
    })
    .unwrap_or_default()
}

/// Runs `f` on a request context and its root.
fn with_stream(context_id: u32, f: impl FnOnce(&mut Stream, &mut Root)) {
    with_vm(|vm| {
        let Vm { roots, streams } = vm;
        if let Some(stream) = streams.get_mut(&context_id) {
            if let Some(root) = roots.get_mut(&stream.root) {
                f(stream, root);
            }
        }
    });
}

/// A seed for a root's id generator: the WASI random source (through std)
/// mixed with the context id and the host clock.
fn seed(context_id: u32) -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(context_id);
    hasher.write_u64(crate::abi::now_nanos().unwrap_or(0));
    hasher.finish()
}

#[cfg(target_os = "wasi")]
extern "C" {
    fn __wasm_call_ctors();
}

/// Reactor initialization: Envoy calls it once before anything else.
#[no_mangle]
pub extern "C" fn _initialize() {
    #[cfg(target_os = "wasi")]
    // SAFETY: the linker-provided constructor runner, called once, first.
    unsafe {
        __wasm_call_ctors();
    }
}

/// `Action::Continue`: the stream goes on.
const CONTINUE: u32 = 0;

/// Marks the ABI version this module speaks.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory for data the host hands to the filter; the filter takes it over
/// in `abi` (a `Box<[u8]>` of exactly `size` bytes).
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    Box::into_raw(vec![0u8; size].into_boxed_slice()).cast::<u8>()
}

/// A new context: a root (`parent == 0`) or a request of root `parent`.
#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
    if parent_id == 0 {
        let root = Root::new(seed(context_id));
        with_vm(|vm| {
            vm.roots.insert(context_id, root);
        });
    } else {
        with_vm(|vm| {
            if vm.roots.contains_key(&parent_id) && vm.streams.len() < MAX_REQUESTS {
                vm.streams.insert(
                    context_id,
                    Stream {
                        root: parent_id,
                        request: None,
                    },
                );
            }
        });
    }
}

/// The VM started; nothing to do (the plugin configuration comes next).
#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _vm_configuration_size: usize) -> u32 {
    1
}

/// The plugin's configuration; 0 refuses it.
#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, configuration_size: usize) -> u32 {
    with_vm(|vm| {
        vm.roots
            .get_mut(&context_id)
            .is_some_and(|root| root.on_configure(configuration_size))
    })
    .into()
}

/// The timer of a root.
#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    with_vm(|vm| {
        if let Some(root) = vm.roots.get_mut(&context_id) {
            root.on_tick();
        }
    });
}

/// Request headers: stamp. Always Continue.
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _headers: usize, _eos: u32) -> u32 {
    with_stream(context_id, |stream, root| {
        if stream.request.is_none() {
            stream.request = Request::on_request_headers(root);
        }
    });
    CONTINUE
}

/// A chunk of the request body: passes through.
#[no_mangle]
pub extern "C" fn proxy_on_request_body(_context_id: u32, _size: usize, _eos: u32) -> u32 {
    CONTINUE
}

/// Request trailers: pass through.
#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(_context_id: u32, _trailers: usize) -> u32 {
    CONTINUE
}

/// Response headers: note status and served version. Always Continue.
#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context_id: u32, _headers: usize, _eos: u32) -> u32 {
    with_stream(context_id, |stream, root| {
        if let Some(request) = &mut stream.request {
            request.on_response_headers(root);
        }
    });
    CONTINUE
}

/// A chunk of the response body: passes through.
#[no_mangle]
pub extern "C" fn proxy_on_response_body(_context_id: u32, _size: usize, _eos: u32) -> u32 {
    CONTINUE
}

/// Response trailers: pass through.
#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_context_id: u32, _trailers: usize) -> u32 {
    CONTINUE
}

/// A TCP connection (the filter configured as a network filter by
/// mistake): passes through.
#[no_mangle]
pub extern "C" fn proxy_on_new_connection(_context_id: u32) -> u32 {
    CONTINUE
}

/// TCP data from downstream: passes through.
#[no_mangle]
pub extern "C" fn proxy_on_downstream_data(_context_id: u32, _size: usize, _eos: u32) -> u32 {
    CONTINUE
}

/// TCP data from upstream: passes through.
#[no_mangle]
pub extern "C" fn proxy_on_upstream_data(_context_id: u32, _size: usize, _eos: u32) -> u32 {
    CONTINUE
}

/// The downstream connection closed: nothing to do.
#[no_mangle]
pub extern "C" fn proxy_on_downstream_connection_close(_context_id: u32, _peer: u32) {}

/// The upstream connection closed: nothing to do.
#[no_mangle]
pub extern "C" fn proxy_on_upstream_connection_close(_context_id: u32, _peer: u32) {}

/// The request is over: time, record, buffer.
#[no_mangle]
pub extern "C" fn proxy_on_log(context_id: u32) {
    with_stream(context_id, |stream, root| {
        if let Some(request) = &mut stream.request {
            request.on_log(root);
        }
    });
}

/// The host asks whether the context may be deleted: always yes.
#[no_mangle]
pub extern "C" fn proxy_on_done(_context_id: u32) -> u32 {
    1
}

/// The context is gone: forget it.
#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    with_vm(|vm| {
        if vm.streams.remove(&context_id).is_none() {
            vm.roots.remove(&context_id);
        }
    });
}

/// The answer to a dispatched HTTP call (the regression poll).
#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    _headers: usize,
    body_size: usize,
    _trailers: usize,
) {
    with_vm(|vm| {
        if let Some(root) = vm.roots.get_mut(&context_id) {
            root.on_http_call_response(token, body_size);
        }
    });
}

/// Initial metadata of a gRPC answer: not needed (the export is unary).
#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_initial_metadata(_context_id: u32, _token: u32, _n: usize) {
}

/// Trailing metadata of a gRPC answer: not needed (the status comes in
/// `proxy_on_grpc_close`).
#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_trailing_metadata(
    _context_id: u32,
    _token: u32,
    _n: usize,
) {
}

/// A shared queue has an item: the filter registers none, so nothing to do.
#[no_mangle]
pub extern "C" fn proxy_on_queue_ready(_context_id: u32, _queue_id: u32) {}

/// A foreign function called back: the filter registers none.
#[no_mangle]
pub extern "C" fn proxy_on_foreign_function(_context_id: u32, _function_id: u32, _size: usize) {}

/// A unary gRPC call succeeded (the export).
#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive(context_id: u32, token: u32, _size: usize) {
    with_vm(|vm| {
        if let Some(root) = vm.roots.get_mut(&context_id) {
            root.on_grpc_response(token, 0);
        }
    });
}

/// A gRPC call ended with `status` (for a unary call: it failed).
#[no_mangle]
pub extern "C" fn proxy_on_grpc_close(context_id: u32, token: u32, status: u32) {
    with_vm(|vm| {
        if let Some(root) = vm.roots.get_mut(&context_id) {
            root.on_grpc_response(token, status);
        }
    });
}
