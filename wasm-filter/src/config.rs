//! The filter's configuration: the JSON `configuration` string of Envoy's
//! `envoy.filters.http.wasm`, or Istio's `WasmPlugin.pluginConfig` (a Struct
//! that Istio hands over as the same JSON).
//!
//! Pure: parsing and validation only. It must never accept a configuration it
//! cannot run with: every problem is reported with the field it is about, so
//! `on_configure` can refuse the plugin with one clear log line.

use serde::Deserialize;
use std::fmt;

/// What is wrong with a configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending field (`.` when the document itself is bad).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad configuration: field `{}`: {}",
            self.field, self.problem
        )
    }
}

fn bad(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// The filter's configuration. Every field is documented with its default in
/// `wasm-filter/README.md`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `service.name` of the exported spans: the collector keys its series by it.
    pub service_name: String,
    /// Header carrying the model version; kept when the client sends it,
    /// stamped otherwise, read back from the response (the upstream wins).
    #[serde(default = "default_version_header")]
    pub version_header: String,
    /// The version that gets traffic when no canary is chosen or after a rollback.
    pub baseline_version: String,
    /// The canary version; absent means no split (everyone gets the baseline).
    #[serde(default)]
    pub candidate_version: Option<String>,
    /// Share of unversioned traffic sent to the candidate, in percent (0–100).
    #[serde(default)]
    pub canary_percent: f64,
    /// Header whose value keeps one client on one version (e.g. a lender id);
    /// absent: the request id is hashed, so the split is per request.
    #[serde(default)]
    pub sticky_header: Option<String>,
    /// Header carrying the request id; stamped with a UUIDv4 when absent.
    #[serde(default = "default_request_id_header")]
    pub request_id_header: String,
    /// Envoy cluster of the collector's OTLP/gRPC port; absent: no export.
    #[serde(default)]
    pub collector_cluster: Option<String>,
    /// How often buffered spans are exported.
    #[serde(default = "default_export_interval_ms")]
    pub export_interval_ms: u64,
    /// Most spans in one Export call.
    #[serde(default = "default_export_batch_max")]
    pub export_batch_max: usize,
    /// Most spans buffered; when full the oldest is dropped and counted.
    #[serde(default = "default_export_buffer_max")]
    pub export_buffer_max: usize,
    /// Timeout of one Export call.
    #[serde(default = "default_export_timeout_ms")]
    pub export_timeout_ms: u64,
    /// Retries of a failed batch before it is dropped and counted.
    #[serde(default = "default_export_max_retries")]
    pub export_max_retries: u32,
    /// Envoy cluster of the collector's HTTP query API; absent: no polling.
    #[serde(default)]
    pub query_cluster: Option<String>,
    /// `:authority` of the poll request.
    #[serde(default = "default_query_authority")]
    pub query_authority: String,
    /// How often the collector is asked for active regressions.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Timeout of one poll.
    #[serde(default = "default_poll_timeout_ms")]
    pub poll_timeout_ms: u64,
    /// Move unversioned traffic off a candidate with a firing regression.
    #[serde(default)]
    pub rollback: bool,
    /// After a rollback, send the candidate traffic again once the collector
    /// has reported no regression for `resume_after_ms`.
    #[serde(default = "default_true")]
    pub auto_resume: bool,
    /// How long the regression must stay cleared before resuming.
    #[serde(default = "default_resume_after_ms")]
    pub resume_after_ms: u64,
    /// First segment of every Envoy stat name the filter defines.
    #[serde(default = "default_stats_prefix")]
    pub stats_prefix: String,
    /// Distinct versions with their own stats; the rest share `other`.
    #[serde(default = "default_max_versions")]
    pub max_versions: usize,
}

fn default_version_header() -> String {
    "x-model-version".to_owned()
}
fn default_request_id_header() -> String {
    "x-request-id".to_owned()
}
fn default_query_authority() -> String {
    "modelgate".to_owned()
}
fn default_stats_prefix() -> String {
    "modelgate".to_owned()
}
const fn default_export_interval_ms() -> u64 {
    1_000
}
const fn default_export_batch_max() -> usize {
    512
}
const fn default_export_buffer_max() -> usize {
    4_096
}
const fn default_export_timeout_ms() -> u64 {
    2_000
}
const fn default_export_max_retries() -> u32 {
    2
}
const fn default_poll_interval_ms() -> u64 {
    5_000
}
const fn default_poll_timeout_ms() -> u64 {
    1_000
}
const fn default_true() -> bool {
    true
}
const fn default_resume_after_ms() -> u64 {
    30_000
}
const fn default_max_versions() -> usize {
    32
}

/// Longest accepted configuration document: a configuration is a few hundred
/// bytes; anything far larger is a mistake, not a plugin config.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

