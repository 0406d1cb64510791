//! `extract`: how spans and log records become samples (the version
//! attributes, extra dimensions, the timeout, and the log mapping).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

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
const RESERVED_LABELS: [&str; 12] = [
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
];

/// Bounds of `extract.max_name_length`, in bytes.
pub const NAME_LENGTH_RANGE: std::ops::RangeInclusive<usize> = 16..=4096;

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
    /// How log records (OTLP/HTTP `/v1/logs`, `modelgate analyze`) become
    /// request samples; the default is the lending incident's format.
    pub logs: LogMapping,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        Self {
            version_attributes: [
                "model.version",
                "ml.model.version",
                "gen_ai.response.model",
                "gen_ai.request.model",
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
        Ok(())
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
