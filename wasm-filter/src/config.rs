//! The filter's configuration: the JSON `configuration` string of Envoy's
//! `envoy.filters.http.wasm`, or Istio's `WasmPlugin.pluginConfig` (a Struct
//! that Istio hands over as the same JSON).
//!
//! Pure: parsing and validation only. It must never accept a configuration it
//! cannot run with: every problem is reported with the field it is about, so
//! `on_configure` can refuse the plugin with one clear log line.
//!
//! The document is read as a `serde_json::Value` and each field taken from
//! it through the table in `fields!`, instead of `#[derive(Deserialize)]`
//! with `serde_path_to_error`: that pair cost 40 KiB of a module Envoy loads
//! once per worker, and serde's own messages ("invalid type: string, expected
//! f64") name neither the field nor what a user should write.

use serde_json::Value;

use crate::verdict::Severity;
use std::fmt;

/// What is wrong with a configuration, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending field (`.` when the document itself is not a JSON
    /// object; a missing required field is named like any other).
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
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `service.name` of the exported spans: the collector keys its series by
    /// it. Required (empty until read, so `validate` names it when absent).
    pub service_name: String,
    /// Header carrying the model version; kept when the client sends it,
    /// stamped otherwise, read back from the response (the upstream wins).
    pub version_header: String,
    /// The version that gets traffic when no canary is chosen or after a
    /// rollback. Required, like `service_name`.
    pub baseline_version: String,
    /// The canary version; absent means no split (everyone gets the baseline).
    pub candidate_version: Option<String>,
    /// Share of unversioned traffic sent to the candidate, in percent (0–100).
    pub canary_percent: f64,
    /// Header whose value keeps one client on one version (e.g. a lender id);
    /// absent: the request id is hashed, so the split is per request.
    pub sticky_header: Option<String>,
    /// Header carrying the request id; stamped with a UUIDv4 when absent.
    pub request_id_header: String,
    /// Cluster (Envoy, Istio) or `host:port` (ngx_wasm_module) of the
    /// collector's OTLP port: 4317 for `grpc`, 4318 for `http`; absent: no
    /// export.
    pub collector_cluster: Option<String>,
    /// How spans are exported: OTLP/gRPC (`dispatch_grpc_call`) or OTLP/HTTP
    /// protobuf (`dispatch_http_call`), for hosts without gRPC dispatch.
    pub export_protocol: ExportProtocol,
    /// `:authority` of the OTLP/HTTP export.
    pub collector_authority: String,
    /// Gzip an OTLP/HTTP batch when that makes it smaller.
    pub export_gzip: bool,
    /// How often buffered spans are exported.
    pub export_interval_ms: u64,
    /// Most spans in one Export call.
    pub export_batch_max: usize,
    /// Most spans buffered; when full the oldest is dropped and counted.
    pub export_buffer_max: usize,
    /// Timeout of one Export call.
    pub export_timeout_ms: u64,
    /// Retries of a failed batch before it is dropped and counted.
    pub export_max_retries: u32,
    /// Envoy cluster of the collector's HTTP query API; absent: no polling.
    pub query_cluster: Option<String>,
    /// `:authority` of the poll request.
    pub query_authority: String,
    /// How often the collector is asked for active regressions.
    pub poll_interval_ms: u64,
    /// Timeout of one poll.
    pub poll_timeout_ms: u64,
    /// Move unversioned traffic off a candidate with a firing regression.
    pub rollback: bool,
    /// The least severe regression that moves traffic off the candidate:
    /// `critical` (the collector's paging thresholds: 1.5x, the SLA breached,
    /// errors up 5 points) or `warning` (1.2x, the SLA at risk, too).
    pub rollback_on: Severity,
    /// After a rollback, send the candidate traffic again once the collector
    /// has reported no regression for `resume_after_ms`.
    pub auto_resume: bool,
    /// How long the candidate must keep passing before resuming.
    pub resume_after_ms: u64,
    /// The operator's resume: raising it gives a rolled-back candidate its
    /// share again (the proxy's decision is kept per service, candidate and
    /// epoch, so it survives VM restarts but not this).
    pub rollback_epoch: u32,
    /// Bearer token sent as `authorization: Bearer` on the export and the
    /// poll, for a collector with `auth` on. Never logged.
    pub token: Option<Secret>,
    /// Name of a VM environment variable holding the token instead (Envoy
    /// `vm_config.environment_variables`, Istio `vmConfig.env`), so the
    /// secret stays out of the plugin configuration.
    pub token_env: Option<String>,
    /// First segment of every Envoy stat name the filter defines.
    pub stats_prefix: String,
    /// Distinct versions with their own stats; the rest share `other`.
    pub max_versions: usize,
}

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExportProtocol {
    /// `TraceService/Export` through `dispatch_grpc_call` (Envoy, Istio).
    #[default]
    Grpc,
    /// `POST /v1/traces` (protobuf) through `dispatch_http_call`: every
    /// proxy-wasm host has it (ngx_wasm_module has no gRPC dispatch).
    Http,
}

