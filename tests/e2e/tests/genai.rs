//! Generative model versions judged per phase, end to end on the release
//! binary: once from spans carrying vLLM's phase attributes (OTLP/HTTP
//! protobuf), once from vLLM's own histograms (OTLP metrics) alone, and
//! once as `modelgate replay genai` sends them (OTLP/gRPC, through the
//! OpenTelemetry SDK).
//!
//! Against a baseline `m1` (first token after 200 ms, 20 ms per output
//! token, 100 tokens an answer, 50 ms in the queue):
//! - `m2` decodes 1.6x slower: it regresses per output token (and end to
//!   end);
//! - `m3` answers 1.8x longer at the same speed: it regresses end to end
//!   only, never per output token;
//! - `m4` waits 4x longer in the queue: it regresses in the queue (150 ms
//!   more of a 2.2 s answer does not move the end to end), never per
//!   output token.
//!
//! From spans, beside them, `m5` is as fast as `m1` for a prompt of each
//! size but its prompts are 3x longer: its first token comes later, and
//! it is compared band of input sizes with band, never blamed for its
//! prompts (`gen_ai.usage.prompt_tokens`, as vLLM's span carries it).
//!
//! Every answer names the phase: the API's `phase`, `/metrics`' `phase`
//! label, the evidence's words.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use modelgate::replay::{replay, ReplayOptions, Scenario};
use modelgate_e2e::{eventually, Collector};
use modelgate_fixture::{
    attr_int, attr_str, metrics_request_of, request_of, HistogramSpec, SpanSpec,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use prost::Message;

/// One model version's behaviour.
#[derive(Debug, Clone, Copy)]
struct Model {
    name: &'static str,
    queue_ms: f64,
    tpot_ms: f64,
    tokens: u64,
    /// Its prompts are this many times [`PROMPTS`].
    prompt_scale: u64,
}

const BASELINE: Model = Model {
    name: "m1",
    queue_ms: 50.0,
    tpot_ms: 20.0,
    tokens: 100,
    prompt_scale: 1,
};

/// The baseline's prompt sizes, tokens, one request after the other.
const PROMPTS: [u64; 5] = [100, 200, 400, 800, 1_500];

/// As fast as the baseline for a prompt of each size; its prompts 3x
/// longer.
const LONGER_PROMPTS: Model = Model {
    name: "m5",
    prompt_scale: 3,
    ..BASELINE
};

/// The three candidates, each slower in one way.
const CANDIDATES: [Model; 3] = [
    Model {
        name: "m2",
        tpot_ms: 32.0,
        ..BASELINE
    },
    Model {
        name: "m3",
        tokens: 180,
        ..BASELINE
    },
    Model {
        name: "m4",
        queue_ms: 200.0,
        ..BASELINE
    },
];

impl Model {
    /// Request `i`'s prompt, tokens.
    fn prompt(&self, i: u64) -> u64 {
        PROMPTS[i as usize % PROMPTS.len()] * self.prompt_scale
    }

    /// Request `i`'s phases, ms: queue, first token (queue included, as
    /// vLLM measures it from arrival; prefill longer for a longer prompt,
    /// the same for every model), per output token, end to end.
    fn phases(&self, i: u64) -> [f64; 4] {
        let jitter = (i % 7) as f64;
        let queue = self.queue_ms + jitter;
        let prefill = match self.prompt(i) {
            0..256 => 150.0,
            256..1024 => 250.0,
            1024..4096 => 400.0,
            _ => 700.0,
        };
        let ttft = queue + prefill + jitter;
        let tpot = self.tpot_ms + jitter / 10.0;
        let e2e = ttft + tpot * (self.tokens - 1) as f64;
        [queue, ttft, tpot, e2e]
    }
}

fn seconds(key: &str, ms: f64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::DoubleValue(ms / 1e3)),
        }),
        ..KeyValue::default()
    }
}

/// Request `i` of `model` as vLLM's server span has it (time per output
/// token left for modelgate to derive).
fn span(model: &Model, i: u64) -> SpanSpec {
    let [queue, ttft, _, e2e] = model.phases(i);
    SpanSpec::request("chat-api", "/v1/chat/completions", model.name, e2e as u64)
        .attr(seconds("gen_ai.latency.time_in_queue", queue))
        .attr(seconds("gen_ai.latency.time_to_first_token", ttft))
        .attr(attr_int("gen_ai.usage.output_tokens", model.tokens as i64))
        .attr(attr_int(
            "gen_ai.usage.prompt_tokens",
            model.prompt(i) as i64,
        ))
}

fn config() -> Vec<(&'static str, &'static str)> {
    vec![
        // Answers take seconds: the service's SLA, not the 150 ms default.
        ("MODELGATE_JUDGE__SLA__LIMIT", "30s"),
        ("MODELGATE_JUDGE__ALERTS__HOLD", "0s"),
    ]
}

