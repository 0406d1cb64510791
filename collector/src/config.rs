//! Configuration: serde structs with defaults that run without any file, an
//! optional YAML file, and `MODELGATE_*` environment overrides.
//!
//! Layering (later wins): built-in defaults, the YAML file, then environment
//! variables `MODELGATE_<SECTION>__<KEY>` (double underscore between levels,
//! e.g. `MODELGATE_JUDGE__SLA__LIMIT=200ms`). Every struct denies unknown
//! keys, so a typo is an error that names the key rather than a silently
//! ignored setting. This module only describes and checks settings; it must
//! never act on them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::extract::logs::LogMapping;

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

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
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

/// TLS for every listener (rustls, TLS 1.2 and 1.3, PEM files). The files
/// are read once, at start; a missing or unusable one stops the start with
/// its key and path named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key of `cert`, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; set:
    /// every listener requires a client certificate (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Bearer-token authentication. With a token configured, OTLP exports,
/// the gRPC query API, `/api/*` and `/metrics` need `Authorization: Bearer
/// <token>`; `/healthz`, `/readyz` and the dashboard's static files stay
/// open. Without one, everything but the API's write operations is open.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The token itself (or `MODELGATE_AUTH__TOKEN`); prefer `token_file`,
    /// which keeps it out of the configuration and the process environment.
    pub token: Option<Secret>,
    /// A file holding the token (surrounding whitespace ignored), read at start.
    pub token_file: Option<PathBuf>,
}

/// A string never shown by `Debug` (nor by `modelgate config`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The OTLP receivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiverConfig {
    /// OTLP/gRPC listen address; also serves the `modelgate.v1.Query` API.
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP listen address (`/v1/traces`, `/v1/logs`; protobuf or JSON).
    pub http_listen: SocketAddr,
    /// Largest accepted export request after decompression, in bytes; larger
    /// ones get `RESOURCE_EXHAUSTED` (and are counted), as OTLP says.
    pub max_message_bytes: usize,
    /// Export batches waiting for the aggregator; when full, exporters get the
    /// retryable `UNAVAILABLE` instead of their data being dropped.
    pub queue_batches: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 4317)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 4318)),
            max_message_bytes: 4 * 1024 * 1024,
            queue_batches: 1024,
        }
    }
}

/// At most this many `extract.version_attributes`.
pub const MAX_VERSION_ATTRIBUTES: usize = 16;

/// At most this many `extract.dimensions` (each multiplies the series).
pub const MAX_DIMENSIONS: usize = 16;

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
            dimensions: Vec::new(),
            logs: LogMapping::default(),
        }
    }
}

/// Keeping latency per series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateConfig {
    /// The candidate window: how much recent traffic a version is judged on.
    /// A version with fewer requests in it than the rules' `min_samples` is
    /// judged on a longer stretch, up to `baseline_horizon`, so a low-traffic
    /// endpoint waits for evidence instead of never having enough.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How far back the baseline's traffic is kept and the baseline chosen;
    /// at least `window`.
    #[serde(with = "humantime_serde")]
    pub baseline_horizon: Duration,
    /// Width of one window slot: samples leave the window a slot at a time.
    #[serde(with = "humantime_serde")]
    pub slot: Duration,
    /// Hard cap on series; samples of further series go to one overflow
    /// series marked `otel.metric.overflow=true`, and are counted.
    pub max_series: usize,
    /// A series with no sample for this long is forgotten, so memory follows
    /// live traffic; at least `baseline_horizon`.
    #[serde(with = "humantime_serde")]
    pub series_idle_timeout: Duration,
    /// Traces whose database calls wait for their request span; beyond this,
    /// such calls are dropped and counted.
    pub max_pending_traces: usize,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            baseline_horizon: Duration::from_secs(1800),
            slot: Duration::from_secs(10),
            max_series: 100_000,
            series_idle_timeout: Duration::from_secs(1800),
            max_pending_traces: 100_000,
        }
    }
}

