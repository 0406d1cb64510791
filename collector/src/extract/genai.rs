//! Generative models: a request's phases as series of their own.
//!
//! A new version of a generative model can be slower in ways that call for
//! different actions: it queues longer (capacity), takes longer to its
//! first token (prefill) or longer per output token (decode). The span's
//! duration mixes them all, so a span that carries the phases (the
//! OpenTelemetry GenAI conventions, vLLM's server span) makes, beside its
//! request sample, one sample per [`Phase`] it carries: the same service,
//! endpoint, dimensions and version, the phase in the series key (so each
//! phase is judged against the baseline's same phase, and counts against
//! the series cap). Histogram metrics name their phase in their mapping
//! (`extract.metrics.histograms[].phase`).
//!
//! The attribute names come from one table, `extract.genai`
//! ([`GenAiAttributes`]), holding every name the conventions and vLLM have
//! used, old and new; a user extends it in the configuration. Time per
//! output token is derived where only the duration, the time to the first
//! token and the output tokens are given: `(duration - ttft) / (tokens - 1)`.
//!
//! The time to the first token grows with the prompt: prefill reads all
//! of it. A span that carries its input tokens (`extract.genai.input_tokens`)
//! puts its first-token sample in the series of its band of input sizes
//! ([`InputBand`], in the series key), so a version whose traffic brings
//! longer prompts is compared band with band, not blamed for its prompts
//! (the judge judges the bands of one endpoint as one, [`crate::judge`]). A
//! span without one, and a histogram (`vllm:time_to_first_token_seconds`
//! carries no input size), makes the endpoint's unbanded first-token
//! series, all sizes mixed.
//!
//! Pure, like every reader: it never drops the request for a phase it
//! cannot read. A phase value that is not a finite, plausible duration
//! (negative, NaN, longer than `extract.max_duration`) makes no phase
//! sample; the request sample stands. (`extract.min_duration` is about
//! requests: a phase, a token's time above all, may well be shorter.)

use std::time::Duration;

use super::{Attrs, InputBand, Phase, SampleKind, SampleRef, Val};
use crate::config::{ExtractConfig, GenAiAttributes};

/// The phase samples of one request span, each handed to `sink`:
/// `request` is its request sample, `attrs` its attributes. At most one
/// per phase: queue, first token, per output token. Handed over rather
/// than returned: a span without phases (nearly every span) then costs a
/// bit test, not the move of three empty samples.
pub(crate) fn phases<'a>(
    attrs: &impl Attrs<'a>,
    request: &SampleRef<'a>,
    config: &ExtractConfig,
    mut sink: impl FnMut(SampleRef<'a>),
) {
    if !attrs.may_carry_phases() {
        return;
    }
    let SampleKind::Request { duration, outcome } = request.kind else {
        return;
    };
    let names = &config.genai;
    let read = |keys: &[String]| first_number(attrs, keys);
    let queue = read(&names.queue).and_then(seconds);
    let ttft = read(&names.first_token).and_then(seconds);
    let tpot = read(&names.per_output_token)
        .and_then(seconds)
        .or_else(|| derived_tpot(duration, ttft?, read(&names.output_tokens)?));
    // Only a first token needs the input size.
    let input = ttft.and_then(|_| read(&names.input_tokens).and_then(InputBand::of));
    for (phase, value) in [
        (Phase::Queue, queue),
        (Phase::FirstToken, ttft),
        (Phase::PerOutputToken, tpot),
    ] {
        if let Some(value) = value.filter(|v| *v <= config.max_duration) {
            sink(SampleRef {
                phase,
                input: (phase == Phase::FirstToken).then_some(input).flatten(),
                kind: SampleKind::Request {
                    duration: value,
                    outcome,
                },
                ..request.clone()
            });
        }
    }
}

/// `(duration - ttft) / (output_tokens - 1)`: the decode time spread over
/// the tokens after the first. `None` for fewer than two tokens (no decode
/// to measure) or a first token after the end.
fn derived_tpot(duration: Duration, ttft: Duration, output_tokens: f64) -> Option<Duration> {
    if !(2.0..f64::INFINITY).contains(&output_tokens) {
        return None;
    }
    let decode = duration.checked_sub(ttft)?;
    Some(decode.div_f64(output_tokens - 1.0))
}

/// The first of `keys` the span carries as a number (a string holding one
/// counts: some emitters write numbers as strings).
fn first_number<'a>(attrs: &impl Attrs<'a>, keys: &[String]) -> Option<f64> {
    keys.iter().find_map(|key| match attrs.find(key)? {
        Val::Double(d) => Some(d),
        Val::Int(i) => Some(i as f64),
        Val::Str(s) => s.trim().parse().ok(),
        Val::Bool(_) | Val::Other => None,
    })
}

/// Seconds, as the conventions give every GenAI latency, to a duration;
/// `None` for a negative or non-finite value (or one past `Duration`).
fn seconds(value: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(value).ok()
}

impl GenAiAttributes {
    /// Every attribute name the table reads, for the wire reader.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        [
            &self.queue,
            &self.first_token,
            &self.per_output_token,
            &self.output_tokens,
            &self.input_tokens,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::extract::Outcome;
    use opentelemetry_proto::tonic::common::v1::KeyValue;

