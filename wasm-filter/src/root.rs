//! The plugin's root context: configuration, the timer, the export calls to
//! the collector and the regression poll. One per plugin configuration.
//!
//! It must never block or fail a request: every host error is logged or
//! counted and the plugin carries on with its last good decision. It holds
//! no unbounded state (see `export::Outbox`).

use crate::abi::{self, BufferType, LogLevel, MapType, MetricType};
use crate::config::{Config, MAX_CONFIG_BYTES};
use crate::export::{self, Outbox, Settled};
use crate::rollback::{self, Rollback, Transition};
use crate::stamp::{Choice, Ids};
use crate::stats::{FilterCounter, MetricKind, VersionStats};

/// gRPC service of the OTLP trace export.
const EXPORT_SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
/// gRPC method of the OTLP trace export.
const EXPORT_METHOD: &str = "Export";

/// Characters escaped in the `service` query parameter: all but RFC 3986
/// unreserved ones.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Logs a line prefixed with the plugin's name.
pub(crate) fn log(level: LogLevel, message: &str) {
    abi::log(level, &format!("modelgate: {message}"));
}

/// State of one configured plugin.
#[derive(Debug)]
pub struct Root {
    /// `None` until a configuration was accepted: requests pass untouched.
    config: Option<Config>,
    ids: Ids,
    stats: VersionStats,
    counters: [Option<u32>; FilterCounter::ALL.len()],
    outbox: Outbox,
    rollback: Rollback,
    poll: Option<(u32, u64)>,
    next_export: u64,
    next_poll: u64,
}

