//! modelgate's collector: catch a slow new model or service version from its
//! telemetry.
//!
//! The collector sits in an OpenTelemetry pipeline, turns spans into latency
//! samples per service, endpoint and version, judges each new version against
//! its baseline, and emits what it finds as metrics and a query API.
//!
//! This library is the server only. The `modelgate` binary and the client
//! tools that talk to a running collector or judge files offline (`gate`,
//! `replay`, `analyze`, `loadgen`) are the `modelgate` crate in `cli/`; the
//! OTLP payload builder of the tests is `modelgate-fixture` in
//! `tests/fixture/`, a dev-dependency only, never in a release build.
//!
//! # Layout (in the order a span travels)
//! - [`config`]: every setting, its default, and the checks that name a bad key.
//! - [`codec`]: gRPC messages as raw bytes, for clients that send exports as they are (the forwarder, `modelgate loadgen`).
//! - [`receive`]: OTLP/gRPC `TraceService/Export`; the only place protocol status codes are made.
//! - [`extract`]: span -> [`extract::Sample`] (service, endpoint, version, duration, outcome). Pure. [`extract::wire`] applies the same rules to protobuf bytes without decoding; [`extract::intern`] names series without a `String` per span.
//! - [`aggregate`]: samples -> per-series sliding windows of latency sketches, capped and expiring.
//! - [`judge`]: windows -> rule results (sla, relative, errors) -> alert states.
//! - [`emit`]: alerts and latency out: Prometheus `/metrics`, OTLP push, the query API, the dashboard and its history.
//! - [`forward`]: everything received, unchanged, to the next OTLP hop: a bounded queue, retries with backoff.
//! - [`pipeline`]: the one task that owns the aggregator and the judge, and its handle.
//! - [`offline`]: records judged by their own time, as live (`modelgate analyze`).
//! - [`snapshot`]: the pipeline's state on disk (atomic, checksummed, versioned), restored at start.
//! - [`serve`]: binds the listeners, starts the servers, shuts down in flow order; [`serve::tls`]: rustls on the three listeners.
//! - [`auth`]: the bearer token guarding receivers and API; writes always need one.
//! - [`telemetry`]: modelgate's own counters (accepted, refused, ...).

pub mod config;
pub mod codec;
pub mod receive;
pub mod extract;
pub mod aggregate;
pub mod judge;
pub mod emit;
pub mod forward;
pub mod pipeline;
pub mod snapshot;
pub mod offline;
pub mod serve;
pub mod auth;
pub mod telemetry;
#[cfg(test)]
mod testing;
