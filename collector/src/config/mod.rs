//! Configuration: serde structs with defaults that run without any file, an
//! optional YAML file, and `MODELGATE_*` environment overrides.
//!
//! Layering (later wins): built-in defaults, the YAML file, then environment
//! variables `MODELGATE_<SECTION>__<KEY>` (double underscore between levels,
//! e.g. `MODELGATE_JUDGE__SLA__LIMIT=200ms`). Every struct denies unknown
//! keys, so a typo is an error that names the key rather than a silently
//! ignored setting. This module only describes and checks settings; it must
//! never act on them.
//!
//! One file per section, each with its structs, their defaults and the
//! section's `validate`; [`Config::validate`] runs them in file order and
//! hands a section what it is checked against in another.

use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod admin;
mod aggregate;
mod emit;
mod extract;
mod forward;
mod judge;
mod receiver;
mod security;
mod snapshot;

pub use admin::{AdminConfig, MAX_HISTORY_POINTS};
pub use aggregate::{AggregateConfig, MAX_SERIES};
pub use emit::{EmitConfig, OutcomeSplit, PrometheusConfig, VerdictSet};
pub use extract::{
    DurationUnit, EndpointTemplates, ExtractConfig, GenAiAttributes, HistogramMetric, LogMapping,
    MetricsMapping, MAX_DIMENSIONS, MAX_GENAI_NAMES, MAX_HISTOGRAM_METRICS, MAX_PLAUSIBLE_DURATION,
    MAX_VERSION_ATTRIBUTES, NAME_LENGTH_RANGE,
};
pub use forward::{ForwardConfig, ForwardProtocol, MAX_FORWARD_QUEUE};
pub use judge::{
    AlertPolicy, BaselineConfig, ErrorsRule, FanoutRule, JudgeConfig, JudgeOverrides,
    OverrideError, PhaseRule, PhaseRules, PromotionPolicy, RelativeRule, SequentialPolicy, SlaRule,
    VerbosePolicy, MAX_SLA_OVERRIDE,
};
pub use receiver::{ReceiverConfig, MAX_MESSAGE_BYTES, MAX_QUEUE_BATCHES, MIN_MEMORY_LIMIT};
pub use security::{AuthConfig, Secret, TlsConfig};
pub use snapshot::{SnapshotConfig, MIN_SNAPSHOT_INTERVAL};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read or parsed; the
    /// message names the key, the problem and the source.
    #[error("{0}")]
    Load(Box<figment::Error>),
    /// A value parsed but makes no sense.
    #[error("invalid configuration: key `{key}`: {problem}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `judge.sla.quantile`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        Self::Load(Box::new(error))
    }
}

pub(crate) fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// The longest any duration setting may be unless its section says less: a
/// year. Longer is a unit mistake, and timers set that far overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Refuses `value` of `key` when it is shorter than `least`.
pub(crate) fn at_least(key: &str, value: Duration, least: Duration) -> Result<(), ConfigError> {
    if value < least {
        return Err(invalid(
            key,
            format!(
                "must be at least {}, got {}",
                humantime::format_duration(least),
                humantime::format_duration(value)
            ),
        ));
    }
    Ok(())
}

/// Refuses `value` of `key` when it is longer than `most`.
pub(crate) fn at_most(key: &str, value: Duration, most: Duration) -> Result<(), ConfigError> {
    if value > most {
        return Err(invalid(
            key,
            format!(
                "must be at most {}, got {}",
                humantime::format_duration(most),
                humantime::format_duration(value)
            ),
        ));
    }
    Ok(())
}

/// Everything modelgate can be told.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where OTLP arrives and how much of it is accepted.
    pub receiver: ReceiverConfig,
    /// How spans become samples.
    pub extract: ExtractConfig,
    /// How samples are kept.
    pub aggregate: AggregateConfig,
    /// How versions are judged.
    pub judge: JudgeConfig,
    /// Where the findings go.
    pub emit: EmitConfig,
    /// The admin HTTP port: the dashboard, /metrics, /api/v1, /healthz, /readyz.
    pub admin: AdminConfig,
    /// Passing everything received on to the next OTLP hop (off by default).
    pub forward: ForwardConfig,
    /// Saving the state to disk so a restart does not forget an incident.
    pub snapshot: SnapshotConfig,
    /// TLS on all three listeners (OTLP/gRPC, OTLP/HTTP, admin) at once;
    /// unset: plaintext. One section rather than one per listener: the three
    /// ports are one host with one name, so one certificate serves them.
    pub tls: Option<TlsConfig>,
    /// Bearer-token authentication of the receivers and the query API; write
    /// operations of the API are refused while no token is configured.
    pub auth: AuthConfig,
}

