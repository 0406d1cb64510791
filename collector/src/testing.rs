//! Builders the unit tests share: the lending incident's endpoints and
//! requests as samples. Compiled for tests only.

use std::time::Duration;

use crate::aggregate::Aggregator;
use crate::extract::{EndpointKey, Outcome, Sample};
use crate::judge::Judge;

/// The service every test sample belongs to.
pub(crate) const SERVICE: &str = "lending-api";

/// `path` of the lending service.
pub(crate) fn endpoint(path: &str) -> EndpointKey {
    EndpointKey {
        service: SERVICE.into(),
        endpoint: path.into(),
        dims: Vec::new(),
        phase: crate::phase::Phase::Request,
        input: None,
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

/// The lending incident, condensed, judged after every batch from
/// `start_ms`: v1.2 alone on both endpoints (100 requests 100 ms apart)
/// becomes the baseline, then v1.3 at 700-820 ms with 80% timeouts beside
/// v1.2 (40 rounds 250 ms apart). Returns the time reached.
pub(crate) fn lending_incident(agg: &mut Aggregator, judge: &mut Judge, start_ms: u64) -> u64 {
    let mut t = start_ms;
    for i in 0..100 {
        let ms = 85.0 + f64::from(i % 30);
        agg.record(
            &[
                request("/risk-score", "v1.2", ms, Outcome::Ok),
                request("/funding-approve", "v1.2", ms, Outcome::Ok),
            ],
            t,
        );
        t += 100;
        judge.evaluate(agg, t);
    }
    for i in 0..40 {
        let outcome = if i % 5 == 0 {
            Outcome::Ok
        } else {
            Outcome::Timeout
        };
        let ms = 700.0 + f64::from(i * 3 % 120);
        agg.record(
            &[
                request("/risk-score", "v1.3", ms, outcome),
                request("/funding-approve", "v1.3", ms, outcome),
                request("/risk-score", "v1.2", 100.0, Outcome::Ok),
                request("/funding-approve", "v1.2", 100.0, Outcome::Ok),
            ],
            t,
        );
        t += 250;
        judge.evaluate(agg, t);
    }
    t
}

/// Minimal deterministic generator (SplitMix64), so tests need no seed
/// crate.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}
