//! `extract`: how spans, log records and histogram points become samples
//! (the version attributes, extra dimensions, the timeout, the log mapping,
//! the histogram metrics read as requests, and endpoint templates).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};
use crate::phase::Phase;

/// At most this many `extract.version_attributes`.
pub const MAX_VERSION_ATTRIBUTES: usize = 16;

/// At most this many `extract.dimensions` (each multiplies the series).
pub const MAX_DIMENSIONS: usize = 16;

/// The longest `extract.max_duration` may be: the latency sketch keeps
/// values up to 2^28 ms (about 3.1 days) in buckets of its own, so no
/// accepted duration is ever folded into its top bucket.
pub const MAX_PLAUSIBLE_DURATION: Duration = Duration::from_secs(3 * 86_400);

/// The attribute names modelgate's metrics carry themselves, in their
/// Prometheus spelling: no dimension may take one.
const RESERVED_LABELS: [&str; 13] = [
    "service_name",
    "endpoint",
    "model_version",
    "outcome",
    "candidate_version",
    "baseline_version",
    "rule",
    "severity",
    "verdict",
    "reason",
    "le",
    "otel_metric_overflow",
    "phase",
];

/// At most this many names in each list of `extract.genai`.
pub const MAX_GENAI_NAMES: usize = 4;

/// Bounds of `extract.max_name_length`, in bytes.
pub const NAME_LENGTH_RANGE: std::ops::RangeInclusive<usize> = 16..=4096;
/// At most this many `extract.metrics.histograms` (every metric of every
/// export is looked up in the list).
pub const MAX_HISTOGRAM_METRICS: usize = 64;

/// Turning spans into samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractConfig {
    /// Attributes naming the version, first present wins (span, then resource,
    /// for each key in turn); at most [`MAX_VERSION_ATTRIBUTES`].
    pub version_attributes: Vec<String>,
    /// A request lasting at least this long is a timeout even when nothing
    /// else says so (unset: only attributes decide).
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Shortest plausible request: a span or log record lasting less is
    /// refused (in `partial_success`) and counted
    /// (`modelgate.receiver.refused{reason="implausible_duration"}`).
    #[serde(with = "humantime_serde")]
    pub min_duration: Duration,
    /// Longest plausible request (a day; at most 3 days): one span of absurd
    /// duration (a clock gone wrong, a forged export) is refused and counted
    /// instead of turning a healthy version's quantiles into its own.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// Longest value, in bytes, of an attribute that names a series
    /// (service, endpoint, version, dimensions); longer ones are cut at a
    /// character boundary and counted (`modelgate.names.truncated`), so a
    /// sender's 64 KB endpoint names cannot make a series, a scrape line or
    /// a log line 64 KB long.
    pub max_name_length: usize,
    /// Extra attributes (span, then resource) that split series further, e.g.
    /// `deployment.environment.name`. Each multiplies the series count; at
    /// most [`MAX_DIMENSIONS`].
    pub dimensions: Vec<String>,
    /// How log records (OTLP `logs`, `modelgate analyze`) become request
    /// samples; the default is the lending incident's format.
    pub logs: LogMapping,
    /// Which histogram metrics (OTLP `metrics`) are read as requests: each
    /// data point is many requests at once.
    pub metrics: MetricsMapping,
    /// How raw paths become endpoints, and how many a service may have.
    pub endpoints: EndpointTemplates,
    /// The span attributes naming a generative model request's phases
    /// (`crate::extract::genai`).
    pub genai: GenAiAttributes,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        Self {
            version_attributes: [
                "model.version",
                "ml.model.version",
                "gen_ai.response.model",
                "gen_ai.request.model",
                // vLLM's metrics' label for the model served.
                "model_name",
                "service.version",
            ]
            .map(str::to_owned)
            .to_vec(),
            timeout: None,
            min_duration: Duration::ZERO,
            max_duration: Duration::from_secs(86_400),
            max_name_length: 256,
            dimensions: Vec::new(),
            logs: LogMapping::default(),
            metrics: MetricsMapping::default(),
            endpoints: EndpointTemplates::default(),
            genai: GenAiAttributes::default(),
        }
    }
}