impl Config {
    /// Defaults, then `file` if given, then `MODELGATE_*` variables, checked.
    /// The variables Kubernetes injects for a Service named `modelgate` (or
    /// `modelgate-<anything>`) are not settings: they are skipped with a
    /// debug line (see [`is_service_link`]).
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env = Env::prefixed("MODELGATE_").filter(|rest| {
            let link = is_service_link(rest.as_str());
            if link {
                tracing::debug!(
                    variable = %format!("MODELGATE_{rest}"),
                    "ignored: a Kubernetes service link variable, not a setting"
                );
            }
            !link
        });
        Self::figment(file, env.split("__"))
    }

    /// [`Config::load`] with the environment provider given, for tests.
    fn figment(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            let text = read_file(path)?;
            unique_keys(&text)?;
            figment = figment.merge(Yaml::file_exact(path));
        }
        // MODELGATE_CONFIG names the file and MODELGATE_LOG the log filter;
        // neither is a setting. The token is taken as the text it is: the
        // environment provider would read an all-digit one as a number.
        figment = figment.merge(env.ignore(&["config", "log", "auth.token"]));
        if let Ok(token) = std::env::var("MODELGATE_AUTH__TOKEN") {
            figment = figment.merge(Serialized::default("auth.token", token));
        }
        let config: Config = figment.extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Parses YAML text on top of the defaults (no environment), checked.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        unique_keys(text)?;
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Yaml::string(text))
            .extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.receiver.validate()?;
        self.extract.validate()?;
        self.aggregate.validate()?;
        self.judge.validate(&self.aggregate)?;
        self.emit.validate()?;
        self.admin.validate()?;
        self.snapshot.validate()?;
        self.auth.validate()?;
        self.forward.validate()
    }
}

/// The largest configuration file read: a configuration is a few
/// kilobytes, and anything near this is a wrong path.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The file's text, its size checked before it is read.
fn read_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .and_then(|f| f.metadata().map(|m| (f, m)))
        .map_err(|e| invalid("--config", format!("cannot read {}: {e}", path.display())))?;
    let (file, metadata) = file;
    if !metadata.is_file() {
        return Err(invalid(
            "--config",
            format!("no such file: {}", path.display()),
        ));
    }
    if metadata.len() > MAX_CONFIG_BYTES {
        return Err(invalid(
            "--config",
            format!(
                "{} is {} bytes; a configuration file is at most {MAX_CONFIG_BYTES}",
                path.display(),
                metadata.len()
            ),
        ));
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| invalid("--config", format!("cannot read {}: {e}", path.display())))?;
    Ok(text)
}

/// Refuses YAML that names a key twice in one mapping: YAML says keys are
/// unique, and serde would silently keep the last one. The error names the
/// key's dotted path.
fn unique_keys(text: &str) -> Result<(), ConfigError> {
    use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};

    /// Walks one value at `path`; `duplicate` receives the first repeated key.
    struct Unique<'a> {
        path: String,
        duplicate: &'a std::cell::RefCell<Option<String>>,
    }

    impl<'de> DeserializeSeed<'de> for Unique<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Unique<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any YAML value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<serde_yaml_ng::Value>()? {
                let name = match &key {
                    serde_yaml_ng::Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                };
                let path = if self.path.is_empty() {
                    name.clone()
                } else {
                    format!("{}.{name}", self.path)
                };
                if !seen.insert(name) {
                    *self.duplicate.borrow_mut() = Some(path);
                    return Err(A::Error::custom("duplicate key"));
                }
                map.next_value_seed(Unique {
                    path,
                    duplicate: self.duplicate,
                })?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while seq
                .next_element_seed(Unique {
                    path: format!("{}[{i}]", self.path),
                    duplicate: self.duplicate,
                })?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_none<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    if text.trim().is_empty() {
        return Ok(());
    }
    let duplicate = std::cell::RefCell::new(None);
    let seed = Unique {
        path: String::new(),
        duplicate: &duplicate,
    };
    // Syntax errors are figment's to report, with their line.
    let _ = seed.deserialize(serde_yaml_ng::Deserializer::from_str(text));
    match duplicate.into_inner() {
        Some(path) => Err(invalid(
            &path,
            "is set twice in the file (YAML keys are unique; remove one)",
        )),
        None => Ok(()),
    }
}