impl Config {
    /// Parses and validates the configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(bad(
                ".",
                "the configuration is empty; `service_name` and `baseline_version` are required",
            ));
        }
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(bad(".", format!("longer than {MAX_CONFIG_BYTES} bytes")));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let config: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            bad(&field, e.inner().to_string())
        })?;
        de.end().map_err(|e| bad(".", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges, names, and fields that need others.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_text("service_name", &self.service_name, 256)?;
        check_header("version_header", &self.version_header)?;
        check_header("request_id_header", &self.request_id_header)?;
        check_text("baseline_version", &self.baseline_version, 128)?;
        if let Some(candidate) = &self.candidate_version {
            check_text("candidate_version", candidate, 128)?;
            if candidate == &self.baseline_version {
                return Err(bad("candidate_version", "equals baseline_version"));
            }
        }
        if !(self.canary_percent.is_finite() && (0.0..=100.0).contains(&self.canary_percent)) {
            return Err(bad("canary_percent", "must be a number from 0 to 100"));
        }
        if self.canary_percent > 0.0 && self.candidate_version.is_none() {
            return Err(bad(
                "canary_percent",
                "is set but `candidate_version` is not",
            ));
        }
        if let Some(sticky) = &self.sticky_header {
            check_header("sticky_header", sticky)?;
        }
        if let Some(cluster) = &self.collector_cluster {
            check_text("collector_cluster", cluster, 256)?;
        }
        if let Some(cluster) = &self.query_cluster {
            check_text("query_cluster", cluster, 256)?;
        }
        check_text("query_authority", &self.query_authority, 256)?;
        check_millis("export_interval_ms", self.export_interval_ms)?;
        check_millis("export_timeout_ms", self.export_timeout_ms)?;
        check_millis("poll_interval_ms", self.poll_interval_ms)?;
        check_millis("poll_timeout_ms", self.poll_timeout_ms)?;
        if self.resume_after_ms > 86_400_000 {
            return Err(bad("resume_after_ms", "must be at most one day"));
        }
        if !(1..=10_000).contains(&self.export_batch_max) {
            return Err(bad("export_batch_max", "must be from 1 to 10000"));
        }
        if !(self.export_batch_max..=100_000).contains(&self.export_buffer_max) {
            return Err(bad(
                "export_buffer_max",
                "must be from export_batch_max to 100000",
            ));
        }
        if self.export_max_retries > 10 {
            return Err(bad("export_max_retries", "must be at most 10"));
        }
        if !(1..=256).contains(&self.max_versions) {
            return Err(bad("max_versions", "must be from 1 to 256"));
        }
        let prefix_ok = !self.stats_prefix.is_empty()
            && self.stats_prefix.len() <= 64
            && self
                .stats_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !prefix_ok {
            return Err(bad("stats_prefix", "must be 1-64 of [a-z0-9_]"));
        }
        if self.rollback {
            if self.candidate_version.is_none() {
                return Err(bad("rollback", "needs `candidate_version`"));
            }
            if self.query_cluster.is_none() {
                return Err(bad("rollback", "needs `query_cluster` to poll"));
            }
        }
        Ok(())
    }

    /// The canary share in basis points (0–10000), the unit of the split.
    pub fn canary_basis_points(&self) -> u32 {
        // Validated to 0..=100, so the product fits.
        (self.canary_percent * 100.0).round() as u32
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > max {
        return Err(bad(field, format!("must be 1 to {max} bytes")));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(field, "must be visible ASCII without spaces"));
    }
    Ok(())
}

fn check_header(field: &str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            "must be a lowercase header name (1-128 of [a-z0-9-_.])",
        ))
    }
}

fn check_millis(field: &str, value: u64) -> Result<(), ConfigError> {
    if (10..=3_600_000).contains(&value) {
        Ok(())
    } else {
        Err(bad(field, "must be from 10 ms to one hour"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"service_name":"lending-api","baseline_version":"v1.2"}"#;

    #[test]
    fn minimal_config_takes_defaults() {
        let c = Config::parse(MINIMAL.as_bytes()).unwrap();
        assert_eq!(c.version_header, "x-model-version");
        assert_eq!(c.request_id_header, "x-request-id");
        assert_eq!(c.export_interval_ms, 1_000);
        assert_eq!(c.max_versions, 32);
        assert!(c.auto_resume && !c.rollback);
        assert_eq!(c.canary_basis_points(), 0);
    }

    #[test]
    fn full_config_parses() {
        let c = Config::parse(
            br#"{"service_name":"lending-api","baseline_version":"v1.2",
                "candidate_version":"v1.3","canary_percent":12.5,"sticky_header":"x-lender-id",
                "collector_cluster":"modelgate_otlp","query_cluster":"modelgate_admin",
                "rollback":true,"auto_resume":false,"resume_after_ms":0}"#,
        )
        .unwrap();
        assert_eq!(c.canary_basis_points(), 1250);
        assert_eq!(c.candidate_version.as_deref(), Some("v1.3"));
    }

    fn field_of(json: &str) -> String {
        Config::parse(json.as_bytes()).unwrap_err().field
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field_of(r#"{"service_name":"a","baseline_version":"b","canary_percent":"x"}"#),
            "canary_percent"
        );
        assert_eq!(
            field_of(r#"{"service_name":"a","baseline_version":"b","canary_percent":101}"#),
            "canary_percent"
        );
        assert_eq!(
            field_of(r#"{"service_name":"a","baseline_version":"b","rollback":true}"#),
            "rollback"
        );
        assert_eq!(
            field_of(r#"{"service_name":"a","baseline_version":"b","version_header":"X Bad"}"#),
            "version_header"
        );
        assert_eq!(
            field_of(r#"{"service_name":"a","baseline_version":"b","export_batch_max":0}"#),
            "export_batch_max"
        );
        let unknown =
            Config::parse(br#"{"service_name":"a","baseline_version":"b","canary_weight":5}"#)
                .unwrap_err();
        assert!(unknown.problem.contains("canary_weight"), "{unknown}");
        let missing = Config::parse(br#"{"service_name":"a"}"#).unwrap_err();
        assert!(missing.problem.contains("baseline_version"), "{missing}");
        assert_eq!(field_of(""), ".");
        assert!(Config::parse(b"[1,2]").is_err());
        assert_eq!(field_of(&format!("{MINIMAL} trailing")), ".");
    }
}