    fn request(ms: u64) -> SampleRef<'static> {
        SampleRef {
            service: "llm",
            phase: Phase::Request,
            input: None,
            endpoint: Cow::Borrowed("chat"),
            dims: Vec::new(),
            version: "m2",
            trace_id: [0; 16],
            time_ms: 5,
            kind: SampleKind::Request {
                duration: Duration::from_millis(ms),
                outcome: Outcome::Error,
            },
        }
    }

    fn kv(key: &str, value: opentelemetry_proto::tonic::common::v1::any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    fn phases_of(attrs: &[KeyValue], ms: u64) -> Vec<(Phase, Duration)> {
        let config = ExtractConfig::default();
        let attrs: &[KeyValue] = attrs;
        let mut found = Vec::new();
        phases(&attrs, &request(ms), &config, |s| found.push(s));
        found
            .into_iter()
            .map(|s| match s.kind {
                SampleKind::Request { duration, outcome } => {
                    assert_eq!(outcome, Outcome::Error, "the request's outcome");
                    assert_eq!((s.service, s.version, s.time_ms), ("llm", "m2", 5));
                    (s.phase, duration)
                }
                other => panic!("{other:?}"),
            })
            .collect()
    }

    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;

    #[test]
    fn vllm_span_attributes_make_three_phases() {
        let got = phases_of(
            &[
                kv("gen_ai.latency.time_in_queue", V::DoubleValue(0.25)),
                kv("gen_ai.latency.time_to_first_token", V::DoubleValue(0.5)),
                kv("gen_ai.usage.output_tokens", V::IntValue(101)),
            ],
            2_500,
        );
        assert_eq!(
            got,
            vec![
                (Phase::Queue, Duration::from_millis(250)),
                (Phase::FirstToken, Duration::from_millis(500)),
                // (2.5 s - 0.5 s) / 100 tokens.
                (Phase::PerOutputToken, Duration::from_millis(20)),
            ]
        );
    }

    #[test]
    fn older_names_and_a_given_tpot_are_read() {
        let got = phases_of(
            &[
                kv(
                    "gen_ai.response.time_to_first_chunk",
                    V::StringValue("0.1".into()),
                ),
                kv("gen_ai.usage.completion_tokens", V::IntValue(11)),
                kv("gen_ai.server.time_per_output_token", V::DoubleValue(0.03)),
            ],
            1_000,
        );
        assert_eq!(
            got,
            vec![
                (Phase::FirstToken, Duration::from_millis(100)),
                // Given, not derived ((1 - 0.1) / 10 would be 90 ms).
                (Phase::PerOutputToken, Duration::from_millis(30)),
            ]
        );
    }

    /// The input band of each phase sample `attrs` make.
    fn bands_of(attrs: &[KeyValue]) -> Vec<(Phase, Option<InputBand>)> {
        let config = ExtractConfig::default();
        let mut found = Vec::new();
        phases(&attrs, &request(1_000), &config, |s| found.push(s));
        found.into_iter().map(|s| (s.phase, s.input)).collect()
    }

    #[test]
    fn the_first_token_is_banded_by_input_tokens_under_either_name() {
        let ttft = || kv("gen_ai.latency.time_to_first_token", V::DoubleValue(0.3));
        let queue = || kv("gen_ai.latency.time_in_queue", V::DoubleValue(0.1));
        // The current name; only the first token carries the band.
        assert_eq!(
            bands_of(&[
                queue(),
                ttft(),
                kv("gen_ai.usage.input_tokens", V::IntValue(2_000))
            ]),
            [
                (Phase::Queue, None),
                (Phase::FirstToken, Some(InputBand::To4k))
            ]
        );
        // The older name (vLLM's), as a string.
        assert_eq!(
            bands_of(&[
                kv("gen_ai.usage.prompt_tokens", V::StringValue("100".into())),
                ttft()
            ]),
            [(Phase::FirstToken, Some(InputBand::Under256))]
        );
        // The first name present wins.
        assert_eq!(
            bands_of(&[
                kv("gen_ai.usage.prompt_tokens", V::IntValue(100)),
                kv("gen_ai.usage.input_tokens", V::IntValue(20_000)),
                ttft()
            ]),
            [(Phase::FirstToken, Some(InputBand::From16k))]
        );
        // No input size, or no count: the unbanded series.
        assert_eq!(bands_of(&[ttft()]), [(Phase::FirstToken, None)]);
        assert_eq!(
            bands_of(&[kv("gen_ai.usage.input_tokens", V::IntValue(-5)), ttft()]),
            [(Phase::FirstToken, None)]
        );
        // An input size alone makes no phase.
        assert!(bands_of(&[kv("gen_ai.usage.input_tokens", V::IntValue(9))]).is_empty());
    }

    #[test]
    fn what_cannot_be_a_phase_makes_none() {
        // One token: no decode. A first token after the end: no decode.
        // Negative and absurd values: no phase. The request always stands.
        assert!(phases_of(
            &[
                kv("gen_ai.latency.time_to_first_token", V::DoubleValue(2.0)),
                kv("gen_ai.usage.output_tokens", V::IntValue(50)),
                kv("gen_ai.latency.time_in_queue", V::DoubleValue(-1.0)),
            ],
            1_000,
        )
        .iter()
        .all(|(p, _)| *p == Phase::FirstToken));
        assert_eq!(
            phases_of(
                &[
                    kv("gen_ai.latency.time_to_first_token", V::DoubleValue(0.2)),
                    kv("gen_ai.usage.output_tokens", V::IntValue(1)),
                    kv("gen_ai.latency.time_in_queue", V::DoubleValue(1e12)),
                ],
                1_000,
            ),
            vec![(Phase::FirstToken, Duration::from_millis(200))]
        );
        assert!(phases_of(&[], 1_000).is_empty());
        assert!(phases_of(
            &[kv("gen_ai.latency.time_in_queue", V::DoubleValue(f64::NAN))],
            1_000
        )
        .is_empty());
    }
}