/// A bearer token: sent to the collector, never shown (its `Debug` is
/// redacted and no error repeats it).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The token itself, for the `authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Longest accepted token.
const MAX_TOKEN_BYTES: usize = 4096;

/// Checks a token without ever repeating it: RFC 6750's `b64token`
/// characters, so it fits an `authorization` header as it is.
fn check_token(field: &str, token: &str) -> Result<(), ConfigError> {
    let body = token.trim_end_matches('=');
    let ok = !body.is_empty()
        && token.len() <= MAX_TOKEN_BYTES
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("must be 1-{MAX_TOKEN_BYTES} characters of [A-Za-z0-9-._~+/] then any `=` (a bearer token; the value is not shown)"),
        ))
    }
}

impl Default for Config {
    /// The defaults of every field (`wasm-filter/README.md` lists them).
    fn default() -> Self {
        Self {
            service_name: String::new(),
            version_header: "x-model-version".to_owned(),
            baseline_version: String::new(),
            candidate_version: None,
            canary_percent: 0.0,
            sticky_header: None,
            request_id_header: "x-request-id".to_owned(),
            collector_cluster: None,
            export_protocol: ExportProtocol::Grpc,
            collector_authority: "modelgate".to_owned(),
            export_gzip: true,
            export_interval_ms: 1_000,
            export_batch_max: 512,
            export_buffer_max: 4_096,
            export_timeout_ms: 2_000,
            export_max_retries: 2,
            query_cluster: None,
            query_authority: "modelgate".to_owned(),
            // Short: a poll answered `304 Not Modified` costs the collector a
            // hash and the filter nothing, and it bounds the time from a
            // firing alert to the rollback.
            poll_interval_ms: 250,
            poll_timeout_ms: 1_000,
            rollback: false,
            rollback_on: Severity::Critical,
            auto_resume: true,
            resume_after_ms: 30_000,
            rollback_epoch: 0,
            token: None,
            token_env: None,
            stats_prefix: "modelgate".to_owned(),
            max_versions: 32,
        }
    }
}

/// A field's type, as JSON gives it.
trait FromJson: Sized {
    /// What a value must be, for the error.
    const EXPECTED: &'static str;
    /// The value, if it is one.
    fn from_json(value: &Value) -> Option<Self>;
}

impl FromJson for String {
    const EXPECTED: &'static str = "a string";
    fn from_json(value: &Value) -> Option<Self> {
        value.as_str().map(str::to_owned)
    }
}

impl FromJson for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_json(value: &Value) -> Option<Self> {
        value.as_bool()
    }
}

impl FromJson for f64 {
    const EXPECTED: &'static str = "a number";
    fn from_json(value: &Value) -> Option<Self> {
        value.as_f64()
    }
}

impl FromJson for u64 {
    const EXPECTED: &'static str = "a whole number";
    fn from_json(value: &Value) -> Option<Self> {
        // Istio hands `pluginConfig` numbers over as doubles: `1000.0` is 1000.
        value.as_u64().or_else(|| {
            let f = value.as_f64()?;
            (f >= 0.0 && f.fract() == 0.0 && f < 9_007_199_254_740_992.0).then_some(f as u64)
        })
    }
}

impl FromJson for u32 {
    const EXPECTED: &'static str = "a whole number";
    fn from_json(value: &Value) -> Option<Self> {
        u64::from_json(value).and_then(|n| n.try_into().ok())
    }
}

impl FromJson for usize {
    const EXPECTED: &'static str = "a whole number";
    fn from_json(value: &Value) -> Option<Self> {
        u64::from_json(value).and_then(|n| n.try_into().ok())
    }
}

impl FromJson for ExportProtocol {
    const EXPECTED: &'static str = "`grpc` or `http`";
    fn from_json(value: &Value) -> Option<Self> {
        match value.as_str()? {
            "grpc" => Some(Self::Grpc),
            "http" => Some(Self::Http),
            _ => None,
        }
    }
}

