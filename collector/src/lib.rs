//! modelgate: catch a slow new model or service version from its telemetry.
//!
//! The collector sits in an OpenTelemetry pipeline, turns spans into latency
//! samples per service, endpoint and version, judges each new version against
//! its baseline, and emits what it finds as metrics and a query API.
//!
//! # Layout (in the order a span travels)
//! - [`config`]: every setting, its default, and the checks that name a bad key.
//! - [`receive`]: OTLP/gRPC `TraceService/Export`; the only place protocol status codes are made.
//! - [`extract`]: span -> [`extract::Sample`] (service, endpoint, version, duration, outcome). Pure.
//! - [`aggregate`]: samples -> per-series sliding windows of latency sketches, capped and expiring.
//! - [`judge`]: windows -> rule results (sla, relative, errors) -> alert states.
//! - [`emit`]: alerts and latency out: Prometheus `/metrics`, OTLP push, the query API.
//! - [`pipeline`]: the one task that owns the aggregator and the judge, and its handle.
//! - [`serve`]: binds the listeners, starts the servers, shuts down in flow order.
//! - [`telemetry`]: modelgate's own counters (accepted, refused, ...).
//! - [`replay`]: scenario traffic sent through the real OTLP exporter.
//! - [`fixture`]: OTLP payload builder for tests and benchmarks.

pub mod aggregate;
pub mod config;
pub mod emit;
pub mod extract;
pub mod fixture;
pub mod judge;
pub mod pipeline;
pub mod receive;
pub mod replay;
pub mod serve;
pub mod telemetry;
