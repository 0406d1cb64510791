//! Replay: send a scenario's traffic to a collector as OTLP spans, with time
//! compressed.
//!
//! A scenario is data (YAML): a service, a send rate and phases, each a
//! number of requests split by weight between versions, each version with its
//! endpoints, latency distribution, timeout and error rates and database
//! calls per request. The built-in scenarios are the files of
//! `examples/scenarios/`, compiled in. Spans carry the real latencies but are
//! sent at `rate` per second, ending "now"; they go through the real
//! `opentelemetry-otlp` span exporter, batched here so that pacing is exact.
//! Replay only sends: it never reads the collector's answers beyond success.
//! [`render`] owns what `modelgate replay` prints.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_otlp::WithTonicConfig as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use opentelemetry_sdk::Resource;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use serde::{Deserialize, Serialize};

use crate::client::{normalize_url, ClientError, ClientOptions, Credentials, GrpcOnly};
use crate::exit::Exit;

pub mod render;

/// Spans per export call, as the SDK's batch processor does by default.
const BATCH: usize = 512;
/// A partial batch waits at most this long.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Export attempts per batch before replay gives up on it.
const ATTEMPTS: u32 = 3;
/// The longest one export (or the first check) may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The built-in scenarios: (name, YAML).
pub const BUILT_IN: [(&str, &str); 4] = [
    (
        "lending",
        include_str!("../../../examples/scenarios/lending.yaml"),
    ),
    ("aa", include_str!("../../../examples/scenarios/aa.yaml")),
    (
        "ecommerce",
        include_str!("../../../examples/scenarios/ecommerce.yaml"),
    ),
    (
        "genai",
        include_str!("../../../examples/scenarios/genai.yaml"),
    ),
];

/// Why a scenario cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Neither a built-in name nor a readable file.
    #[error("no scenario {0:?}: not a built-in ({built_in}) and not a readable file", built_in = BUILT_IN.map(|b| b.0).join(", "))]
    NotFound(String),
    /// The file is not a valid scenario.
    #[error("scenario {source_name}: {message}")]
    Invalid {
        /// File or built-in name.
        source_name: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter for {endpoint}: {message}")]
    Exporter {
        /// Where it was to send.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// The collector could not be reached, or refused the credentials or
    /// the first (empty) export.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl ReplayError {
    /// The exit code this failure means.
    pub const fn exit(&self) -> Exit {
        match self {
            ReplayError::NotFound(_) | ReplayError::Invalid { .. } => Exit::Usage,
            ReplayError::Exporter { .. } => Exit::Failure,
            ReplayError::Client(e) => e.exit(),
        }
    }
}

/// A scenario: see the module docs and `examples/scenarios/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// One line on what it shows.
    #[serde(default)]
    pub description: String,
    /// `service.name` of every span.
    pub service: String,
    /// Requests sent per second.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Random seed: the same seed sends the same traffic.
    #[serde(default)]
    pub seed: u64,
    /// In order.
    pub phases: Vec<Phase>,
}

const fn default_rate() -> f64 {
    200.0
}

/// A stretch of traffic with one mix of versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// For the report.
    pub name: String,
    /// Requests in this phase.
    pub requests: u64,
    /// The versions serving it.
    pub traffic: Vec<Traffic>,
}

/// One version's share of a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// `model.version` of its spans.
    pub version: String,
    /// Share of the phase's requests, relative to the other entries.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// `http.route` values, chosen uniformly.
    pub endpoints: Vec<String>,
    /// Latency of its requests; a generative model's is made of its
    /// phases instead (`generation`): exactly one of the two.
    #[serde(default)]
    pub latency_ms: Option<Latency>,
    /// A generative model's requests, phase by phase: their spans carry
    /// vLLM's attributes (time in queue, to first token, output tokens)
    /// and last the sum of their phases.
    #[serde(default)]
    pub generation: Option<Generation>,
    /// Fraction of requests that time out (HTTP 504, `error.type=timeout`).
    #[serde(default)]
    pub timeout_rate: f64,
    /// Fraction of requests that fail (HTTP 500).
    #[serde(default)]
    pub error_rate: f64,
    /// Database CLIENT spans per request.
    #[serde(default)]
    pub db_calls: u32,
}

const fn default_weight() -> f64 {
    1.0
}

