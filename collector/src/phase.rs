//! The phases of a request a series may measure: the whole request, or
//! one phase of a generative model's ([`crate::extract::genai`]), and the
//! band of input sizes a time-to-first-token series holds ([`InputBand`]).
//! A leaf every stage may name (extraction, configuration, the judge,
//! emitters); it must never depend on any of them.

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

/// A band of input (prompt) tokens. Time to the first token grows with
/// the prompt (prefill reads all of it), so a version whose traffic brings
/// longer prompts is slower to its first token without being slower: its
/// first-token samples are kept per band (each band a series of its own)
/// and compared band with band. Fixed, log-spaced bands (4x apart), so a
/// band's series is bounded and means the same on every version; a span
/// without an input size, and a histogram (which carries none), has no
/// band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum InputBand {
    /// Fewer than 256 tokens.
    #[serde(rename = "<256")]
    Under256,
    /// 256 to 1023.
    #[serde(rename = "256-1k")]
    To1k,
    /// 1024 to 4095.
    #[serde(rename = "1k-4k")]
    To4k,
    /// 4096 to 16383.
    #[serde(rename = "4k-16k")]
    To16k,
    /// 16384 or more.
    #[serde(rename = ">=16k")]
    From16k,
}

impl InputBand {
    /// Every band, the shortest first.
    pub const ALL: [InputBand; 5] = [
        InputBand::Under256,
        InputBand::To1k,
        InputBand::To4k,
        InputBand::To16k,
        InputBand::From16k,
    ];

    /// The band of a request with `tokens` input tokens; `None` for a
    /// count that is no count (negative, not finite).
    pub fn of(tokens: f64) -> Option<InputBand> {
        if !(0.0..f64::INFINITY).contains(&tokens) {
            return None;
        }
        Some(match tokens {
            t if t < 256.0 => InputBand::Under256,
            t if t < 1024.0 => InputBand::To1k,
            t if t < 4096.0 => InputBand::To4k,
            t if t < 16384.0 => InputBand::To16k,
            _ => InputBand::From16k,
        })
    }

    /// The `input_tokens` attribute and label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            InputBand::Under256 => "<256",
            InputBand::To1k => "256-1k",
            InputBand::To4k => "1k-4k",
            InputBand::To16k => "4k-16k",
            InputBand::From16k => ">=16k",
        }
    }

    /// The band called `name` ([`InputBand::as_str`]).
    pub fn named(name: &str) -> Option<InputBand> {
        InputBand::ALL.into_iter().find(|b| b.as_str() == name)
    }
}

impl std::fmt::Display for InputBand {
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

    #[test]
    fn input_bands_are_log_spaced_and_named() {
        let at = |t: f64| InputBand::of(t);
        assert_eq!(at(0.0), Some(InputBand::Under256));
        assert_eq!(at(255.0), Some(InputBand::Under256));
        assert_eq!(at(256.0), Some(InputBand::To1k));
        assert_eq!(at(1024.0), Some(InputBand::To4k));
        assert_eq!(at(4095.5), Some(InputBand::To4k));
        assert_eq!(at(16384.0), Some(InputBand::From16k));
        assert_eq!(at(1e12), Some(InputBand::From16k));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(at(bad), None);
        }
        for b in InputBand::ALL {
            assert_eq!(InputBand::named(b.as_str()), Some(b));
            let json = serde_json::to_string(&b).unwrap();
            assert_eq!(json, format!("\"{}\"", b.as_str()));
        }
    }
}