/// The phases `candidate` fires in on `service` (critical or warning),
/// with their rules, once every expected one fires.
async fn firing(collector: &Collector, service: &str, candidate: &str) -> Vec<(String, String)> {
    let r = collector
        .json(&format!("/api/v1/regressions?service={service}"))
        .await;
    let mut out: Vec<(String, String)> = r["regressions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["candidate_version"] == candidate && x["state"] == "ALERT_STATE_FIRING")
        .filter(|x| x["endpoint"] != "*")
        .map(|x| {
            (
                x["phase"].as_str().unwrap_or_default().to_owned(),
                x["rule"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What every way in must show once the candidates fired: `versions`
/// are the baseline, the slower decode, the verbose one and the one that
/// queues longer.
async fn judged_per_phase(collector: &Collector, service: &str, versions: [&str; 4]) {
    let [baseline, decode, verbose, queued] = versions;
    let want = |phase: &str| (phase.to_owned(), "relative".to_owned());
    let all = eventually(Duration::from_secs(60), || async {
        let slow = firing(collector, service, decode).await;
        let long = firing(collector, service, verbose).await;
        let queue = firing(collector, service, queued).await;
        (slow.contains(&want("per_output_token"))
            && long.contains(&want("request"))
            && queue.contains(&want("queue")))
        .then_some((slow, long, queue))
    })
    .await
    .unwrap_or_else(|| panic!("no per-phase verdicts on {service}\n{}", collector.log()));
    let (slow, long, queue) = all;
    assert!(
        slow.contains(&want("request")),
        "{decode} is slower end to end: {slow:?}"
    );
    assert!(
        !long.iter().any(|(p, _)| p == "per_output_token"),
        "{verbose} is as fast per token: {long:?}"
    );
    assert!(
        !queue
            .iter()
            .any(|(p, _)| p == "per_output_token" || p == "request"),
        "{queued}: only its queue moved: {queue:?}"
    );
    // The verbose one is told from a slow one in its evidence.
    let r = collector
        .json(&format!("/api/v1/regressions?service={service}"))
        .await;
    let evidence = |version: &str| -> String {
        r["regressions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| {
                x["candidate_version"] == version
                    && x["phase"] == "request"
                    && x["rule"] == "relative"
                    && x["endpoint"] != "*"
            })
            .map(|x| {
                x["evidence"]["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    let told = evidence(verbose);
    assert!(told.contains("verbose, not slower"), "{verbose}: {told}");
    let slow_evidence = evidence(decode);
    assert!(
        !slow_evidence.contains("verbose"),
        "{decode}: {slow_evidence}"
    );
    let fired = firing(collector, service, baseline).await;
    assert!(fired.is_empty(), "the baseline never fires: {fired:?}");

    // The verdict names the phase per scope and in its summary.
    let v = collector
        .json(&format!(
            "/api/v1/verdict?service={service}&candidate={queued}"
        ))
        .await;
    let summary = v["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("time in queue"), "{v}");
    let queue = v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["phase"] == "queue" && e["endpoint"] != "*")
        .unwrap_or_else(|| panic!("no queue scope: {v}"));
    assert_eq!(queue["outcome"], "VERDICT_OUTCOME_REGRESSION", "{v}");
    let evidence = queue["rules"][0]["evidence"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(evidence.starts_with("time in queue: "), "{evidence}");

    // The phase is a label of every metric of a phase series.
    let text = collector.metrics().await;
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("modelgate_regression_active")
                && l.contains(&format!("candidate_version=\"{decode}\""))
                && l.contains("phase=\"per_output_token\"")
        })
        .unwrap_or_else(|| panic!("no per-token regression metric of {decode}:\n{text}"));
    assert!(
        line.contains(&format!("service_name=\"{service}\"")),
        "{line}"
    );
}

#[tokio::test]
async fn each_phase_is_judged_from_spans() {
    let collector = Collector::start(&config()).await;
    // The baseline first (it is seen first), then everyone side by side.
    let mut spans: Vec<SpanSpec> = (0..200).map(|i| span(&BASELINE, i)).collect();
    for i in 0..300 {
        spans.push(span(&BASELINE, i));
        spans.extend(CANDIDATES.iter().map(|m| span(m, i)));
        spans.push(span(&LONGER_PROMPTS, i));
    }
    for chunk in spans.chunks(500) {
        let body = request_of(chunk.iter().cloned()).encode_to_vec();
        let (status, _, body) = collector
            .post_otlp("/v1/traces", "application/x-protobuf", None, body)
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    judged_per_phase(&collector, "chat-api", ["m1", "m2", "m3", "m4"]).await;
    not_blamed_for_its_prompts(&collector, "chat-api", LONGER_PROMPTS.name).await;
}

/// `candidate`, whose prompts are longer at the same prefill speed, is
/// judged on its first token band with band and does not regress there;
/// each band is a series of its own.
async fn not_blamed_for_its_prompts(collector: &Collector, service: &str, candidate: &str) {
    let url = format!("/api/v1/verdict?service={service}&candidate={candidate}");
    // Judged, and passing with enough requests, in every scope of its
    // first token (its endpoint and version-wide).
    let scopes = eventually(Duration::from_secs(60), || async {
        let v = collector.json(&url).await;
        let scopes: Vec<serde_json::Value> = v["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["phase"] == "first_token")
            .cloned()
            .collect();
        let judged = !scopes.is_empty()
            && scopes
                .iter()
                .all(|e| e["outcome"] == "VERDICT_OUTCOME_PASS");
        judged.then_some(scopes)
    })
    .await;
    let Some(scopes) = scopes else {
        let v = collector.json(&url).await;
        panic!(
            "{candidate}'s first token never passed: {v}\n{}",
            collector.log()
        );
    };
    let detail = scopes[0]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["rule"] == "relative")
        .map(|r| {
            r["evidence"]["detail"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default();
    assert!(
        detail.contains("compared within input-size bands"),
        "{detail}"
    );
    let fired = firing(collector, service, candidate).await;
    assert!(
        !fired.iter().any(|(p, _)| p == "first_token"),
        "{candidate} is as fast for each prompt size: {fired:?}"
    );
    // Its bands are series of their own, named in the API.
    let versions = collector
        .json(&format!("/api/v1/versions?service={service}"))
        .await;
    let mut bands: Vec<String> = versions["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["phase"] == "first_token")
        .map(|e| e["input_tokens"].as_str().unwrap_or_default().to_owned())
        .collect();
    bands.sort();
    assert_eq!(bands, ["1k-4k", "256-1k", "4k-16k", "<256"], "{versions}");
}

#[tokio::test]
async fn the_genai_scenario_replays_to_the_verdicts_it_describes() {
    let collector = Collector::start(&config()).await;
    let scenario = Scenario::load("genai").unwrap();
    let report = replay(
        &scenario,
        &ReplayOptions {
            endpoint: collector.grpc_url(),
            rate: None,
            seed: None,
            client: Default::default(),
        },
    )
    .await
    .unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    judged_per_phase(
        &collector,
        &scenario.service,
        ["chat-v1", "chat-v2", "chat-v3", "chat-v4"],
    )
    .await;
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Bucket bounds, seconds: 4% apart from `from` to `to`, fine enough for
/// the relative rule to see a 1.5x shift from buckets alone.
fn bounds(from: f64, to: f64) -> Vec<f64> {
    std::iter::successors(Some(from), |b| Some(b * 1.04))
        .take_while(|b| *b <= to)
        .collect()
}

/// `model`'s requests `0..n` as vLLM's histograms (seconds, label
/// `model_name`), one delta point per metric ending at `at_ns`.
fn points(model: &Model, n: u64, at_ns: u64) -> Vec<HistogramSpec> {
    let values =
        |phase: usize| -> Vec<f64> { (0..n).map(|i| model.phases(i)[phase] / 1e3).collect() };
    [
        ("vllm:request_queue_time_seconds", 0, bounds(0.01, 2.0)),
        ("vllm:time_to_first_token_seconds", 1, bounds(0.05, 5.0)),
        ("vllm:time_per_output_token_seconds", 2, bounds(0.005, 0.5)),
        ("vllm:e2e_request_latency_seconds", 3, bounds(0.5, 30.0)),
    ]
    .into_iter()
    .map(|(name, phase, bounds)| {
        HistogramSpec::of_values("vllm-chat", name, "s", &bounds, &values(phase))
            .attr(attr_str("model_name", model.name))
            .at(at_ns)
    })
    .collect()
}

#[tokio::test]
async fn each_phase_is_judged_from_vllm_metrics() {
    let collector = Collector::start(&config()).await;
    let now = now_ns();
    // The baseline's first interval before the candidates appear.
    let mut exports = vec![points(&BASELINE, 200, now - 20_000_000_000)];
    exports.push(
        std::iter::once(BASELINE)
            .chain(CANDIDATES)
            .flat_map(|m| points(&m, 300, now - 5_000_000_000))
            .collect(),
    );
    for specs in exports {
        let body = metrics_request_of(specs).encode_to_vec();
        let (status, _, body) = collector
            .post_otlp("/v1/metrics", "application/x-protobuf", None, body)
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    judged_per_phase(&collector, "vllm-chat", ["m1", "m2", "m3", "m4"]).await;
}
