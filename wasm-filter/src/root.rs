//! The plugin's root context: configuration, the timer, the export calls to
//! the collector (OTLP/gRPC or OTLP/HTTP), and the poll (see `poll`). One
//! per plugin configuration and worker.
//!
//! It must never block or fail a request: every host error is logged or
//! counted and the plugin carries on with its last good decision. It holds
//! no unbounded state (see `export::Outbox`), and it never logs the token.

use crate::abi::{self, BufferType, LogLevel, MapType, MetricType, Status};
use crate::config::{Config, ExportProtocol, Secret, MAX_CONFIG_BYTES};
use crate::export::{self, Outbox, Settled};
use crate::gzip;
use crate::poll::Poll;
use crate::stamp::{Choice, Ids};
use crate::stats::{FilterCounter, MetricKind, VersionStats};

/// gRPC service of the OTLP trace export.
const EXPORT_SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
/// gRPC method of the OTLP trace export.
const EXPORT_METHOD: &str = "Export";
/// Path of the OTLP/HTTP trace export.
const EXPORT_PATH: &str = "/v1/traces";

/// Logs a line prefixed with the plugin's name.
pub(crate) fn log(level: LogLevel, message: &str) {
    abi::log(level, &format!("modelgate: {message}"));
}

/// The filter's own counters, as the host defined them.
#[derive(Debug, Default)]
pub struct Counters {
    ids: [Option<u32>; FilterCounter::ALL.len()],
}

impl Counters {
    /// Defines `<prefix>.filter.<name>` for each counter; one the host
    /// refuses is not counted.
    fn define(prefix: &str) -> Self {
        let mut counters = Self::default();
        for (slot, counter) in counters.ids.iter_mut().zip(FilterCounter::ALL) {
            let name = format!("{prefix}.filter.{}", counter.suffix());
            *slot = abi::define_metric(MetricType::Counter, &name).ok();
        }
        counters
    }

    /// Adds `n` to a counter (if the host defined it).
    pub fn count(&self, counter: FilterCounter, n: usize) {
        let slot = FilterCounter::ALL.iter().position(|c| *c == counter);
        if let Some(Some(id)) = slot.and_then(|i| self.ids.get(i)) {
            let _ = abi::increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// State of one configured plugin.
#[derive(Debug)]
pub struct Root {
    /// `None` until a configuration was accepted: requests pass untouched.
    config: Option<Config>,
    /// The bearer token for the collector, if configured.
    token: Option<Secret>,
    ids: Ids,
    stats: VersionStats,
    counters: Counters,
    outbox: Outbox,
    poll: Poll,
    next_export: u64,
}

impl Root {
    /// A root waiting for its configuration; `seed` seeds its id generator.
    pub fn new(seed: u64) -> Self {
        let mut ids = Ids::new(seed);
        let worker = u64::from_be_bytes(ids.span_id());
        Self {
            config: None,
            token: None,
            ids,
            stats: VersionStats::new("modelgate", 0),
            counters: Counters::default(),
            outbox: Outbox::new(1, 1, 0),
            poll: Poll::new(worker),
            next_export: 0,
        }
    }

    /// The accepted configuration, if any.
    pub fn config(&self) -> Option<&Config> {
        self.config.as_ref()
    }

    /// The id generator.
    pub fn ids(&mut self) -> &mut Ids {
        &mut self.ids
    }

    /// Whether the candidate is rolled back now.
    pub fn rolled_back(&self) -> bool {
        self.poll.rolled_back()
    }

    /// The version an unversioned request is stamped with.
    pub fn version_for(&self, choice: Choice) -> Option<&str> {
        let config = self.config.as_ref()?;
        Some(match (choice, &config.candidate_version) {
            (Choice::Candidate, Some(candidate)) => candidate,
            _ => &config.baseline_version,
        })
    }

    /// Reads and validates the configuration and its token; `None` (logged,
    /// naming the field) when it is refused.
    fn read_configuration(size: usize) -> Option<(Config, Option<Secret>)> {
        let bytes = match abi::get_buffer(
            BufferType::PluginConfiguration,
            size.min(MAX_CONFIG_BYTES + 1),
        ) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("cannot read the configuration: host answered {status:?}"),
                );
                return None;
            }
        };
        let parsed = Config::parse(&bytes)
            .and_then(|config| Ok((config.bearer(|name| std::env::var(name).ok())?, config)));
        match parsed {
            Ok((token, config)) => Some((config, token)),
            Err(error) => {
                log(LogLevel::Error, &error.to_string());
                None
            }
        }
    }