impl FromJson for Severity {
    const EXPECTED: &'static str = "`critical` or `warning`";
    fn from_json(value: &Value) -> Option<Self> {
        match value.as_str()? {
            "critical" => Some(Self::Critical),
            "warning" => Some(Self::Warning),
            _ => None,
        }
    }
}

impl FromJson for Secret {
    const EXPECTED: &'static str = "a string";
    fn from_json(value: &Value) -> Option<Self> {
        String::from_json(value).map(Self)
    }
}

/// An optional field: JSON `null` is the same as leaving it out.
impl<T: FromJson> FromJson for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            value => T::from_json(value).map(Some),
        }
    }
}

fn read<T: FromJson>(field: &str, value: &Value) -> Result<T, ConfigError> {
    T::from_json(value).ok_or_else(|| bad(field, format!("must be {}", T::EXPECTED)))
}

/// The table of fields: each JSON key is the field's own name.
macro_rules! fields {
    ($($field:ident),* $(,)?) => {
        /// Every field's name, in the order of the README.
        pub const FIELDS: &[&str] = &[$(stringify!($field)),*];

        impl Config {
            /// Sets the field named `key` from `value`.
            fn set(&mut self, key: &str, value: &Value) -> Result<(), ConfigError> {
                match key {
                    $(stringify!($field) => self.$field = read(key, value)?,)*
                    _ => {
                        return Err(bad(
                            key,
                            format!("unknown field (the fields are {})", FIELDS.join(", ")),
                        ))
                    }
                }
                Ok(())
            }
        }
    };
}

fields!(
    service_name,
    baseline_version,
    candidate_version,
    canary_percent,
    sticky_header,
    version_header,
    request_id_header,
    collector_cluster,
    export_protocol,
    collector_authority,
    export_gzip,
    export_interval_ms,
    export_batch_max,
    export_buffer_max,
    export_timeout_ms,
    export_max_retries,
    query_cluster,
    query_authority,
    poll_interval_ms,
    poll_timeout_ms,
    rollback,
    rollback_on,
    auto_resume,
    resume_after_ms,
    rollback_epoch,
    token,
    token_env,
    stats_prefix,
    max_versions,
);

/// Longest accepted configuration document: a configuration is a few hundred
/// bytes; anything far larger is a mistake, not a plugin config.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

