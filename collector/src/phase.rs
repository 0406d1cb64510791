//! The phases of a request a series may measure: the whole request, or
//! one phase of a generative model's ([`crate::extract::genai`]). A leaf
//! every stage may name (extraction, configuration, the judge, emitters);
//! it must never depend on any of them.

use serde::{Deserialize, Serialize};

/// Which part of a request a series measures.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The whole request: what every span, log record and request
    /// histogram measures.
    #[default]
    Request,
    /// Waiting for the model server before any work on it
    /// (`gen_ai.latency.time_in_queue`): capacity.
    Queue,
    /// Time to the first output token (prefill).
    FirstToken,
    /// Time per output token after the first (decode).
    PerOutputToken,
}

impl Phase {
    /// Every phase, the request first.
    pub const ALL: [Phase; 4] = [
        Phase::Request,
        Phase::Queue,
        Phase::FirstToken,
        Phase::PerOutputToken,
    ];

    /// The `phase` attribute and label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Request => "request",
            Phase::Queue => "queue",
            Phase::FirstToken => "first_token",
            Phase::PerOutputToken => "per_output_token",
        }
    }

    /// How evidence names it.
    pub const fn words(self) -> &'static str {
        match self {
            Phase::Request => "end to end",
            Phase::Queue => "time in queue",
            Phase::FirstToken => "time to first token",
            Phase::PerOutputToken => "time per output token",
        }
    }

    /// The phase called `name` ([`Phase::as_str`]).
    pub fn named(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// Index into per-phase arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The whole request.
    pub const fn is_request(self) -> bool {
        matches!(self, Phase::Request)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_round_trip() {
        for p in Phase::ALL {
            assert_eq!(Phase::named(p.as_str()), Some(p));
        }
        assert_eq!(Phase::named("decode"), None);
    }
}
