//! modelgate: catch a slow new model or service version from its telemetry.
//!
//! The collector sits in an OpenTelemetry pipeline, turns spans into latency
//! samples per service, endpoint and version, judges each new version against
//! its baseline, and emits what it finds as metrics and a query API.
//!
//! # Layout (in the order a span travels)
//! - [`config`]: every setting, its default, and the checks that name a bad key.
//! - [`receive`]: OTLP/gRPC `TraceService/Export`; the only place protocol status codes are made.
//! - [`extract`]: span -> [`extract::Sample`] (service, endpoint, version, duration, outcome). Pure. [`extract::wire`] applies the same rules to protobuf bytes without decoding; [`extract::intern`] names series without a `String` per span.
//! - [`aggregate`]: samples -> per-series sliding windows of latency sketches, capped and expiring.
//! - [`judge`]: windows -> rule results (sla, relative, errors) -> alert states.
//! - [`emit`]: alerts and latency out: Prometheus `/metrics`, OTLP push, the query API, the dashboard and its history.
//! - [`forward`]: everything received, unchanged, to the next OTLP hop: a bounded queue, retries with backoff.
//! - [`pipeline`]: the one task that owns the aggregator and the judge, and its handle.
//! - [`snapshot`]: the pipeline's state on disk (atomic, checksummed, versioned), restored at start.
//! - [`serve`]: binds the listeners, starts the servers, shuts down in flow order; [`serve::tls`]: rustls on the three listeners.
//! - [`auth`]: the bearer token guarding receivers and API; writes always need one.
//! - [`telemetry`]: modelgate's own counters (accepted, refused, ...).
//! - [`replay`]: scenario traffic sent through the real OTLP exporter.
//! - [`analyze`]: offline judgement of JSON log files (`modelgate analyze`).
//! - [`gate`]: a CI/CD release gate asking a running collector for its verdict (`modelgate gate`).
//! - [`loadgen`]: pre-encoded OTLP batches at full speed or a fixed rate, for benchmarks.
//! - [`fixture`]: OTLP payload builder for tests and benchmarks.

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
pub mod serve;
pub mod auth;
pub mod telemetry;
pub mod replay;
pub mod analyze;
pub mod gate;
pub mod loadgen;
pub mod fixture;
#[cfg(test)]
mod testing;