impl ExtractConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.version_attributes.is_empty() {
            return Err(invalid(
                "extract.version_attributes",
                "must name at least one attribute",
            ));
        }
        // The wire reader gives each attribute key the rules read one bit.
        for (key, list, most) in [
            (
                "extract.version_attributes",
                &self.version_attributes,
                MAX_VERSION_ATTRIBUTES,
            ),
            ("extract.dimensions", &self.dimensions, MAX_DIMENSIONS),
            ("extract.genai.queue", &self.genai.queue, MAX_GENAI_NAMES),
            (
                "extract.genai.first_token",
                &self.genai.first_token,
                MAX_GENAI_NAMES,
            ),
            (
                "extract.genai.per_output_token",
                &self.genai.per_output_token,
                MAX_GENAI_NAMES,
            ),
            (
                "extract.genai.output_tokens",
                &self.genai.output_tokens,
                MAX_GENAI_NAMES,
            ),
            (
                "extract.genai.input_tokens",
                &self.genai.input_tokens,
                MAX_GENAI_NAMES,
            ),
        ] {
            if list.len() > most {
                return Err(invalid(
                    key,
                    format!(
                        "names {} attributes; at most {most} are allowed",
                        list.len()
                    ),
                ));
            }
        }
        // Dimensions become attributes (and Prometheus labels) next to
        // modelgate's own: a clash would make two series one line.
        let mut labels = std::collections::HashSet::new();
        for dimension in &self.dimensions {
            let label = dimension.replace('.', "_");
            let valid = label
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !label.starts_with("__");
            if !valid {
                return Err(invalid(
                    "extract.dimensions",
                    format!(
                        "{dimension:?} is not a usable attribute name (letters, digits, `_` and `.`, not starting with a digit or `__`)"
                    ),
                ));
            }
            if RESERVED_LABELS.contains(&label.as_str()) || !labels.insert(label) {
                return Err(invalid(
                    "extract.dimensions",
                    format!(
                        "{dimension:?} clashes with another dimension or with one of modelgate's own attributes"
                    ),
                ));
            }
        }
        if self.timeout.is_some_and(|t| t < Duration::from_millis(1)) {
            return Err(invalid(
                "extract.timeout",
                "must be at least 1ms (unset it to let only attributes decide)",
            ));
        }
        if self.max_duration < Duration::from_millis(1)
            || self.max_duration > MAX_PLAUSIBLE_DURATION
        {
            return Err(invalid(
                "extract.max_duration",
                format!(
                    "must be between 1ms and {}, got {}",
                    humantime::format_duration(MAX_PLAUSIBLE_DURATION),
                    humantime::format_duration(self.max_duration)
                ),
            ));
        }
        if self.min_duration >= self.max_duration {
            return Err(invalid(
                "extract.min_duration",
                "must be less than extract.max_duration",
            ));
        }
        if !NAME_LENGTH_RANGE.contains(&self.max_name_length) {
            return Err(invalid(
                "extract.max_name_length",
                format!(
                    "must be between {} and {} bytes, got {}",
                    NAME_LENGTH_RANGE.start(),
                    NAME_LENGTH_RANGE.end(),
                    self.max_name_length
                ),
            ));
        }
        let logs = &self.logs;
        for (key, field) in [
            ("extract.logs.duration_field", &logs.duration_field),
            ("extract.logs.version_field", &logs.version_field),
            ("extract.logs.endpoint_field", &logs.endpoint_field),
            ("extract.logs.status_field", &logs.status_field),
        ] {
            if field.trim().is_empty() {
                return Err(invalid(key, "must name a field"));
            }
        }
        self.metrics.validate()?;
        self.endpoints.validate()
    }
}

impl ExtractConfig {
    /// Whether `duration` is a plausible request's
    /// (`extract.min_duration..=extract.max_duration`).
    pub fn plausible(&self, duration: Duration) -> bool {
        (self.min_duration..=self.max_duration).contains(&duration)
    }
}