/// Judging versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JudgeConfig {
    /// How often every endpoint is judged.
    #[serde(with = "humantime_serde")]
    pub evaluation_interval: Duration,
    /// Fixed baselines; elsewhere the baseline is chosen by traffic.
    pub baselines: Vec<BaselineConfig>,
    /// Absolute latency limit on a quantile.
    pub sla: SlaRule,
    /// Candidate quantile against the baseline's.
    pub relative: RelativeRule,
    /// Candidate timeout and error rate against the baseline's.
    pub errors: ErrorsRule,
    /// Candidate database calls per request against the baseline's.
    pub fanout: FanoutRule,
    /// False-alarm control over time.
    pub sequential: SequentialPolicy,
    /// Pending, firing, resolved.
    pub alerts: AlertPolicy,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            evaluation_interval: Duration::from_secs(1),
            baselines: Vec::new(),
            sla: SlaRule::default(),
            relative: RelativeRule::default(),
            errors: ErrorsRule::default(),
            fanout: FanoutRule::default(),
            sequential: SequentialPolicy::default(),
            alerts: AlertPolicy::default(),
        }
    }
}

/// The longest SLA limit a single verdict may ask for: beyond it the number
/// is a mistake (a unit error), not a limit.
pub const MAX_SLA_OVERRIDE: Duration = Duration::from_secs(86_400);

/// Thresholds one verdict may judge with instead of the configured ones: a
/// release gate's own SLA and its own minimum of requests. Applied to a copy
/// of [`JudgeConfig`] for that verdict only; the running judge and its
/// alerts never see them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JudgeOverrides {
    /// Replaces `judge.sla.limit`.
    pub sla_limit: Option<Duration>,
    /// Replaces the `min_samples` of every rule.
    pub min_samples: Option<u64>,
}

/// Why an override was refused; the caller names the parameter (its names
/// differ between gRPC fields and JSON query parameters).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OverrideError {
    /// The SLA limit is not a positive number of milliseconds up to a day.
    #[error("must be more than 0 and at most 1 day, got {0} ms")]
    SlaLimit(f64),
    /// `min_samples` of 0 would let an empty window pass.
    #[error("must be at least 1")]
    MinSamples,
}

impl JudgeOverrides {
    /// Checked overrides from raw values: an SLA limit in milliseconds and a
    /// sample minimum, each optional.
    pub fn new(sla_limit_ms: Option<f64>, min_samples: Option<u64>) -> Result<Self, OverrideError> {
        let sla_limit = match sla_limit_ms {
            None => None,
            Some(ms) => {
                let max_ms = MAX_SLA_OVERRIDE.as_secs_f64() * 1e3;
                if !(ms > 0.0 && ms <= max_ms) {
                    return Err(OverrideError::SlaLimit(ms));
                }
                Some(Duration::from_secs_f64(ms / 1e3))
            }
        };
        if min_samples == Some(0) {
            return Err(OverrideError::MinSamples);
        }
        Ok(Self {
            sla_limit,
            min_samples,
        })
    }

    /// Nothing overridden: the judge's own results (and alert states) apply.
    pub const fn is_empty(&self) -> bool {
        self.sla_limit.is_none() && self.min_samples.is_none()
    }

    /// `config` with the overrides applied.
    pub fn apply(&self, config: &JudgeConfig) -> JudgeConfig {
        let mut c = config.clone();
        if let Some(limit) = self.sla_limit {
            c.sla.limit = limit;
        }
        if let Some(n) = self.min_samples {
            c.sla.min_samples = n;
            c.relative.min_samples = n;
            c.errors.min_samples = n;
            c.fanout.min_samples = n;
        }
        c
    }
}

/// A fixed baseline version for a service, or one endpoint of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineConfig {
    /// `service.name`.
    pub service: String,
    /// Unset: every endpoint of the service.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The version every other version of that service is compared with.
    pub version: String,
}

/// The `sla` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlaRule {
    /// Off: no absolute limit.
    pub enabled: bool,
    /// The quantile held to the limit (0.95 = p95).
    pub quantile: f64,
    /// The lending incident's SLA was 150 ms.
    #[serde(with = "humantime_serde")]
    pub limit: Duration,
    /// Fewer requests than this are inconclusive.
    pub min_samples: u64,
    /// Significance of "more than (1 - quantile) of requests over the limit"
    /// (exact binomial test), so one slow request never fires.
    pub alpha: f64,
}

impl Default for SlaRule {
    fn default() -> Self {
        Self {
            enabled: true,
            quantile: 0.95,
            limit: Duration::from_millis(150),
            min_samples: 3,
            alpha: 0.01,
        }
    }
}