    /// `proxy_on_configure`: reads, validates and applies the configuration;
    /// `false` refuses the plugin (with a log line naming the field).
    pub fn on_configure(&mut self, size: usize) -> bool {
        let Some((config, token)) = Self::read_configuration(size) else {
            return false;
        };
        self.stats = VersionStats::new(&config.stats_prefix, config.max_versions);
        self.counters = Counters::define(&config.stats_prefix);
        self.outbox = Outbox::new(
            config.export_buffer_max,
            config.export_batch_max,
            config.export_max_retries,
        );
        self.poll.configure(&config, abi::now_nanos().unwrap_or(0));
        let mut period = u64::MAX;
        if config.collector_cluster.is_some() {
            period = period.min(config.export_interval_ms);
        }
        if config.rollback {
            period = period.min(config.poll_interval_ms);
        }
        if period != u64::MAX {
            // Validated to at most one hour, so it fits.
            let period = u32::try_from(period).unwrap_or(u32::MAX);
            if let Err(status) = abi::set_tick_period(period) {
                log(
                    LogLevel::Warn,
                    &format!("cannot set the timer ({status:?}): no export, no poll"),
                );
            }
        }
        let bp = config.canary_basis_points();
        log(
            LogLevel::Info,
            &format!(
                "configured: service {}, baseline {}, candidate {}, canary {}.{:02}%, rollback {}{}",
                config.service_name,
                config.baseline_version,
                config.candidate_version.as_deref().unwrap_or("-"),
                bp / 100,
                bp % 100,
                config.rollback,
                if self.rolled_back() {
                    " (rolled back: the proxy's decision)"
                } else {
                    ""
                }
            ),
        );
        self.config = Some(config);
        self.token = token;
        true
    }

    /// Adds to one of the filter's own counters (if the host defined it).
    pub fn count(&self, counter: FilterCounter, n: usize) {
        self.counters.count(counter, n);
    }

    /// Records one request's count and latency under its version.
    pub fn record(&mut self, version: &str, duration_ms: Option<u64>) {
        let Some(ids) = self.stats.ids(version, |kind, name| {
            let kind = match kind {
                MetricKind::Counter => MetricType::Counter,
                MetricKind::Histogram => MetricType::Histogram,
            };
            abi::define_metric(kind, name)
        }) else {
            return;
        };
        let _ = abi::increment_metric(ids.requests, 1);
        if let Some(ms) = duration_ms {
            let _ = abi::record_metric(ids.duration_ms, ms);
        }
    }

    /// Buffers one finished request for export (when a collector is set).
    pub fn enqueue(&mut self, span: export::SpanRecord) {
        if self
            .config
            .as_ref()
            .is_some_and(|c| c.collector_cluster.is_some())
        {
            let dropped = self.outbox.push(span);
            if dropped > 0 {
                self.count(FilterCounter::SpansDropped, dropped);
            }
        }
    }

    /// `proxy_on_tick`: exports and polls when they are due. A late timer
    /// only makes them late; nothing piles up (one call of each in flight).
    pub fn on_tick(&mut self) {
        let Some(config) = &self.config else { return };
        let Ok(now) = abi::now_nanos() else { return };
        if config.collector_cluster.is_some() {
            let deadline = config.export_timeout_ms.saturating_mul(2_000_000);
            if let Some(settled) = self.outbox.expire(now, deadline) {
                log(
                    LogLevel::Warn,
                    "export call never answered; counted as failed",
                );
                self.settled(settled);
            }
            if now >= self.next_export {
                self.next_export =
                    now.saturating_add(config.export_interval_ms.saturating_mul(1_000_000));
                self.export(now);
            }
        }
        if let Some(config) = self.config.as_ref().filter(|c| c.rollback) {
            self.poll
                .tick(config, self.token.as_ref(), now, &self.counters);
        }
    }