/// The unit of a log's duration field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurationUnit {
    /// Nanoseconds.
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

impl DurationUnit {
    /// `value` of this unit, in seconds.
    pub fn seconds(self, value: f64) -> f64 {
        match self {
            DurationUnit::Ns => value / 1e9,
            DurationUnit::Us => value / 1e6,
            DurationUnit::Ms => value / 1e3,
            DurationUnit::S => value,
        }
    }
}

/// Which fields of a log record make a request sample. The defaults are the
/// lending incident's format (`responseTimeMs`, `modelVersion`, `endpoint`,
/// `status` = `OK` | `Timeout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogMapping {
    /// Field holding the request's duration (a number, or a numeric string).
    pub duration_field: String,
    /// Unit of that field.
    pub duration_unit: DurationUnit,
    /// Field holding the version.
    pub version_field: String,
    /// Field holding the endpoint.
    pub endpoint_field: String,
    /// Field holding the request's time (RFC 3339, or a unix time in
    /// seconds, milliseconds, microseconds or nanoseconds); unset or absent:
    /// the record's own time, else when it was observed. Windows, first
    /// sightings and baselines follow this time, not the arrival order.
    pub time_field: Option<String>,
    /// Field holding the status; a record without it counts as `ok`.
    pub status_field: String,
    /// Field holding the service; unset or absent: the resource's
    /// `service.name`.
    pub service_field: Option<String>,
    /// Status values meaning a timeout (compared case-insensitively).
    pub timeout_values: Vec<String>,
    /// Status values meaning an error (compared case-insensitively).
    pub error_values: Vec<String>,
}

impl Default for LogMapping {
    fn default() -> Self {
        Self::lending()
    }
}

impl LogMapping {
    /// The lending incident's format, the built-in preset.
    pub fn lending() -> Self {
        Self {
            duration_field: "responseTimeMs".into(),
            duration_unit: DurationUnit::Ms,
            version_field: "modelVersion".into(),
            endpoint_field: "endpoint".into(),
            status_field: "status".into(),
            time_field: Some("timestamp".into()),
            service_field: None,
            timeout_values: vec!["timeout".into()],
            error_values: vec!["error".into(), "failed".into()],
        }
    }
}

/// The histogram metrics read as request latency, and the state their
/// cumulative points need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsMapping {
    /// Histogram metrics (explicit-bucket or exponential) whose points are
    /// requests; at most [`MAX_HISTOGRAM_METRICS`]. The defaults are the
    /// standard per-request histograms: `http.server.request.duration`,
    /// `http.server.duration`, `rpc.server.duration`,
    /// `gen_ai.server.request.duration` and the spanmetrics connector's
    /// `traces.span.metrics.duration`; and a generative model server's
    /// phases: `gen_ai.server.time_to_first_token`,
    /// `gen_ai.server.time_per_output_token`, and vLLM's
    /// `vllm:e2e_request_latency_seconds`, `vllm:request_queue_time_seconds`,
    /// `vllm:time_to_first_token_seconds`,
    /// `vllm:time_per_output_token_seconds` and
    /// `vllm:inter_token_latency_seconds`. Any other metric is forwarded,
    /// not read.
    pub histograms: Vec<HistogramMetric>,
    /// Cumulative streams (a metric's points with one set of attributes)
    /// whose last point is remembered, to measure the next one's increase;
    /// a point of a new stream beyond this is counted
    /// (`modelgate.samples.dropped{reason="stream_cap"}`) and not judged. A
    /// stream idle past `aggregate.series_idle_timeout` is forgotten.
    pub max_streams: usize,
}