/// The `relative` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelativeRule {
    /// Off: no comparison of latency with the baseline.
    pub enabled: bool,
    /// The quantile compared.
    pub quantile: f64,
    /// Candidate over baseline on that quantile, at least.
    pub factor: f64,
    /// And slower by at least this much, so a 2x shift of a 1 ms endpoint
    /// does not page.
    #[serde(with = "humantime_serde")]
    pub min_difference: Duration,
    /// Requests needed on each side.
    pub min_samples: u64,
    /// Significance of the rank test (candidate slower than baseline).
    pub alpha: f64,
}

impl Default for RelativeRule {
    fn default() -> Self {
        Self {
            enabled: true,
            quantile: 0.95,
            factor: 1.5,
            min_difference: Duration::from_millis(20),
            min_samples: 10,
            alpha: 0.01,
        }
    }
}

/// The `errors` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErrorsRule {
    /// Off: error and timeout rates are not compared.
    pub enabled: bool,
    /// Candidate's timeout+error rate above the baseline's by at least this
    /// (absolute, 0.05 = 5 percentage points).
    pub margin: f64,
    /// Requests needed on each side.
    pub min_samples: u64,
    /// Significance of the rate difference (Fisher's exact test, one-sided).
    pub alpha: f64,
}

impl Default for ErrorsRule {
    fn default() -> Self {
        Self {
            enabled: true,
            margin: 0.05,
            min_samples: 10,
            alpha: 0.01,
        }
    }
}

/// The `fanout` rule (the e-commerce incident: a deployment that multiplied
/// database queries per request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FanoutRule {
    /// Off: database calls are counted but not judged.
    pub enabled: bool,
    /// Candidate calls per request over the baseline's by this factor.
    pub factor: f64,
    /// And by at least this many calls per request.
    pub min_difference: f64,
    /// Requests needed on each side.
    pub min_samples: u64,
    /// Significance of the rate difference (exact conditional test of two
    /// Poisson rates).
    pub alpha: f64,
}

impl Default for FanoutRule {
    fn default() -> Self {
        Self {
            enabled: true,
            factor: 2.0,
            min_difference: 1.0,
            min_samples: 10,
            alpha: 0.01,
        }
    }
}

/// False-alarm control of a judge that looks every second, forever.
///
/// Each rule keeps an e-value (an always-valid measure of evidence) over an
/// epoch that starts when the candidate is first seen and restarts every
/// `epoch`. By Ville's inequality a rule fires falsely within one epoch with
/// probability at most its share of `alerts_per_series_hour * epoch / 1h`, so
/// over any stretch of time false alerts stay under `alerts_per_series_hour`
/// per judged series. The fixed-sample test of each rule (`alpha`) must
/// agree as well, which keeps small samples exact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SequentialPolicy {
    /// False alerts allowed per series and hour, over all rules.
    pub alerts_per_series_hour: f64,
    /// How long evidence accumulates before it restarts; at most
    /// `aggregate.baseline_horizon`.
    #[serde(with = "humantime_serde")]
    pub epoch: Duration,
    /// Scale of the effects the rank test's mixture expects: P(C > B) - 1/2
    /// around this size (0.1: a candidate slower in 60% of pairs).
    pub rank_effect_scale: f64,
}

impl Default for SequentialPolicy {
    fn default() -> Self {
        Self {
            alerts_per_series_hour: 0.01,
            epoch: Duration::from_secs(1800),
            rank_effect_scale: 0.1,
        }
    }
}

/// How conditions become alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertPolicy {
    /// A condition must hold this long before it fires (pending until then).
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
    /// A firing alert resolves only after its condition has been clear this
    /// long, so a flapping series does not page twice.
    #[serde(with = "humantime_serde")]
    pub resolve_hold: Duration,
    /// Hysteresis: a firing alert clears only when its effect falls below
    /// this fraction of the firing threshold (0.8: a 1.5x rule clears under
    /// 1.4x).
    pub clear_fraction: f64,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        Self {
            hold: Duration::from_secs(2),
            resolve_hold: Duration::from_secs(60),
            clear_fraction: 0.8,
        }
    }
}