impl Root {
    /// A root waiting for its configuration; `seed` seeds its id generator.
    pub fn new(seed: u64) -> Self {
        Self {
            config: None,
            ids: Ids::new(seed),
            stats: VersionStats::new("modelgate", 0),
            counters: [None; FilterCounter::ALL.len()],
            outbox: Outbox::new(1, 1, 0),
            rollback: Rollback::new(false, false, 0),
            poll: None,
            next_export: 0,
            next_poll: 0,
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
        self.rollback.rolled_back()
    }

    /// The version an unversioned request is stamped with.
    pub fn version_for(&self, choice: Choice) -> Option<&str> {
        let config = self.config.as_ref()?;
        Some(match (choice, &config.candidate_version) {
            (Choice::Candidate, Some(candidate)) => candidate,
            _ => &config.baseline_version,
        })
    }

    /// `proxy_on_configure`: reads, validates and applies the configuration;
    /// `false` refuses the plugin (with a log line naming the field).
    pub fn on_configure(&mut self, size: usize) -> bool {
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
                return false;
            }
        };
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(error) => {
                log(LogLevel::Error, &error.to_string());
                return false;
            }
        };
        self.stats = VersionStats::new(&config.stats_prefix, config.max_versions);
        for (slot, counter) in self.counters.iter_mut().zip(FilterCounter::ALL) {
            let name = format!("{}.filter.{}", config.stats_prefix, counter.suffix());
            *slot = abi::define_metric(MetricType::Counter, &name).ok();
        }
        self.outbox = Outbox::new(
            config.export_buffer_max,
            config.export_batch_max,
            config.export_max_retries,
        );
        self.rollback = Rollback::new(config.rollback, config.auto_resume, config.resume_after_ms);
        self.poll = None;
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
        log(
            LogLevel::Info,
            &format!(
                "configured: service {}, baseline {}, candidate {}, canary {}%, rollback {}",
                config.service_name,
                config.baseline_version,
                config.candidate_version.as_deref().unwrap_or("-"),
                config.canary_percent,
                config.rollback
            ),
        );
        self.config = Some(config);
        true
    }

    /// Adds to one of the filter's own counters (if the host defined it).
    pub fn count(&self, counter: FilterCounter, n: usize) {
        let slot = FilterCounter::ALL.iter().position(|c| *c == counter);
        if let Some(Some(id)) = slot.and_then(|i| self.counters.get(i)) {
            let _ = abi::increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX));
        }
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
        let export_interval = config.export_interval_ms.saturating_mul(1_000_000);
        let export_deadline = config.export_timeout_ms.saturating_mul(2_000_000);
        let poll_interval = config.poll_interval_ms.saturating_mul(1_000_000);
        let poll_deadline = config.poll_timeout_ms.saturating_mul(2_000_000);
        let exporting = config.collector_cluster.is_some();
        let polling = config.rollback;

        if exporting {
            if let Some(settled) = self.outbox.expire(now, export_deadline) {
                log(
                    LogLevel::Warn,
                    "export call never answered; counted as failed",
                );
                self.settled(settled);
            }
            if now >= self.next_export {
                self.next_export = now.saturating_add(export_interval);
                self.export(now);
            }
        }
        if polling {
            if let Some((_, started)) = self.poll {
                if now.saturating_sub(started) >= poll_deadline {
                    self.poll = None;
                    self.poll_failed("poll never answered");
                }
            }
            if self.poll.is_none() && now >= self.next_poll {
                self.next_poll = now.saturating_add(poll_interval);
                self.start_poll(now);
            }
        }
    }

    fn export(&mut self, now: u64) {
        let Some(config) = &self.config else { return };
        let Some(cluster) = config.collector_cluster.clone() else {
            return;
        };
        let Some(spans) = self.outbox.take_batch() else {
            return;
        };
        let payload = export::encode(&config.service_name, &spans);
        let timeout = u32::try_from(config.export_timeout_ms).unwrap_or(u32::MAX);
        match abi::grpc_call(&cluster, EXPORT_SERVICE, EXPORT_METHOD, &payload, timeout) {
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
        let settled = self.outbox.settle(token, status == 0);
        if status != 0 && settled != Settled::Unknown {
            log(
                LogLevel::Warn,
                &format!("export failed with gRPC status {status}"),
            );
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

    fn start_poll(&mut self, now: u64) {
        let Some(config) = &self.config else { return };
        let Some(cluster) = &config.query_cluster else {
            return;
        };
        let path = format!(
            "/api/v1/regressions?service={}",
            percent_encoding::utf8_percent_encode(&config.service_name, QUERY_VALUE)
        );
        let headers = [
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", config.query_authority.as_str()),
            ("accept", "application/json"),
        ];
        let timeout = u32::try_from(config.poll_timeout_ms).unwrap_or(u32::MAX);
        match abi::http_call(cluster, &headers, timeout) {
            Ok(token) => self.poll = Some((token, now)),
            Err(status) => {
                self.poll_failed(&format!("poll dispatch to {cluster} refused: {status:?}"))
            }
        }
    }

    fn poll_failed(&self, why: &str) {
        log(
            LogLevel::Warn,
            &format!("{why}; keeping the current routing"),
        );
        self.count(FilterCounter::PollFailed, 1);
    }

    /// The answer to a dispatched HTTP call (the poll).
    pub fn on_http_call_response(&mut self, token: u32, body_size: usize) {
        match self.poll {
            Some((t, _)) if t == token => self.poll = None,
            _ => return,
        }
        let status = abi::get_header(MapType::HttpCallResponseHeaders, ":status");
        if !matches!(&status, Ok(Some(s)) if s.as_slice() == b"200") {
            let shown = match status {
                Ok(Some(s)) => String::from_utf8_lossy(&s).chars().take(16).collect(),
                Ok(None) => "no status (call failed)".to_owned(),
                Err(e) => format!("{e:?}"),
            };
            self.poll_failed(&format!("poll answered {shown}"));
            return;
        }
        if body_size > rollback::MAX_BODY_BYTES {
            self.poll_failed("poll answer too large");
            return;
        }
        let body = match abi::get_buffer(BufferType::HttpCallResponseBody, body_size) {
            Ok(body) => body.unwrap_or_default(),
            Err(status) => {
                self.poll_failed(&format!("cannot read the poll answer: {status:?}"));
                return;
            }
        };
        let Some(config) = &self.config else { return };
        let Some(candidate) = &config.candidate_version else {
            return;
        };
        let firing = match rollback::candidate_firing(&body, &config.service_name, candidate) {
            Ok(firing) => firing,
            Err(error) => {
                self.poll_failed(&format!("poll answer unreadable: {error}"));
                return;
            }
        };
        let Ok(now) = abi::now_nanos() else { return };
        let candidate = candidate.clone();
        let baseline = config.baseline_version.clone();
        match self.rollback.observe(firing, now) {
            Some(Transition::RolledBack) => {
                log(
                    LogLevel::Warn,
                    &format!("rollback: {candidate} regressed; new unversioned traffic goes to {baseline}"),
                );
                self.count(FilterCounter::Rollbacks, 1);
            }
            Some(Transition::Resumed) => {
                log(
                    LogLevel::Info,
                    &format!("resume: {candidate} cleared; it gets its share again"),
                );
                self.count(FilterCounter::Resumes, 1);
            }
            None => {}
        }
    }
}