impl Config {
    /// Parses and validates the configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(bad(
                "service_name",
                "is required (the configuration is empty; `baseline_version` is required too)",
            ));
        }
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(bad(".", format!("longer than {MAX_CONFIG_BYTES} bytes")));
        }
        let document: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(".", format!("not JSON: {e}")))?;
        let Value::Object(fields) = document else {
            return Err(bad(".", "must be a JSON object of fields"));
        };
        let mut config = Self::default();
        for (key, value) in &fields {
            config.set(key, value)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges, names, and fields that need others.
    pub fn validate(&self) -> Result<(), ConfigError> {
        required("service_name", &self.service_name)?;
        required("baseline_version", &self.baseline_version)?;
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
        check_text("collector_authority", &self.collector_authority, 256)?;
        if let Some(token) = &self.token {
            check_token("token", token.expose())?;
            if self.token_env.is_some() {
                return Err(bad("token_env", "is set and so is `token`: choose one"));
            }
        }
        if let Some(name) = &self.token_env {
            check_text("token_env", name, 256)?;
        }
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

    /// The bearer token: `token`, or the VM environment variable named by
    /// `token_env` (looked up through `env`), checked; `Ok(None)`: none.
    pub fn bearer(
        &self,
        env: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Option<Secret>, ConfigError> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        let Some(name) = &self.token_env else {
            return Ok(None);
        };
        let token = env(name).ok_or_else(|| {
            bad(
                "token_env",
                format!("the VM has no environment variable `{name}`"),
            )
        })?;
        let token = token.trim();
        check_token("token_env", token)?;
        Ok(Some(Secret(token.to_owned())))
    }

    /// The canary share in basis points (0–10000), the unit of the split.
    pub fn canary_basis_points(&self) -> u32 {
        // Validated to 0..=100, so the product fits.
        (self.canary_percent * 100.0).round() as u32
    }
}

fn required(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        Err(bad(field, "is required"))
    } else {
        Ok(())
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
        assert_eq!(unknown.field, "canary_weight");
        assert!(unknown.problem.contains("canary_percent"), "{unknown}");
        assert_eq!(field_of(""), "service_name");
        assert!(Config::parse(b"[1,2]").is_err());
        assert_eq!(field_of(&format!("{MINIMAL} trailing")), ".");
    }

    #[test]
    fn a_missing_required_field_is_named() {
        let missing = Config::parse(br#"{"service_name":"a"}"#).unwrap_err();
        assert_eq!(missing.field, "baseline_version");
        assert_eq!(missing.problem, "is required");
        assert_eq!(field_of(r#"{"baseline_version":"v1"}"#), "service_name");
        assert_eq!(field_of("{}"), "service_name");
        assert_eq!(
            field_of(r#"{"service_name":"","baseline_version":"v1"}"#),
            "service_name"
        );
    }

    #[test]
    fn the_token_is_checked_and_never_shown() {
        let with = |token: &str| {
            format!(r#"{{"service_name":"a","baseline_version":"b","token":"{token}"}}"#)
        };
        let c = Config::parse(with("abc.DEF-123_~+/==").as_bytes()).unwrap();
        assert_eq!(c.token.as_ref().unwrap().expose(), "abc.DEF-123_~+/==");
        assert!(!format!("{c:?}").contains("abc.DEF"), "{c:?}");
        for bad_token in ["with space", "", "==", "toké", "a\\nb"] {
            let e = Config::parse(with(bad_token).as_bytes()).unwrap_err();
            assert_eq!(e.field, "token", "{bad_token}");
            assert!(
                !e.to_string().contains(bad_token) || bad_token.is_empty() || bad_token == "==",
                "{e}"
            );
        }
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            Config::parse(with(&long).as_bytes()).unwrap_err().field,
            "token"
        );
        let both = r#"{"service_name":"a","baseline_version":"b","token":"t","token_env":"T"}"#;
        assert_eq!(field_of(both), "token_env");
    }

    #[test]
    fn the_token_may_come_from_the_vm_environment() {
        let c = Config::parse(
            br#"{"service_name":"a","baseline_version":"b","token_env":"MODELGATE_TOKEN"}"#,
        )
        .unwrap();
        let env = |value: Option<&str>| {
            let value = value.map(str::to_owned);
            move |name: &str| {
                assert_eq!(name, "MODELGATE_TOKEN");
                value
            }
        };
        let token = c.bearer(env(Some("s3cret\n"))).unwrap().unwrap();
        assert_eq!(token.expose(), "s3cret");
        let missing = c.bearer(env(None)).unwrap_err();
        assert_eq!(missing.field, "token_env");
        assert!(missing.problem.contains("MODELGATE_TOKEN"), "{missing}");
        let bad = c.bearer(env(Some("has space"))).unwrap_err();
        assert_eq!(bad.field, "token_env");
        assert!(!bad.to_string().contains("has space"), "{bad}");
        let none = Config::parse(MINIMAL.as_bytes()).unwrap();
        assert_eq!(none.bearer(|_| panic!("not asked")).unwrap(), None);
    }

    #[test]
    fn values_of_the_wrong_type_say_what_they_must_be() {
        let e = Config::parse(br#"{"service_name":"a","baseline_version":"b","rollback":"yes"}"#)
            .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.problem.as_str()),
            ("rollback", "must be true or false")
        );
        let e = Config::parse(br#"{"service_name":"a","baseline_version":"b","max_versions":1.5}"#)
            .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.problem.as_str()),
            ("max_versions", "must be a whole number")
        );
        assert_eq!(
            field_of(r#"{"service_name":"a","baseline_version":"b","export_max_retries":-1}"#),
            "export_max_retries"
        );
        assert_eq!(
            field_of(r#"{"service_name":5,"baseline_version":"b"}"#),
            "service_name"
        );
        // Istio's pluginConfig numbers are doubles; null is "not set".
        let c = Config::parse(
            br#"{"service_name":"a","baseline_version":"b","export_interval_ms":250.0,"candidate_version":null}"#,
        )
        .unwrap();
        assert_eq!((c.export_interval_ms, c.candidate_version), (250, None));
        assert!(Config::parse(b"[1,2]")
            .unwrap_err()
            .problem
            .contains("object"));
    }

    #[test]
    fn the_export_protocol_is_grpc_or_http() {
        let c = Config::parse(MINIMAL.as_bytes()).unwrap();
        assert_eq!(c.export_protocol, ExportProtocol::Grpc);
        assert!(c.export_gzip);
        let c = Config::parse(
            br#"{"service_name":"a","baseline_version":"b","export_protocol":"http","collector_cluster":"127.0.0.1:4318"}"#,
        )
        .unwrap();
        assert_eq!(c.export_protocol, ExportProtocol::Http);
        assert_eq!(
            field_of(r#"{"service_name":"a","baseline_version":"b","export_protocol":"udp"}"#),
            "export_protocol"
        );
    }
}