impl Config {
    /// The effective configuration as YAML, for `modelgate config`.
    pub fn to_yaml(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail; fall
        // back to the debug form rather than panic if it ever does.
        let mut shown = self.clone();
        if shown.auth.token.is_some() {
            shown.auth.token = Some(Secret("<redacted>".into()));
        }
        serde_yaml_ng::to_string(&shown).unwrap_or_else(|e| format!("# {e}\n{shown:#?}"))
    }
}

/// Whether `MODELGATE_<rest>` is one of the variables the kubelet sets for
/// a Service named `modelgate` or `modelgate-<name>` in the pod's namespace:
/// `[<NAME>_]SERVICE_HOST`, `[<NAME>_]SERVICE_PORT[_<PORTNAME>]`,
/// `[<NAME>_]PORT`, `[<NAME>_]PORT_<n>_<TCP|UDP|SCTP>[_PROTO|_PORT|_ADDR]`.
/// A setting always has a double underscore (`<SECTION>__<KEY>`) and none of
/// these has, so they never shadow one; any other unknown variable is still
/// refused by name.
pub fn is_service_link(rest: &str) -> bool {
    let rest = rest.to_ascii_uppercase();
    if rest.contains("__") {
        return false;
    }
    let words: Vec<&str> = rest.split('_').collect();
    let link_from = |i: usize| match &words[i..] {
        ["SERVICE", "HOST"] | ["SERVICE", "PORT", ..] | ["PORT"] => true,
        ["PORT", port, proto, tail @ ..] => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && matches!(*proto, "TCP" | "UDP" | "SCTP")
                && matches!(tail, [] | ["PROTO" | "PORT" | "ADDR"])
        }
        _ => false,
    };
    (0..words.len()).any(|i| words[..i].iter().all(|w| !w.is_empty()) && link_from(i))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    #[test]
    fn overrides_are_checked_and_applied_to_a_copy() {
        let base = JudgeConfig::default();
        let none = JudgeOverrides::new(None, None).unwrap();
        assert!(none.is_empty());
        assert_eq!(none.apply(&base), base);
        let o = JudgeOverrides::new(Some(200.0), Some(50)).unwrap();
        let c = o.apply(&base);
        assert_eq!(c.sla.limit, Duration::from_millis(200));
        assert_eq!(
            [
                c.sla.min_samples,
                c.relative.min_samples,
                c.errors.min_samples,
                c.fanout.min_samples
            ],
            [50; 4]
        );
        assert_eq!(c.relative.factor, base.relative.factor);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 86_400_001.0] {
            assert!(
                matches!(
                    JudgeOverrides::new(Some(bad), None),
                    Err(OverrideError::SlaLimit(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            JudgeOverrides::new(None, Some(0)),
            Err(OverrideError::MinSamples)
        );
    }

    #[test]
    fn defaults_are_valid_and_bind_localhost() {
        let config = Config::default();
        config.validate().unwrap();
        assert!(config.receiver.grpc_listen.ip().is_loopback());
        assert!(config.receiver.http_listen.ip().is_loopback());
        assert_eq!(config.extract.logs, LogMapping::lending());
        assert!(config.admin.listen.ip().is_loopback());
        assert_eq!(config.judge.sla.limit, Duration::from_millis(150));
        assert_eq!(config.aggregate.max_series, 100_000);
    }

    #[test]
    fn yaml_overrides_defaults() {
        let config = Config::from_yaml(
            "judge:\n  sla:\n    limit: 200ms\n  baselines:\n    - service: lending-api\n      version: v1.2\naggregate:\n  max_series: 10\n",
        )
        .unwrap();
        assert_eq!(config.judge.sla.limit, Duration::from_millis(200));
        assert_eq!(config.judge.sla.quantile, 0.95);
        assert_eq!(config.aggregate.max_series, 10);
        assert_eq!(config.judge.baselines[0].version, "v1.2");
    }

    #[test]
    fn sub_millisecond_slot_is_refused_not_a_division_by_zero() {
        // Found while writing the `config` fuzz target: `slot.as_millis()` was 0.
        for slot in ["500us", "1ns", "0s"] {
            let err = Config::from_yaml(&format!("aggregate:\n  slot: {slot}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("aggregate.slot"), "{slot}: {err}");
        }
        Config::from_yaml("aggregate:\n  slot: 1ms\n  window: 1s\n  baseline_horizon: 10s\n  series_idle_timeout: 10s\njudge:\n  sequential:\n    epoch: 5s\n").unwrap();
    }

    #[test]
    fn too_many_attribute_keys_are_refused_with_the_limit() {
        let keys = |n: usize| (0..n).map(|i| format!("    - k{i}\n")).collect::<String>();
        for list in ["version_attributes", "dimensions"] {
            Config::from_yaml(&format!("extract:\n  {list}:\n{}", keys(16))).unwrap();
            let err = Config::from_yaml(&format!("extract:\n  {list}:\n{}", keys(17)))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("extract.{list}")), "{err}");
            assert!(err.contains("at most 16"), "{err}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_yaml("judge:\n  sla:\n    limt: 200ms\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limt"), "{err}");
        assert!(err.contains("judge.sla"), "{err}");
    }

    #[test]
    fn bad_value_is_named_with_its_key() {
        let err = Config::from_yaml("judge:\n  sla:\n    limit: fast\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("judge.sla.limit"), "{err}");
        let err = Config::from_yaml("judge:\n  relative:\n    quantile: 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("judge.relative.quantile"), "{err}");
        let err = Config::from_yaml("aggregate:\n  window: 1h\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("aggregate.baseline_horizon"), "{err}");
        let err = Config::from_yaml("receiver:\n  grpc_listen: nowhere\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("receiver.grpc_listen"), "{err}");
    }

    #[test]
    fn kubernetes_service_links_are_not_settings() {
        for link in [
            "SERVICE_HOST",
            "SERVICE_PORT",
            "SERVICE_PORT_OTLP_GRPC",
            "PORT",
            "PORT_4317_TCP",
            "PORT_4317_TCP_PROTO",
            "PORT_4317_TCP_PORT",
            "PORT_4317_TCP_ADDR",
            "ADMIN_SERVICE_HOST",
            "ADMIN_PORT_9464_TCP_ADDR",
            "port_4318_tcp",
        ] {
            assert!(is_service_link(link), "{link}");
        }
        for setting in [
            "JUDGE__SLA__LIMIT",
            "ADMIN__LISTEN",
            "ADMIN_LISTEN",
            "PORT_ABC_TCP",
            "PORT_4317_HTTP",
            "PORT_4317_TCP_HOST",
            "SERVICE",
            "_PORT",
            "",
        ] {
            assert!(!is_service_link(setting), "{setting}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error
    fn a_kubernetes_pod_environment_starts() {
        figment::Jail::expect_with(|jail| {
            for (name, value) in [
                ("MODELGATE_PORT", "tcp://10.96.0.10:4317"),
                ("MODELGATE_SERVICE_HOST", "10.96.0.10"),
                ("MODELGATE_SERVICE_PORT", "4317"),
                ("MODELGATE_SERVICE_PORT_OTLP_GRPC", "4317"),
                ("MODELGATE_PORT_4317_TCP", "tcp://10.96.0.10:4317"),
                ("MODELGATE_PORT_4317_TCP_PROTO", "tcp"),
                ("MODELGATE_PORT_4317_TCP_PORT", "4317"),
                ("MODELGATE_PORT_4317_TCP_ADDR", "10.96.0.10"),
                ("MODELGATE_ADMIN_PORT", "tcp://10.96.0.11:9464"),
                ("MODELGATE_JUDGE__SLA__LIMIT", "300ms"),
            ] {
                jail.set_env(name, value);
            }
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.judge.sla.limit, Duration::from_millis(300));
            // A mistyped setting is still refused by name.
            jail.set_env("MODELGATE_ADMIN_LISTEN", "0.0.0.0:9464");
            let err = Config::load(None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("admin_listen"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error
    fn environment_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("mg.yaml", "judge:\n  sla:\n    limit: 200ms\n")?;
            jail.set_env("MODELGATE_JUDGE__SLA__LIMIT", "300ms");
            jail.set_env("MODELGATE_ADMIN__LISTEN", "127.0.0.1:0");
            jail.set_env("MODELGATE_LOG", "debug");
            jail.set_env("MODELGATE_CONFIG", "elsewhere.yaml");
            let config = Config::load(Some(Path::new("mg.yaml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.judge.sla.limit, Duration::from_millis(300));
            assert_eq!(config.admin.listen.port(), 0);
            Ok(())
        });
    }

    #[test]
    fn log_mapping_is_configurable_and_checked() {
        let config = Config::from_yaml(
            "extract:\n  logs:\n    duration_field: latency\n    duration_unit: s\n    timeout_values: [\"504\"]\n",
        )
        .unwrap();
        assert_eq!(config.extract.logs.duration_field, "latency");
        assert_eq!(config.extract.logs.version_field, "modelVersion");
        let err = Config::from_yaml("extract:\n  logs:\n    duration_unit: minutes\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("extract.logs.duration_unit"), "{err}");
        let err = Config::from_yaml("extract:\n  logs:\n    endpoint_field: \"\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("extract.logs.endpoint_field"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = Config::load(Some(Path::new("/nonexistent/mg.yaml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/mg.yaml"), "{err}");
    }

    #[test]
    fn history_limits_are_checked() {
        let config = Config::from_yaml(
            "admin:\n  history_points: 720\n  history_series: 50\n  history_regressions: 5\n",
        )
        .unwrap();
        assert_eq!(config.admin.history_points, 720);
        assert_eq!(config.admin.history_series, 50);
        assert_eq!(config.admin.history_regressions, 5);
        assert_eq!(Config::default().admin.history_points, 360);
        for (yaml, key) in [
            ("admin:\n  history_points: 1\n", "admin.history_points"),
            ("admin:\n  history_points: 100001\n", "admin.history_points"),
            ("admin:\n  history_series: 0\n", "admin.history_series"),
            (
                "admin:\n  history_regressions: 0\n",
                "admin.history_regressions",
            ),
        ] {
            let err = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
        let err = Config::from_yaml("admin:\n  history_points: many\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("admin.history_points"), "{err}");
    }

    #[test]
    fn forward_is_off_by_default_and_checked() {
        let config = Config::default();
        assert_eq!(config.forward.endpoint, None);
        assert_eq!(config.forward.queue_items, 1000);
        assert_eq!(config.forward.drain_timeout, Duration::from_secs(10));
        let config = Config::from_yaml(
            "forward:\n  endpoint: http://127.0.0.1:4317\n  protocol: http/protobuf\n  queue_items: 5\n  initial_backoff: 100ms\n  max_backoff: 2s\n  max_elapsed: 1m\n  timeout: 3s\n  drain_timeout: 1s\n",
        )
        .unwrap();
        let f = &config.forward;
        assert_eq!(f.endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(f.protocol, ForwardProtocol::HttpProtobuf);
        assert_eq!(f.queue_items, 5);
        assert_eq!(f.initial_backoff, Duration::from_millis(100));
        assert_eq!(f.max_backoff, Duration::from_secs(2));
        assert_eq!(f.max_elapsed, Duration::from_secs(60));
        assert_eq!(f.timeout, Duration::from_secs(3));
        assert_eq!(f.drain_timeout, Duration::from_secs(1));
        for (yaml, key) in [
            ("forward:\n  endpoint: 127.0.0.1:4317\n", "forward.endpoint"),
            ("forward:\n  endpoint: https://x:4317\n", "forward.endpoint"),
            (
                "forward:\n  endpoint: http://x:4318/v1/traces\n",
                "forward.endpoint",
            ),
            ("forward:\n  protocol: http/json\n", "forward.protocol"),
            ("forward:\n  queue_items: 0\n", "forward.queue_items"),
            ("forward:\n  timeout: 0s\n", "forward.timeout"),
            (
                "forward:\n  initial_backoff: 0s\n",
                "forward.initial_backoff",
            ),
            ("forward:\n  max_backoff: 1s\n", "forward.max_backoff"),
            ("forward:\n  max_elapsed: 1s\n", "forward.max_elapsed"),
            ("forward:\n  max_elapsed: soon\n", "forward.max_elapsed"),
            ("forward:\n  endpont: http://x:1\n", "forward"),
        ] {
            let err = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }

    #[test]
    fn snapshot_settings_default_off_and_are_checked() {
        let config = Config::default();
        assert_eq!(config.snapshot.dir, None);
        assert_eq!(config.snapshot.interval, Duration::from_secs(5));
        let config =
            Config::from_yaml("snapshot:\n  dir: /var/lib/modelgate\n  interval: 2s\n").unwrap();
        assert_eq!(
            config.snapshot.dir.as_deref(),
            Some(Path::new("/var/lib/modelgate"))
        );
        assert_eq!(config.snapshot.interval, Duration::from_secs(2));
        for (yaml, key) in [
            ("snapshot:\n  interval: 10ms\n", "snapshot.interval"),
            ("snapshot:\n  interval: soon\n", "snapshot.interval"),
            ("snapshot:\n  dir: \"\"\n", "snapshot.dir"),
            ("snapshot:\n  path: /tmp\n", "path"),
        ] {
            let err = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }

    #[test]
    fn tls_and_auth_are_optional_and_checked() {
        let config = Config::default();
        assert!(config.tls.is_none());
        assert_eq!(config.auth, AuthConfig::default());
        let config = Config::from_yaml(
            "tls:\n  cert: /etc/mg/cert.pem\n  key: /etc/mg/key.pem\nauth:\n  token_file: /etc/mg/token\n",
        )
        .unwrap();
        let tls = config.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("/etc/mg/cert.pem"));
        assert_eq!(tls.client_ca, None);
        assert_eq!(config.auth.token_file, Some(PathBuf::from("/etc/mg/token")));
        let err = Config::from_yaml("tls:\n  cert: /etc/mg/cert.pem\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("key") && err.contains("tls"), "{err}");
        let err = Config::from_yaml("auth:\n  token: abc\n  token_file: /t\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.token_file"), "{err}");
        let err = Config::from_yaml("auth:\n  token: \" \"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.token"), "{err}");
    }

    #[test]
    fn the_token_is_never_shown() {
        let config = Config::from_yaml("auth:\n  token: hunter2\n").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!config.to_yaml().contains("hunter2"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error
    fn snapshot_dir_comes_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MODELGATE_SNAPSHOT__DIR", "/tmp/mg-state");
            jail.set_env("MODELGATE_SNAPSHOT__INTERVAL", "1s");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                config.snapshot.dir.as_deref(),
                Some(Path::new("/tmp/mg-state"))
            );
            assert_eq!(config.snapshot.interval, Duration::from_secs(1));
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error
    fn token_and_tls_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MODELGATE_AUTH__TOKEN", "s3cret");
            jail.set_env("MODELGATE_TLS__CERT", "c.pem");
            jail.set_env("MODELGATE_TLS__KEY", "k.pem");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.auth.token, Some(Secret("s3cret".into())));
            assert_eq!(config.tls.map(|t| t.key), Some(PathBuf::from("k.pem")));
            Ok(())
        });
    }

    #[test]
    fn a_duplicated_key_is_refused_by_its_path() {
        let err = Config::from_yaml("judge:\n  sla:\n    limit: 1s\n    limit: 2s\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("judge.sla.limit") && err.contains("twice"),
            "{err}"
        );
        let err = Config::from_yaml("aggregate:\n  window: 1m\naggregate:\n  slot: 1s\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`aggregate`"), "{err}");
        // The same key in two list entries is no duplicate.
        Config::from_yaml(
            "judge:\n  baselines:\n    - service: a\n      version: v1\n    - service: b\n      version: v1\n",
        )
        .unwrap();
    }

    #[test]
    fn values_that_would_overflow_or_never_run_are_refused_by_key() {
        for (yaml, key) in [
            (
                "receiver:\n  max_message_bytes: 18446744073709551615\n",
                "receiver.max_message_bytes",
            ),
            (
                "receiver:\n  queue_batches: 18446744073709551615\n",
                "receiver.queue_batches",
            ),
            (
                "receiver:\n  max_bytes_in_flight: 1024\n",
                "receiver.max_bytes_in_flight",
            ),
            ("receiver:\n  idle_timeout: 0s\n", "receiver.idle_timeout"),
            (
                "receiver:\n  body_timeout: 584years\n",
                "receiver.body_timeout",
            ),
            (
                "receiver:\n  max_connections: 1\n",
                "receiver.max_connections",
            ),
            (
                "receiver:\n  max_concurrent_streams: 0\n",
                "receiver.max_concurrent_streams",
            ),
            ("receiver:\n  memory_limit: 1000\n", "receiver.memory_limit"),
            (
                "forward:\n  queue_items: 18446744073709551615\n",
                "forward.queue_items",
            ),
            (
                "forward:\n  drain_timeout: 584years\n",
                "forward.drain_timeout",
            ),
            (
                "judge:\n  evaluation_interval: 584years\n",
                "judge.evaluation_interval",
            ),
            (
                "judge:\n  sla:\n    min_samples: 18446744073709551615\n",
                "judge.sla.min_samples",
            ),
            (
                "judge:\n  alerts:\n    hold: 584years\n",
                "judge.alerts.hold",
            ),
            ("extract:\n  timeout: 0s\n", "extract.timeout"),
            ("extract:\n  max_duration: 30d\n", "extract.max_duration"),
            ("extract:\n  min_duration: 2d\n", "extract.min_duration"),
            (
                "extract:\n  max_name_length: 1\n",
                "extract.max_name_length",
            ),
            (
                "aggregate:\n  max_series: 18446744073709551615\n",
                "aggregate.max_series",
            ),
            (
                "aggregate:\n  service_share: 0\n",
                "aggregate.service_share",
            ),
            ("aggregate:\n  evict_below: 0\n", "aggregate.evict_below"),
            (
                "aggregate:\n  series_idle_timeout: 584years\n",
                "aggregate.series_idle_timeout",
            ),
            ("emit:\n  otlp_interval: 584years\n", "emit.otlp_interval"),
            ("snapshot:\n  interval: 584years\n", "snapshot.interval"),
            ("snapshot:\n  max_bytes: 10\n", "snapshot.max_bytes"),
            (
                "admin:\n  metrics_max_bytes: 10\n",
                "admin.metrics_max_bytes",
            ),
            (
                "admin:\n  history_series: 18446744073709551615\n",
                "admin.history_series",
            ),
        ] {
            let err = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }

    #[test]
    fn dimensions_cannot_clash_with_modelgate_attributes_or_each_other() {
        Config::from_yaml("extract:\n  dimensions: [deployment.environment.name, region]\n")
            .unwrap();
        for list in [
            "[service.name]",
            "[endpoint]",
            "[a.b, a_b]",
            "[\"bad key\"]",
            "[\"9lives\"]",
        ] {
            let err = Config::from_yaml(&format!("extract:\n  dimensions: {list}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("extract.dimensions"), "{list}: {err}");
        }
    }

    #[test]
    fn a_config_file_is_size_checked_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_CONFIG_BYTES + 1).unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("at most") && err.contains("big.yaml"), "{err}");
        let err = Config::load(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("no such file"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error
    fn an_all_digit_token_from_the_environment_is_a_token() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MODELGATE_AUTH__TOKEN", "0012345678901234567890");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                config.auth.token,
                Some(Secret("0012345678901234567890".into()))
            );
            Ok(())
        });
    }

    #[test]
    fn printed_config_parses_back() {
        let config = Config::default();
        assert_eq!(Config::from_yaml(&config.to_yaml()).unwrap(), config);
    }
}
