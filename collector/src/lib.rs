//! modelgate's collector: catch a slow new model or service version from its
//! telemetry.
//!
//! The collector sits in an OpenTelemetry pipeline, turns spans (and request
//! log records and histogram points) into latency samples per service,
//! endpoint and version, judges each new version against
//! its baseline, and emits what it finds as metrics and a query API.
//!
//! This library is the server only. The `modelgate` binary and the client
//! tools that talk to a running collector or judge files offline (`gate`,
//! `replay`, `analyze`, `loadgen`) are the `modelgate` crate in `cli/`; the
//! OTLP payload builder of the tests is `modelgate-fixture` in
//! `tests/fixture/`, a dev-dependency only, never in a release build.
//!
//! # Layout (in the order a span travels)
//! - [`config`]: every setting, one file per section: its default and the checks that name a bad key.
//! - [`receive`]: OTLP traces, logs and metrics over gRPC and HTTP in; the only place protocol status codes are made.
//! - [`extract`]: a span, log record or histogram point -> one [`extract::Sample`] (series, event time, one request or a point's buckets, outcome). Pure; [`extract::wire`] reads protobuf bytes without decoding, [`extract::intern`] names series without a `String` per span, [`extract::template`] makes endpoints of raw paths.
//! - [`aggregate`]: samples -> per-series windows of latency sketches at the samples' own time, capped (series, endpoints per service) and expiring; cumulative histogram streams to increases.
//! - [`judge`]: windows -> rule results per endpoint and version-wide, per severity -> alert states; baselines promoted, never taken.
//! - [`emit`]: what the judge found and the aggregator measured, out: the metric catalogue, Prometheus text, OTLP push, the dashboard's history, and pure views of the state.
//! - [`query`]: the servers that answer questions: the `modelgate.v1.Query` gRPC service, the admin port's JSON API, `/metrics` and the dashboard.
//! - [`forward`]: everything received, unchanged, to the next OTLP hop: a bounded queue, retries with backoff.
//! - [`pipeline`]: the one task that owns the aggregator, the judge and the history; everyone else asks it closures.
//! - [`snapshot`]: the pipeline's state on disk (atomic, checksummed, versioned), restored at start.
//! - [`offline`]: records judged by their own clock, exactly as live (`modelgate analyze`).
//! - [`serve`]: binds the listeners, starts the servers, shuts down in flow order; [`serve::tls`] on every listener.
//! - [`auth`]: the bearer token guarding receivers and API; writes always need one.
//! - [`telemetry`]: modelgate's own figures as named internal events.
//! - [`codec`]: gRPC messages as raw bytes, for clients that send exports as they are (the forwarder, `modelgate loadgen`).
//! - [`signal`]: the OTLP signals (traces, logs, metrics) and where each is served; named by receivers, forwarder and telemetry alike.
//! - [`phase`]: what of a request a series measures (the whole request, or a generative model's queue, first token, per output token); named by extraction, the judge and the emitters alike.

pub mod config;
pub mod receive;
pub mod extract;
pub mod aggregate;
pub mod judge;
pub mod emit;
pub mod query;
pub mod forward;
pub mod pipeline;
pub mod snapshot;
pub mod offline;
pub mod serve;
pub mod auth;
pub mod telemetry;
pub mod codec;
pub mod signal;
pub mod phase;
#[cfg(test)]
mod testing;
