//! Receive: where OTLP enters modelgate.
//!
//! - [`grpc`]: OTLP/gRPC `TraceService/Export` on `receiver.grpc_listen`.
//!
//! Receivers decode, call [`crate::extract`] inline and hand the samples to
//! the pipeline without waiting; they are the only place where protocol
//! status codes are made. They never keep state of their own.

pub mod grpc;
