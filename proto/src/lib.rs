//! modelgate's query API, package `modelgate.v1`, generated from
//! `proto/modelgate/v1/query.proto` at build time.
//!
//! The messages carry serde implementations of the proto3 JSON mapping (proto
//! field names, every field present) so the admin port can serve the very same
//! data as JSON. This crate holds no logic: it must never grow any.

/// Version 1 of the query API.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/modelgate.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/modelgate.v1.serde.rs"));
}