/// A generative model's request, phase by phase (ms, and tokens). A
/// request waits `queue_ms`, reads its prompt in `prefill_ms` (its first
/// token then comes), then writes `output_tokens` at `per_output_token_ms`
/// each: it lasts `queue + prefill + per_output_token * (tokens - 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    /// Time waiting for the model server.
    pub queue_ms: Latency,
    /// Time from the start of work to the first token.
    pub prefill_ms: Latency,
    /// Time per output token after the first.
    pub per_output_token_ms: Latency,
    /// Output tokens per answer (rounded, at least 1).
    pub output_tokens: Latency,
}

impl Traffic {
    /// One request's duration (ms) and the attributes its phases add to
    /// its span.
    fn draw(&self, rng: &mut StdRng) -> (f64, Vec<KeyValue>) {
        let Some(g) = &self.generation else {
            let latency = self
                .latency_ms
                .unwrap_or(Latency::Uniform { min: 0.0, max: 0.0 });
            return (draw_latency(latency, rng), Vec::new());
        };
        let queue = draw_latency(g.queue_ms, rng);
        let first_token = queue + draw_latency(g.prefill_ms, rng);
        let per_token = draw_latency(g.per_output_token_ms, rng);
        let tokens = draw_latency(g.output_tokens, rng).round().max(1.0);
        let duration = first_token + per_token * (tokens - 1.0);
        // In seconds, as vLLM's server span has them; time per output
        // token is left for the collector to derive.
        let attributes = vec![
            KeyValue::new("gen_ai.latency.time_in_queue", queue / 1e3),
            KeyValue::new("gen_ai.latency.time_to_first_token", first_token / 1e3),
            KeyValue::new("gen_ai.usage.output_tokens", tokens as i64),
        ];
        (duration, attributes)
    }
}

/// A latency distribution, in milliseconds, e.g.
/// `{ dist: uniform, min: 85, max: 119 }` or `{ dist: lognormal, median: 60, p95: 110 }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum Latency {
    /// Uniform between `min` and `max`.
    Uniform {
        /// Lowest.
        min: f64,
        /// Highest.
        max: f64,
    },
    /// Lognormal with this median and 95th percentile.
    Lognormal {
        /// 50th percentile.
        median: f64,
        /// 95th percentile.
        p95: f64,
    },
}