impl Default for MetricsMapping {
    fn default() -> Self {
        let metric = |name: &str, unit| HistogramMetric {
            name: name.to_owned(),
            unit,
            ..HistogramMetric::default()
        };
        // A generative model server's phases: the GenAI conventions'
        // server metrics (Envoy AI Gateway, agentgateway; endpoint from
        // `gen_ai.operation.name`), and vLLM's own histograms as a
        // Collector's Prometheus receiver passes them on (no endpoint of
        // their own: all one endpoint, `vllm`).
        let phase = |name: &str, phase, endpoint: Option<&str>| HistogramMetric {
            name: name.to_owned(),
            unit: DurationUnit::S,
            endpoint_attributes: Vec::new(),
            endpoint: endpoint.map(str::to_owned),
            phase,
        };
        let vllm = Some("vllm");
        Self {
            histograms: vec![
                metric("http.server.request.duration", DurationUnit::S),
                metric("http.server.duration", DurationUnit::Ms),
                metric("rpc.server.duration", DurationUnit::Ms),
                metric("gen_ai.server.request.duration", DurationUnit::S),
                metric("traces.span.metrics.duration", DurationUnit::Ms),
                phase("gen_ai.server.time_to_first_token", Phase::FirstToken, None),
                phase(
                    "gen_ai.server.time_per_output_token",
                    Phase::PerOutputToken,
                    None,
                ),
                phase("vllm:e2e_request_latency_seconds", Phase::Request, vllm),
                phase("vllm:request_queue_time_seconds", Phase::Queue, vllm),
                phase("vllm:time_to_first_token_seconds", Phase::FirstToken, vllm),
                phase(
                    "vllm:time_per_output_token_seconds",
                    Phase::PerOutputToken,
                    vllm,
                ),
                phase(
                    "vllm:inter_token_latency_seconds",
                    Phase::PerOutputToken,
                    vllm,
                ),
            ],
            max_streams: 100_000,
        }
    }
}

impl MetricsMapping {
    /// The mapping of the metric called `name`, if it is read.
    pub fn histogram(&self, name: &str) -> Option<&HistogramMetric> {
        self.histograms.iter().find(|h| h.name == name)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let key = "extract.metrics.histograms";
        if self.histograms.len() > MAX_HISTOGRAM_METRICS {
            return Err(invalid(
                key,
                format!(
                    "names {} metrics; at most {MAX_HISTOGRAM_METRICS} are allowed",
                    self.histograms.len()
                ),
            ));
        }
        for (i, h) in self.histograms.iter().enumerate() {
            if h.name.trim().is_empty() {
                return Err(invalid(&format!("{key}[{i}].name"), "must name a metric"));
            }
            if self.histograms[..i].iter().any(|o| o.name == h.name) {
                return Err(invalid(
                    &format!("{key}[{i}].name"),
                    format!("{:?} is listed twice", h.name),
                ));
            }
            if h.endpoint_attributes.len() > MAX_VERSION_ATTRIBUTES {
                return Err(invalid(
                    &format!("{key}[{i}].endpoint_attributes"),
                    format!("at most {MAX_VERSION_ATTRIBUTES} attributes are allowed"),
                ));
            }
        }
        if self.max_streams == 0 {
            return Err(invalid(
                "extract.metrics.max_streams",
                "must be at least 1 (cumulative histograms need their last point)",
            ));
        }
        Ok(())
    }
}

/// One histogram metric read as requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistogramMetric {
    /// The metric's name, exactly.
    pub name: String,
    /// The unit of its values when the metric itself names none of `s`,
    /// `ms`, `us`, `ns` (its own unit wins).
    pub unit: DurationUnit,
    /// Point (then resource) attributes naming the endpoint, first present
    /// wins; empty: those of spans (`http.route`, `url.path`,
    /// `http.target`), then the spanmetrics connector's `span.name`,
    /// `rpc.service`/`rpc.method`, `gen_ai.operation.name`, else the
    /// metric's name.
    pub endpoint_attributes: Vec<String>,
    /// The endpoint of a point no attribute names one of (unset: the
    /// metric's name). Metrics of one server's phases that carry no
    /// endpoint (vLLM's) name the same one here, so their phases are one
    /// endpoint's.
    pub endpoint: Option<String>,
    /// What of each request the metric measures: `request` (the whole of
    /// it), or a generative model's `queue`, `first_token` or
    /// `per_output_token` (`crate::extract::genai`).
    pub phase: Phase,
}

