//! Builders the unit tests share: the lending incident's endpoints and
//! requests as samples. Compiled for tests only.

use std::time::Duration;

use crate::extract::{EndpointKey, Outcome, Sample};

/// The service every test sample belongs to.
pub(crate) const SERVICE: &str = "lending-api";

/// `path` of the lending service.
pub(crate) fn endpoint(path: &str) -> EndpointKey {
    EndpointKey {
        service: SERVICE.into(),
        endpoint: path.into(),
        dims: Vec::new(),
    }
}

/// A request of `version` on `path` lasting `ms`, counted at arrival time.
pub(crate) fn request(path: &str, version: &str, ms: f64, outcome: Outcome) -> Sample {
    Sample::request(
        endpoint(path),
        version,
        Duration::from_secs_f64(ms / 1e3),
        outcome,
        0,
    )
}