    fn export(&mut self, now: u64) {
        let Some(config) = &self.config else { return };
        let Some(cluster) = &config.collector_cluster else {
            return;
        };
        let Some(spans) = self.outbox.take_batch() else {
            return;
        };
        let payload = export::encode(&config.service_name, &spans);
        match dispatch(config, cluster, self.token.as_ref(), payload) {
            Ok(token) => self.outbox.sent(spans, token, now),
            Err(status) => {
                log(
                    LogLevel::Warn,
                    &format!("export dispatch to {cluster} refused: {status:?}"),
                );
                let settled = self.outbox.not_sent(spans);
                self.settled(settled);
            }
        }
    }

    /// The answer to a dispatched gRPC call (status 0 is success).
    pub fn on_grpc_response(&mut self, token: u32, status: u32) {
        self.export_answered(token, status == 0, || format!("gRPC status {status}"));
    }

    fn export_answered(&mut self, token: u32, ok: bool, failure: impl FnOnce() -> String) {
        let settled = self.outbox.settle(token, ok);
        if !ok && settled != Settled::Unknown {
            log(LogLevel::Warn, &format!("export failed with {}", failure()));
        }
        self.settled(settled);
    }

    fn settled(&self, settled: Settled) {
        match settled {
            Settled::Exported(n) => self.count(FilterCounter::SpansExported, n),
            Settled::WillRetry => self.count(FilterCounter::ExportFailed, 1),
            Settled::Dropped(n) => {
                self.count(FilterCounter::ExportFailed, 1);
                self.count(FilterCounter::SpansDropped, n);
            }
            Settled::Unknown => {}
        }
    }

    /// The answer to a dispatched HTTP call: the poll's, or an OTLP/HTTP
    /// export's (accepted with any 2xx).
    pub fn on_http_call_response(&mut self, token: u32, body_size: usize) {
        let Some(config) = &self.config else { return };
        if self.poll.owns(token) {
            self.poll.on_answer(config, body_size, &self.counters);
            return;
        }
        let status = abi::get_header(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        let ok = status
            .as_deref()
            .is_some_and(|s| s.len() == 3 && s[0] == b'2');
        self.export_answered(token, ok, || match status {
            Some(s) => format!("HTTP status {}", String::from_utf8_lossy(&s)),
            None => "no HTTP answer (call failed)".to_owned(),
        });
    }
}

/// Sends one encoded batch to the collector; the answer arrives in
/// `proxy_on_grpc_receive`/`_close` or `proxy_on_http_call_response`.
fn dispatch(
    config: &Config,
    cluster: &str,
    token: Option<&Secret>,
    payload: Vec<u8>,
) -> Result<u32, Status> {
    let timeout = u32::try_from(config.export_timeout_ms).unwrap_or(u32::MAX);
    let bearer = token.map(|t| format!("Bearer {}", t.expose()));
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(6);
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    match config.export_protocol {
        ExportProtocol::Grpc => abi::grpc_call(
            cluster,
            (EXPORT_SERVICE, EXPORT_METHOD),
            &headers,
            &payload,
            timeout,
        ),
        ExportProtocol::Http => {
            let gzipped = config
                .export_gzip
                .then(|| gzip::if_it_pays(&payload))
                .flatten();
            headers.extend([
                (":method", "POST"),
                (":path", EXPORT_PATH),
                (":authority", config.collector_authority.as_str()),
                ("content-type", "application/x-protobuf"),
            ]);
            if gzipped.is_some() {
                headers.push(("content-encoding", "gzip"));
            }
            let body = gzipped.as_deref().unwrap_or(&payload);
            abi::http_call(cluster, &headers, body, timeout)
        }
    }
}