impl Scenario {
    /// A built-in scenario by name, or a YAML file by path.
    pub fn load(name_or_path: &str) -> Result<Self, ReplayError> {
        if let Some((name, text)) = BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(name, text);
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path)
            .map_err(|_| ReplayError::NotFound(name_or_path.to_owned()))?;
        Self::parse(name_or_path, &text)
    }

    /// Parses and checks YAML text; `source_name` names it in errors.
    pub fn parse(source_name: &str, text: &str) -> Result<Self, ReplayError> {
        let invalid = |message: String| ReplayError::Invalid {
            source_name: source_name.to_owned(),
            message,
        };
        let scenario: Scenario =
            serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?;
        scenario.validate().map_err(invalid)?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<(), String> {
        if self.service.is_empty() {
            return Err("service: must not be empty".into());
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(format!(
                "rate: must be a positive number, got {}",
                self.rate
            ));
        }
        if self.phases.is_empty() {
            return Err("phases: at least one is needed".into());
        }
        for (i, phase) in self.phases.iter().enumerate() {
            let at = format!("phases[{i}]");
            if phase.traffic.is_empty() {
                return Err(format!("{at}.traffic: at least one entry is needed"));
            }
            for (j, t) in phase.traffic.iter().enumerate() {
                let at = format!("{at}.traffic[{j}]");
                if !(t.weight.is_finite() && t.weight > 0.0) {
                    return Err(format!("{at}.weight: must be positive"));
                }
                if t.endpoints.is_empty() {
                    return Err(format!("{at}.endpoints: at least one is needed"));
                }
                for (key, rate) in [
                    ("timeout_rate", t.timeout_rate),
                    ("error_rate", t.error_rate),
                ] {
                    if !(0.0..=1.0).contains(&rate) {
                        return Err(format!("{at}.{key}: must be between 0 and 1"));
                    }
                }
                if t.timeout_rate + t.error_rate > 1.0 {
                    return Err(format!("{at}: timeout_rate + error_rate exceed 1"));
                }
                let latencies: Vec<(String, Latency)> = match (t.latency_ms, &t.generation) {
                    (Some(l), None) => vec![(format!("{at}.latency_ms"), l)],
                    (None, Some(g)) => vec![
                        (format!("{at}.generation.queue_ms"), g.queue_ms),
                        (format!("{at}.generation.prefill_ms"), g.prefill_ms),
                        (
                            format!("{at}.generation.per_output_token_ms"),
                            g.per_output_token_ms,
                        ),
                        (format!("{at}.generation.output_tokens"), g.output_tokens),
                    ],
                    _ => {
                        return Err(format!(
                            "{at}: needs latency_ms or generation (one of them)"
                        ))
                    }
                };
                for (at, latency) in latencies {
                    let ok = match latency {
                        Latency::Uniform { min, max } => {
                            min >= 0.0 && max >= min && max.is_finite()
                        }
                        Latency::Lognormal { median, p95 } => {
                            median > 0.0 && p95 > median && p95.is_finite()
                        }
                    };
                    if !ok {
                        return Err(format!(
                            "{at}: uniform needs 0 <= min <= max; lognormal needs 0 < median < p95"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Requests over all phases.
    pub fn total_requests(&self) -> u64 {
        self.phases.iter().map(|p| p.requests).sum()
    }
}

/// What a replay sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayReport {
    /// Request spans exported.
    pub requests: u64,
    /// Database spans exported.
    pub db_spans: u64,
    /// Spans whose export failed after retries.
    pub failed: u64,
    /// What each version of each phase sent, in scenario order.
    pub per_version: Vec<VersionSent>,
    /// Wall time taken.
    pub elapsed: Duration,
}

/// The requests one version sent in one phase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionSent {
    /// The phase's name.
    pub phase: String,
    /// The version's `model.version`.
    pub version: String,
    /// Requests sent.
    pub requests: u64,
    /// Of which timed out (HTTP 504).
    pub timeouts: u64,
    /// Of which failed (HTTP 500).
    pub errors: u64,
}

/// Options of one replay run.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317` (`host:port` is
    /// plaintext; `https://` for TLS).
    pub endpoint: String,
    /// Overrides the scenario's rate.
    pub rate: Option<f64>,
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// TLS trust, client certificate and token. The SDK's exporter reads
    /// `OTEL_EXPORTER_OTLP_HEADERS` itself, after the token.
    pub client: ClientOptions,
}

impl Default for ReplayOptions {
    /// The local collector's default OTLP/gRPC port, the scenario's rate and
    /// seed, no credentials.
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4317".into(),
            rate: None,
            seed: None,
            client: ClientOptions::default(),
        }
    }
}

fn draw_latency(latency: Latency, rng: &mut StdRng) -> f64 {
    match latency {
        Latency::Uniform { min, max } if max > min => rng.random_range(min..=max),
        Latency::Uniform { min, .. } => min,
        Latency::Lognormal { median, p95 } => {
            // p95 = median * exp(1.6449 sigma).
            let sigma = (p95 / median).ln() / 1.644_853_626_951_472_2;
            LogNormal::new(median.ln(), sigma).map_or(median, |d| d.sample(rng))
        }
    }
}

/// Sends `scenario` and reports what was sent.
///
/// One empty export first checks that the endpoint takes trace exports with
/// these credentials (an empty export is a success that adds nothing), so a
/// wrong port, a refused token or a failed handshake stops the replay at
/// once with its reason rather than after every batch failed.
pub async fn replay(
    scenario: &Scenario,
    options: &ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    let exporter = span_exporter(scenario, options).await?;
    let rate = options.rate.unwrap_or(scenario.rate).max(0.001);
    let mut rng = StdRng::seed_from_u64(options.seed.unwrap_or(scenario.seed));
    let scope = InstrumentationScope::builder("modelgate-replay").build();
    let start = Instant::now();
    let mut report = ReplayReport::default();
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH);
    let mut last_flush = Instant::now();
    let mut sent = 0u64;
    for phase in &scenario.phases {
        let weights = WeightedIndex::new(phase.traffic.iter().map(|t| t.weight)).map_err(|e| {
            ReplayError::Invalid {
                source_name: scenario.name.clone(),
                message: format!("phase {:?}: {e}", phase.name),
            }
        })?;
        let mut counts: Vec<VersionSent> = phase
            .traffic
            .iter()
            .map(|t| VersionSent {
                phase: phase.name.clone(),
                version: t.version.clone(),
                ..VersionSent::default()
            })
            .collect();
        for _ in 0..phase.requests {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            if due > Instant::now() + Duration::from_millis(1) {
                if !batch.is_empty() && last_flush.elapsed() >= FLUSH_EVERY {
                    export(&exporter, &mut batch, &mut report).await;
                    last_flush = Instant::now();
                }
                tokio::time::sleep_until(due.into()).await;
            }
            let which = weights.sample(&mut rng);
            let traffic = &phase.traffic[which];
            let endpoint = &traffic.endpoints[rng.random_range(0..traffic.endpoints.len())];
            let (latency_ms, phases) = traffic.draw(&mut rng);
            let roll: f64 = rng.random();
            let (status_code, error_type) = if roll < traffic.timeout_rate {
                counts[which].timeouts += 1;
                (504, Some("timeout"))
            } else if roll < traffic.timeout_rate + traffic.error_rate {
                counts[which].errors += 1;
                (500, Some("500"))
            } else {
                (200, None)
            };
            counts[which].requests += 1;
            request_spans(
                &mut batch,
                &mut rng,
                &scope,
                traffic,
                endpoint,
                latency_ms,
                phases,
                status_code,
                error_type,
            );
            report.requests += 1;
            report.db_spans += u64::from(traffic.db_calls);
            sent += 1;
            if batch.len() >= BATCH {
                export(&exporter, &mut batch, &mut report).await;
                last_flush = Instant::now();
            }
        }
        report.per_version.extend(counts);
    }
    export(&exporter, &mut batch, &mut report).await;
    report.elapsed = start.elapsed();
    Ok(report)
}

/// The OpenTelemetry SDK's OTLP/gRPC span exporter for `scenario`'s
/// service, with the options' credentials, once [`probe`] found the
/// collector takes exports with them.
async fn span_exporter(
    scenario: &Scenario,
    options: &ReplayOptions,
) -> Result<opentelemetry_otlp::SpanExporter, ReplayError> {
    let credentials = options.client.load()?;
    let url = probe(&credentials, &options.endpoint).await?;
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .with_metadata(credentials.token_metadata());
    if let Some(tls) = credentials.tls_for(&url) {
        builder = builder.with_tls_config(tls);
    }
    let mut exporter = builder.build().map_err(|e| ReplayError::Exporter {
        endpoint: url.clone(),
        message: e.to_string(),
    })?;
    exporter.set_resource(
        &Resource::builder()
            .with_service_name(scenario.service.clone())
            .build(),
    );
    Ok(exporter)
}

/// One empty trace export to `endpoint`: `Ok` with the URL dialed when the
/// collector takes exports with these credentials.
async fn probe(credentials: &Credentials, endpoint: &str) -> Result<String, ClientError> {
    let url = normalize_url(endpoint)?;
    let endpoint = credentials
        .endpoint(&url)?
        .connect_timeout(EXPORT_TIMEOUT)
        .timeout(EXPORT_TIMEOUT);
    let answer = TraceServiceClient::new(GrpcOnly(endpoint.connect_lazy()))
        .export(credentials.request(ExportTraceServiceRequest::default()))
        .await;
    match answer {
        Ok(_) => Ok(url),
        Err(status) => {
            let error = ClientError::from_status(&status, &url, credentials.sends_token());
            Err(credentials.explain(error, &url).await)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn request_spans(
    batch: &mut Vec<SpanData>,
    rng: &mut StdRng,
    scope: &InstrumentationScope,
    traffic: &Traffic,
    endpoint: &str,
    latency_ms: f64,
    phases: Vec<KeyValue>,
    status_code: i64,
    error_type: Option<&'static str>,
) {
    let end = SystemTime::now();
    let start = end - Duration::from_secs_f64(latency_ms / 1e3);
    let trace_id = TraceId::from(rng.random::<u128>().max(1));
    let span_id = SpanId::from(rng.random::<u64>().max(1));
    let context = |span_id| {
        SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    };
    // Database calls first: they end before their request does.
    for i in 0..traffic.db_calls {
        let slice = latency_ms / f64::from(traffic.db_calls + 1);
        let db_start = start + Duration::from_secs_f64(slice * f64::from(i) / 1e3);
        batch.push(SpanData {
            span_context: context(SpanId::from(rng.random::<u64>().max(1))),
            parent_span_id: span_id,
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: Cow::Borrowed("SELECT products"),
            start_time: db_start,
            end_time: db_start + Duration::from_secs_f64(slice * 0.8 / 1e3),
            attributes: vec![
                KeyValue::new("db.system.name", "postgresql"),
                KeyValue::new("db.operation.name", "SELECT"),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        });
    }
    let mut attributes = vec![
        KeyValue::new("http.request.method", "POST"),
        KeyValue::new("http.route", endpoint.to_owned()),
        KeyValue::new("http.response.status_code", status_code),
        KeyValue::new("model.version", traffic.version.clone()),
    ];
    if let Some(t) = error_type {
        attributes.push(KeyValue::new("error.type", t));
    }
    attributes.extend(phases);
    batch.push(SpanData {
        span_context: context(span_id),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: Cow::Owned(format!("POST {endpoint}")),
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if error_type.is_some() {
            Status::error(error_type.unwrap_or_default())
        } else {
            Status::Unset
        },
        instrumentation_scope: scope.clone(),
    });
}

async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<SpanData>,
    report: &mut ReplayReport,
) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::take(batch);
    let n = spans.len() as u64;
    for attempt in 1..=ATTEMPTS {
        match exporter.export(spans.clone()).await {
            Ok(()) => return,
            Err(error) if attempt < ATTEMPTS => {
                tracing::warn!(%error, attempt, "export failed, retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            Err(error) => {
                tracing::error!(%error, spans = n, "export failed, giving up on this batch");
                report.failed += n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_scenarios_parse() {
        for (name, _) in BUILT_IN {
            let s = Scenario::load(name).unwrap();
            assert_eq!(s.name, name);
        }
        let lending = Scenario::load("lending").unwrap();
        assert_eq!(lending.service, "lending-api");
        let v13 = &lending.phases[1].traffic[1];
        assert_eq!(v13.version, "v1.3");
        assert_eq!(v13.timeout_rate, 0.8);
        assert_eq!(
            v13.latency_ms,
            Some(Latency::Uniform {
                min: 700.0,
                max: 820.0
            })
        );
    }

    #[test]
    fn a_generative_request_lasts_its_phases_and_carries_them() {
        let genai = Scenario::load("genai").unwrap();
        let v2 = &genai.phases[1].traffic[1];
        assert_eq!(v2.version, "chat-v2");
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..100 {
            let (ms, attributes) = v2.draw(&mut rng);
            let value = |key: &str| {
                attributes
                    .iter()
                    .find(|kv| kv.key.as_str() == key)
                    .map(|kv| kv.value.clone())
                    .unwrap()
            };
            let opentelemetry::Value::F64(ttft) = value("gen_ai.latency.time_to_first_token")
            else {
                panic!("{attributes:?}")
            };
            let opentelemetry::Value::I64(tokens) = value("gen_ai.usage.output_tokens") else {
                panic!("{attributes:?}")
            };
            // What the collector derives lies in the scenario's range.
            let per_token = (ms - ttft * 1e3) / (tokens - 1).max(1) as f64;
            assert!(tokens >= 1, "{tokens}");
            assert!(
                tokens == 1 || (29.0..=35.0).contains(&per_token),
                "{per_token}"
            );
        }
        // Either a latency or a generation, never both or neither.
        for traffic in [
            "        latency_ms: { dist: uniform, min: 5, max: 6 }\n        generation: { queue_ms: { dist: uniform, min: 1, max: 2 }, prefill_ms: { dist: uniform, min: 1, max: 2 }, per_output_token_ms: { dist: uniform, min: 1, max: 2 }, output_tokens: { dist: uniform, min: 1, max: 2 } }\n",
            "",
        ] {
            let err = Scenario::parse(
                "x.yaml",
                &format!("name: x\nservice: s\nphases:\n  - name: p\n    requests: 1\n    traffic:\n      - version: v\n        endpoints: [/a]\n{traffic}"),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("needs latency_ms or generation"), "{err}");
        }
    }

    #[test]
    fn bad_scenarios_name_the_key() {
        let err = Scenario::parse("x.yaml", "name: x\nservice: s\nphases: []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("phases"), "{err}");
        let err = Scenario::parse(
            "x.yaml",
            "name: x\nservice: s\nphases:\n  - name: p\n    requests: 1\n    traffic:\n      - version: v\n        endpoints: [/a]\n        latency_ms: { dist: uniform, min: 5, max: 1 }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("phases[0].traffic[0].latency_ms"), "{err}");
        let err = Scenario::parse("x.yaml", "name: x\nservice: s\nphases: []\nrat: 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rat"), "{err}");
        assert!(matches!(
            Scenario::load("/nonexistent.yaml"),
            Err(ReplayError::NotFound(_))
        ));
    }

    #[test]
    fn lognormal_draws_hit_the_configured_median_and_p95() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut v: Vec<f64> = (0..20_000)
            .map(|_| {
                draw_latency(
                    Latency::Lognormal {
                        median: 60.0,
                        p95: 110.0,
                    },
                    &mut rng,
                )
            })
            .collect();
        v.sort_by(f64::total_cmp);
        assert!((v[10_000] / 60.0 - 1.0).abs() < 0.03, "{}", v[10_000]);
        assert!((v[19_000] / 110.0 - 1.0).abs() < 0.05, "{}", v[19_000]);
    }
}
