//! Query: the servers that answer questions about what modelgate knows and
//! take the operator's writes.
//!
//! - [`api`]: the `modelgate.v1.Query` gRPC service, and the mapping of
//!   [`crate::emit::views`] to its messages that the JSON routes share.
//! - [`admin`]: the admin HTTP port: `/`, `/metrics`, `/api/v1/*` (the same
//!   API as JSON), `/healthz`, `/readyz`.
//! - [`dashboard`]: the dashboard page and its assets, built into the binary.
//!
//! Every answer is a question to the pipeline task
//! ([`crate::pipeline::PipelineHandle::ask`]); nothing here holds state, and
//! nothing here is imported by the pipeline (the dependency goes one way).

pub mod admin;
pub mod api;
pub mod dashboard;