/// Where the findings go besides the admin port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmitConfig {
    /// OTLP/gRPC endpoint for metrics push, e.g. `http://127.0.0.1:4317`;
    /// unset: no push (Prometheus scrape only).
    pub otlp_endpoint: Option<String>,
    /// How often metrics are pushed.
    #[serde(with = "humantime_serde")]
    pub otlp_interval: Duration,
    /// Upper bounds of the Prometheus latency histogram buckets, in
    /// milliseconds, ascending (OTLP uses an exponential histogram).
    pub histogram_buckets_ms: Vec<f64>,
}

impl Default for EmitConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_interval: Duration::from_secs(10),
            histogram_buckets_ms: vec![
                5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0, 750.0, 1000.0, 2500.0,
                5000.0, 10000.0,
            ],
        }
    }
}

/// The admin HTTP port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address of the dashboard (`/`), /metrics, /api/v1/*, /healthz
    /// and /readyz.
    pub listen: SocketAddr,
    /// Points kept per series for the dashboard's charts, one per
    /// `judge.evaluation_interval` (360 at 1s: the last six minutes), so a
    /// page opened late still shows how a version got where it is. Memory is
    /// about 60 bytes per point and series.
    pub history_points: usize,
    /// Series (service, endpoint, version) whose history is kept; series
    /// beyond it are left out of the charts and counted, so 100,000 series
    /// cannot turn the history into gigabytes.
    pub history_series: usize,
    /// Resolved regressions remembered, newest first, with the evidence they
    /// fired on.
    pub history_regressions: usize,
}

/// Snapshots of the collector's state (series windows, baselines, alert
/// states), so a restart in the middle of an incident keeps the alert firing
/// and the baseline known. See `crate::snapshot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Directory holding the snapshot file (`modelgate.snapshot`); created
    /// if missing. Unset (the default): no snapshots, every start is empty,
    /// as before snapshots existed; a data directory is a deployment
    /// decision (a volume that outlives the process), not something to
    /// guess.
    pub dir: Option<PathBuf>,
    /// How often the state is written while running (also once at a
    /// graceful shutdown). A crash loses at most this much of history;
    /// writing more often costs a serialization pass in the pipeline task.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            dir: None,
            interval: Duration::from_secs(5),
        }
    }
}

/// Shortest `snapshot.interval`: a write per 100 ms is already far more
/// than a restart needs.
pub const MIN_SNAPSHOT_INTERVAL: Duration = Duration::from_millis(100);

/// Most points per series `admin.history_points` may ask for.
pub const MAX_HISTORY_POINTS: usize = 100_000;

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            history_points: 360,
            history_series: 1000,
            history_regressions: 100,
        }
    }
}