impl Default for HistogramMetric {
    fn default() -> Self {
        Self {
            name: String::new(),
            unit: DurationUnit::S,
            endpoint_attributes: Vec::new(),
            endpoint: None,
            phase: Phase::Request,
        }
    }
}

/// The span attributes naming a generative model request's phases, in
/// seconds (the GenAI conventions' unit), first present wins: every name
/// the OpenTelemetry GenAI conventions and vLLM have used, old and new.
/// Extend a list to read another emitter's; empty a list to judge no such
/// phase. At most [`MAX_GENAI_NAMES`] names a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenAiAttributes {
    /// Time waiting before the model server took the request up.
    pub queue: Vec<String>,
    /// Time to the first output token (a client's first chunk).
    pub first_token: Vec<String>,
    /// Time per output token after the first; derived as
    /// `(duration - first token) / (output tokens - 1)` where a span has
    /// none of these.
    pub per_output_token: Vec<String>,
    /// Output tokens (a count, not seconds), for the derivation above.
    pub output_tokens: Vec<String>,
    /// Input (prompt) tokens (a count): the time to the first token is
    /// kept and compared per band of input size
    /// (`crate::phase::InputBand`), so longer prompts are not taken for
    /// a slower prefill. Empty: one first-token series, all sizes mixed.
    pub input_tokens: Vec<String>,
}

impl Default for GenAiAttributes {
    fn default() -> Self {
        let names = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        Self {
            queue: names(&["gen_ai.latency.time_in_queue"]),
            first_token: names(&[
                "gen_ai.latency.time_to_first_token",
                "gen_ai.server.time_to_first_token",
                "gen_ai.response.time_to_first_chunk",
            ]),
            per_output_token: names(&[
                "gen_ai.latency.time_per_output_token",
                "gen_ai.server.time_per_output_token",
            ]),
            output_tokens: names(&[
                "gen_ai.usage.output_tokens",
                "gen_ai.usage.completion_tokens",
            ]),
            // The second is the older name, and vLLM's server span's.
            input_tokens: names(&["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"]),
        }
    }
}

/// Endpoints made from raw paths, and a cap on them per service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointTemplates {
    /// When a request has no route (`url.path` or `http.target` only, or a
    /// log's endpoint field), replace id-like path segments with
    /// `placeholder`: numbers, UUIDs, hex tokens, base64 tokens and long
    /// segments mixing letters and digits; the query string is dropped.
    /// Off: every raw path is an endpoint of its own.
    pub templates: bool,
    /// What an id-like segment becomes.
    pub placeholder: String,
    /// Segments at least this long that mix letters and digits (tokens,
    /// slugs with ids) are ids; shorter ones (`v2`, `oauth2`) are kept.
    pub min_token_length: usize,
    /// Segments never replaced (say `2024` in `/reports/2024` when years
    /// are endpoints of their own).
    pub keep: Vec<String>,
    /// Endpoints one service may have; the requests of its further
    /// endpoints are kept together under the endpoint
    /// `{overflow}` (judged like any other, so a slow version is still
    /// caught there) and counted (`modelgate.endpoints.overflow`).
    pub max_per_service: usize,
}

impl Default for EndpointTemplates {
    fn default() -> Self {
        Self {
            templates: true,
            placeholder: "{id}".into(),
            min_token_length: 16,
            keep: Vec::new(),
            max_per_service: 500,
        }
    }
}

impl EndpointTemplates {
    fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.placeholder;
        if p.is_empty() || p.contains(['/', '?', '#']) || p.chars().any(char::is_whitespace) {
            return Err(invalid(
                "extract.endpoints.placeholder",
                "must be a non-empty path segment (no '/', '?', '#' or spaces)",
            ));
        }
        if self.min_token_length < 4 {
            return Err(invalid(
                "extract.endpoints.min_token_length",
                "must be at least 4 (shorter segments like `v2` are names, not ids)",
            ));
        }
        if self.max_per_service == 0 {
            return Err(invalid(
                "extract.endpoints.max_per_service",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
