//! The client tools of the `modelgate` binary: everything it does besides
//! running the collector (which is the `modelgate-collector` library).
//!
//! Each tool owns its output (text tables, JSON) in its own module tree, so
//! `main` only parses the command line and dispatches. None of them is part
//! of the server: they talk to a running collector over its public ports,
//! or (`analyze`) run its judge over files, offline.
//!
//! # Layout
//! - [`exit`]: the exit codes of every subcommand, one table.
//! - [`client`]: how the clients reach a collector (TLS, token, client certificate) and what a failed call means.
//! - [`replay`]: scenario traffic sent through the real OTLP exporter (`modelgate replay`).
//! - [`loadgen`]: pre-encoded OTLP batches at full speed or a fixed rate, for benchmarks (`modelgate loadgen`).
//! - [`analyze`]: offline judgement of JSON log files (`modelgate analyze`).
//! - [`gate`]: a CI/CD release gate asking a running collector for its verdict (`modelgate gate`).

pub mod exit;
pub mod client;
pub mod replay;
pub mod loadgen;
pub mod analyze;
pub mod gate;