/// How forwarded export requests travel to the downstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardProtocol {
    /// OTLP/gRPC (`TraceService/Export`, `LogsService/Export`).
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies (`/v1/traces`, `/v1/logs`).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Forwarding what was received, unchanged, to a downstream OTLP endpoint,
/// so modelgate can sit anywhere in a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// Downstream base URL, `http://host:port`; unset: nothing is forwarded.
    pub endpoint: Option<String>,
    /// OTLP/gRPC or OTLP/HTTP (`grpc` or `http/protobuf`).
    pub protocol: ForwardProtocol,
    /// Export requests waiting for the downstream (one more may be in
    /// flight); when full, senders get the retryable `UNAVAILABLE` / `503`
    /// instead of their data being dropped here.
    pub queue_items: usize,
    /// First wait before a retry; doubles up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest wait between two retries (unless the downstream asks for more).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// An export request still undelivered this long after its first attempt
    /// is dropped (and counted), so a dead downstream cannot pin the queue.
    #[serde(with = "humantime_serde")]
    pub max_elapsed: Duration,
    /// Deadline of one export call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// On shutdown, how long the queue may take to drain; what is left then
    /// is counted as dropped.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        // The retry figures are the OpenTelemetry Collector exporters'.
        Self {
            endpoint: None,
            protocol: ForwardProtocol::Grpc,
            queue_items: 1000,
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
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
            if !path.is_file() {
                return Err(invalid(
                    "--config",
                    format!("no such file: {}", path.display()),
                ));
            }
            figment = figment.merge(Yaml::file_exact(path));
        }
        // MODELGATE_CONFIG names the file and MODELGATE_LOG the log filter;
        // neither is a setting.
        let config: Config = figment.merge(env.ignore(&["config", "log"])).extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Parses YAML text on top of the defaults (no environment), checked.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Yaml::string(text))
            .extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.receiver;
        if r.max_message_bytes < 1024 {
            return Err(invalid(
                "receiver.max_message_bytes",
                "must be at least 1024",
            ));
        }
        if r.queue_batches == 0 {
            return Err(invalid("receiver.queue_batches", "must be at least 1"));
        }
        if self.extract.version_attributes.is_empty() {
            return Err(invalid(
                "extract.version_attributes",
                "must name at least one attribute",
            ));
        }
        // The wire reader gives each attribute key the rules read one bit.
        for (key, list, most) in [
            (
                "extract.version_attributes",
                &self.extract.version_attributes,
                MAX_VERSION_ATTRIBUTES,
            ),
            (
                "extract.dimensions",
                &self.extract.dimensions,
                MAX_DIMENSIONS,
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
        let logs = &self.extract.logs;
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
        let a = &self.aggregate;
        // Slots are whole milliseconds (the aggregator keys them by
        // `now_ms / slot_ms`); a shorter one would also divide by zero below.
        if a.slot < Duration::from_millis(1) {
            return Err(invalid("aggregate.slot", "must be at least 1ms"));
        }
        if a.window < a.slot {
            return Err(invalid(
                "aggregate.window",
                "must be at least aggregate.slot",
            ));
        }
        if a.baseline_horizon < a.window {
            return Err(invalid(
                "aggregate.baseline_horizon",
                "must be at least aggregate.window",
            ));
        }
        if a.baseline_horizon.as_millis() / a.slot.as_millis() > 10_000 {
            return Err(invalid(
                "aggregate.slot",
                "too small for aggregate.baseline_horizon (more than 10000 slots)",
            ));
        }
        if a.series_idle_timeout < a.baseline_horizon {
            return Err(invalid(
                "aggregate.series_idle_timeout",
                "must be at least aggregate.baseline_horizon",
            ));
        }
        if a.max_series == 0 {
            return Err(invalid("aggregate.max_series", "must be at least 1"));
        }
        let j = &self.judge;
        if j.evaluation_interval < Duration::from_millis(10) {
            return Err(invalid(
                "judge.evaluation_interval",
                "must be at least 10ms",
            ));
        }
        check_quantile("judge.sla.quantile", j.sla.quantile)?;
        check_quantile("judge.relative.quantile", j.relative.quantile)?;
        check_alpha("judge.sla.alpha", j.sla.alpha)?;
        check_alpha("judge.relative.alpha", j.relative.alpha)?;
        check_alpha("judge.errors.alpha", j.errors.alpha)?;
        check_alpha("judge.fanout.alpha", j.fanout.alpha)?;
        if !(j.fanout.factor > 1.0 && j.fanout.factor.is_finite()) {
            return Err(invalid("judge.fanout.factor", "must be a number above 1"));
        }
        if !(j.fanout.min_difference >= 0.0 && j.fanout.min_difference.is_finite()) {
            return Err(invalid("judge.fanout.min_difference", "must be 0 or more"));
        }
        let q = &j.sequential;
        if !(q.alerts_per_series_hour > 0.0 && q.alerts_per_series_hour < 1.0) {
            return Err(invalid(
                "judge.sequential.alerts_per_series_hour",
                "must be between 0 and 1",
            ));
        }
        if q.epoch < a.window || q.epoch > a.baseline_horizon {
            return Err(invalid(
                "judge.sequential.epoch",
                "must be between aggregate.window and aggregate.baseline_horizon",
            ));
        }
        if !(q.rank_effect_scale > 0.0 && q.rank_effect_scale <= 0.5) {
            return Err(invalid(
                "judge.sequential.rank_effect_scale",
                "must be in (0, 0.5]",
            ));
        }
        if j.sla.limit.is_zero() {
            return Err(invalid("judge.sla.limit", "must be more than 0s"));
        }
        if !(j.relative.factor > 1.0 && j.relative.factor.is_finite()) {
            return Err(invalid("judge.relative.factor", "must be a number above 1"));
        }
        if !(j.errors.margin > 0.0 && j.errors.margin < 1.0) {
            return Err(invalid("judge.errors.margin", "must be between 0 and 1"));
        }
        for (key, n) in [
            ("judge.sla.min_samples", j.sla.min_samples),
            ("judge.relative.min_samples", j.relative.min_samples),
            ("judge.errors.min_samples", j.errors.min_samples),
            ("judge.fanout.min_samples", j.fanout.min_samples),
        ] {
            if n == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if !(j.alerts.clear_fraction > 0.0 && j.alerts.clear_fraction <= 1.0) {
            return Err(invalid("judge.alerts.clear_fraction", "must be in (0, 1]"));
        }
        for (i, b) in j.baselines.iter().enumerate() {
            if b.service.is_empty() || b.version.is_empty() {
                return Err(invalid(
                    &format!("judge.baselines[{i}]"),
                    "service and version must not be empty",
                ));
            }
        }
        let buckets = &self.emit.histogram_buckets_ms;
        if buckets.is_empty()
            || buckets.iter().any(|b| !(b.is_finite() && *b > 0.0))
            || buckets.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(invalid(
                "emit.histogram_buckets_ms",
                "must be positive, finite and strictly ascending",
            ));
        }
        if self.emit.otlp_interval < Duration::from_millis(100) {
            return Err(invalid("emit.otlp_interval", "must be at least 100ms"));
        }
        let h = &self.admin;
        if !(2..=MAX_HISTORY_POINTS).contains(&h.history_points) {
            return Err(invalid(
                "admin.history_points",
                format!(
                    "must be between 2 and {MAX_HISTORY_POINTS} (a chart needs two points), got {}",
                    h.history_points
                ),
            ));
        }
        if h.history_series == 0 {
            return Err(invalid("admin.history_series", "must be at least 1"));
        }
        if h.history_regressions == 0 {
            return Err(invalid("admin.history_regressions", "must be at least 1"));
        }
        let snap = &self.snapshot;
        if snap.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(invalid(
                "snapshot.dir",
                "must name a directory (leave it unset to disable snapshots)",
            ));
        }
        if snap.interval < MIN_SNAPSHOT_INTERVAL {
            return Err(invalid(
                "snapshot.interval",
                format!(
                    "must be at least {}, got {}",
                    humantime::format_duration(MIN_SNAPSHOT_INTERVAL),
                    humantime::format_duration(snap.interval)
                ),
            ));
        }
        match (&self.auth.token, &self.auth.token_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "auth",
                    "set either auth.token or auth.token_file, not both",
                ))
            }
            (Some(t), None) if t.0.trim().is_empty() => {
                return Err(invalid("auth.token", "must not be empty"))
            }
            _ => {}
        }
        self.forward.validate()
    }
}

impl ForwardConfig {
    /// The `forward` section's checks; see [`Config::validate`].
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.endpoint {
            let uri: Result<axum::http::Uri, _> = endpoint.parse();
            match uri {
                Ok(uri)
                    if uri.scheme_str() == Some("http")
                        && uri.host().is_some_and(|h| !h.is_empty())
                        && uri.path_and_query().is_none_or(|p| p.as_str() == "/") => {}
                _ => {
                    return Err(invalid(
                        "forward.endpoint",
                        format!("must be http://host:port, got {endpoint:?}"),
                    ))
                }
            }
        }
        if self.queue_items == 0 {
            return Err(invalid("forward.queue_items", "must be at least 1"));
        }
        for (key, d) in [
            ("forward.initial_backoff", self.initial_backoff),
            ("forward.timeout", self.timeout),
        ] {
            if d < Duration::from_millis(1) {
                return Err(invalid(key, "must be at least 1ms"));
            }
        }
        if self.max_backoff < self.initial_backoff {
            return Err(invalid(
                "forward.max_backoff",
                "must be at least forward.initial_backoff",
            ));
        }
        if self.max_elapsed < self.initial_backoff {
            return Err(invalid(
                "forward.max_elapsed",
                "must be at least forward.initial_backoff",
            ));
        }
        Ok(())
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

fn check_quantile(key: &str, q: f64) -> Result<(), ConfigError> {
    if q > 0.0 && q < 1.0 {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be between 0 and 1 (exclusive), got {q}"),
        ))
    }
}

fn check_alpha(key: &str, alpha: f64) -> Result<(), ConfigError> {
    if alpha > 0.0 && alpha < 0.5 {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be between 0 and 0.5, got {alpha}"),
        ))
    }
}

#[cfg(test)]
mod tests {
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
    fn printed_config_parses_back() {
        let config = Config::default();
        assert_eq!(Config::from_yaml(&config.to_yaml()).unwrap(), config);
    }
}
