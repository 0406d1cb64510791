//! One decision per proxy: the poll of the collector and the rollback
//! decision every worker (VM) of the proxy shares through proxy-wasm shared
//! data.
//!
//! At each tick a worker reads the shared [`Record`] (one small key) and
//! follows its decision, so every worker switches within one tick of the
//! decision. One worker at a time holds the poll (a lease in the record,
//! taken with compare-and-swap when it lapses), polls with `If-None-Match`
//! (a quiet collector answers `304` with no body), and writes what the
//! answer decided back. A rebuilt VM reads the decision at `on_configure`,
//! before its first request.
//!
//! It must never lose or invent a decision: a failed, late or unreadable
//! poll keeps it (and is counted), a write that lost a race is dropped (the
//! winner decides), and a host without shared data (any status but Ok,
//! NotFound or CasMismatch) makes this worker poll and decide alone, as a
//! proxy with one worker does.

use crate::abi::{self, BufferType, LogLevel, MapType, Status};
use crate::config::{Config, Secret};
use crate::rollback::{Policy, Record, Transition};
use crate::root::{log, Counters};
use crate::stats::{sanitize_version, FilterCounter};
use crate::verdict::{self, Question, Verdict};

/// What a poll answer said.
enum Answer {
    /// `304 Not Modified`: the last answer's verdict again.
    Unchanged(Verdict),
    /// A full answer: its verdict and `ETag`.
    Fresh(Verdict, Option<Vec<u8>>),
}

/// The poll in flight.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    token: u32,
    started: u64,
    question: Question,
}

/// Where the decision lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// In the host's shared data, for every worker of the proxy.
    Proxy,
    /// In this worker only: the host has no shared data.
    Worker,
}

/// The poll and the decision, as one worker sees them.
#[derive(Debug)]
pub struct Poll {
    /// This worker's id in the record's lease (never 0).
    worker: u64,
    /// The shared-data key of the decision.
    key: String,
    scope: Scope,
    /// The record as last read or written.
    record: Record,
    in_flight: Option<InFlight>,
    next_poll: u64,
}

impl Poll {
    /// A poll for worker `worker` (a random id); idle until configured.
    pub fn new(worker: u64) -> Self {
        Self {
            worker: worker.max(1),
            key: String::new(),
            scope: Scope::Proxy,
            record: Record::default(),
            in_flight: None,
            next_poll: 0,
        }
    }

    /// The shared-data key of a configuration's decision: per service,
    /// candidate and epoch, in characters every host takes in a key
    /// (ngx_wasm_module reads `/` as a namespace).
    pub fn key(config: &Config) -> String {
        format!(
            "modelgate.rollback.{}.{}.{}",
            sanitize_version(&config.service_name),
            sanitize_version(config.candidate_version.as_deref().unwrap_or_default()),
            config.rollback_epoch
        )
    }

    /// Starts over for a (new) configuration, and follows the proxy's
    /// decision at once (a rebuilt VM must not route by a stale one).
    /// Without `rollback` it stays idle: the candidate is never rolled back.
    pub fn configure(&mut self, config: &Config, now: u64) {
        *self = Self::new(self.worker);
        if config.rollback {
            self.key = Self::key(config);
            self.follow(config, now);
        }
    }

    /// Whether the candidate is rolled back now.
    pub fn rolled_back(&self) -> bool {
        self.record.rolled_back
    }

    /// Whether `token` is the poll in flight.
    pub fn owns(&self, token: u32) -> bool {
        self.in_flight.is_some_and(|f| f.token == token)
    }

    /// The tick: follow the proxy's decision, give up on a poll never
    /// answered, and poll when due (if this worker holds the poll).
    pub fn tick(&mut self, config: &Config, token: Option<&Secret>, now: u64, counters: &Counters) {
        self.follow(config, now);
        let deadline = config.poll_timeout_ms.saturating_mul(2_000_000);
        if let Some(f) = self.in_flight {
            if now.saturating_sub(f.started) >= deadline {
                self.in_flight = None;
                failed("poll never answered", counters);
            }
        }
        let polls_here = self.scope == Scope::Worker || self.record.polled_by(self.worker, now);
        if self.in_flight.is_none() && now >= self.next_poll && polls_here {
            self.next_poll = now.saturating_add(config.poll_interval_ms.saturating_mul(1_000_000));
            self.start(config, token, now, counters);
        }
    }

    /// The lease: long enough for a poll interval and a poll given up on,
    /// twice, so a live poller never loses it between two renewals.
    fn lease(config: &Config) -> u64 {
        config
            .poll_interval_ms
            .saturating_add(config.poll_timeout_ms.saturating_mul(2))
            .saturating_mul(2_000_000)
    }

    /// Reads the shared record, follows its decision, and takes (or renews)
    /// the poll when it lapses (or half of it has passed).
    fn follow(&mut self, config: &Config, now: u64) {
        if self.scope == Scope::Worker {
            return;
        }
        let Some((record, cas)) = self.read() else {
            return;
        };
        self.adopt(record, config);
        let lease = Self::lease(config);
        let renew = self.record.poller == self.worker
            && self.record.lease_until.saturating_sub(now) < lease / 2;
        if renew || self.record.lease_free(now) {
            let mut taken = self.record.clone();
            taken.poller = self.worker;
            taken.lease_until = now.saturating_add(lease);
            self.write(taken, cas);
        }
    }

    /// The shared record and its compare-and-swap token; `None` (and this
    /// worker decides alone from now on) when the host has no shared data.
    /// A record it cannot read (another filter version's) decides nothing:
    /// this worker keeps its own decision and takes the poll over, so the
    /// record is rewritten in its format.
    fn read(&mut self) -> Option<(Record, u32)> {
        match abi::get_shared_data(&self.key) {
            Ok(Some((bytes, cas))) => {
                let unreadable = || Record {
                    poller: 0,
                    lease_until: 0,
                    ..self.record.clone()
                };
                Some((Record::decode(&bytes).unwrap_or_else(unreadable), cas))
            }
            Ok(None) => Some((Record::default(), 0)),
            Err(status) => {
                self.alone(status);
                None
            }
        }
    }

    /// Writes `record` if nobody wrote since `cas` and keeps it; `false`
    /// when another worker wrote first (its write stands). A host without
    /// shared data keeps it for this worker alone.
    fn write(&mut self, record: Record, cas: u32) -> bool {
        match abi::set_shared_data(&self.key, record.encode().as_bytes(), cas) {
            Ok(()) => {}
            Err(Status::CasMismatch) => return false,
            Err(status) => self.alone(status),
        }
        self.record = record;
        true
    }

    /// Follows a record another worker wrote.
    fn adopt(&mut self, record: Record, config: &Config) {
        if record.rolled_back != self.record.rolled_back {
            let candidate = config.candidate_version.as_deref().unwrap_or_default();
            let state = if record.rolled_back {
                "rolled back"
            } else {
                "resumed"
            };
            log(
                LogLevel::Info,
                &format!("following the proxy's decision: {candidate} {state}"),
            );
        }
        self.record = record;
    }

    fn alone(&mut self, status: Status) {
        if self.scope == Scope::Proxy {
            self.scope = Scope::Worker;
            log(
                LogLevel::Warn,
                &format!(
                    "shared data unavailable ({status:?}): this worker polls and decides alone"
                ),
            );
        }
    }

    fn start(&mut self, config: &Config, token: Option<&Secret>, now: u64, counters: &Counters) {
        let Some(cluster) = &config.query_cluster else {
            return;
        };
        let candidate = config.candidate_version.as_deref().unwrap_or_default();
        let question = Question::when(self.record.rolled_back);
        let path = verdict::path(
            question,
            &config.service_name,
            candidate,
            config.rollback_on,
        );
        let bearer = token.map(|t| format!("Bearer {}", t.expose()));
        let mut headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", config.query_authority.as_str()),
            ("accept", "application/json"),
        ];
        if !self.record.etag.is_empty() && self.record.last.is_some() {
            headers.push(("if-none-match", self.record.etag.as_str()));
        }
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer));
        }
        let timeout = u32::try_from(config.poll_timeout_ms).unwrap_or(u32::MAX);
        match abi::http_call(cluster, &headers, &[], timeout) {
            Ok(token) => {
                self.in_flight = Some(InFlight {
                    token,
                    started: now,
                    question,
                })
            }
            Err(status) => failed(
                &format!("poll dispatch to {cluster} refused: {status:?}"),
                counters,
            ),
        }
    }

    /// The answer to the poll (the caller checked [`Poll::owns`]).
    pub fn on_answer(&mut self, config: &Config, body_size: usize, counters: &Counters) {
        let Some(asked) = self.in_flight.take() else {
            return;
        };
        let Some(answer) = self.answer(asked.question, config, body_size, counters) else {
            return;
        };
        let Ok(now) = abi::now_nanos() else { return };
        let (mut record, cas) = match self.scope {
            Scope::Proxy => match self.read() {
                Some(read) => read,
                None => (self.record.clone(), 0),
            },
            Scope::Worker => (self.record.clone(), 0),
        };
        let stale = Question::when(record.rolled_back) != asked.question;
        if stale || (self.scope == Scope::Proxy && record.poller != self.worker) {
            log(
                LogLevel::Debug,
                "another worker took the poll over; this answer is dropped",
            );
            return;
        }
        let verdict = match answer {
            Answer::Unchanged(verdict) => verdict,
            Answer::Fresh(verdict, etag) => {
                record.answered(verdict, etag.as_deref());
                verdict
            }
        };
        let policy = Policy {
            auto_resume: config.auto_resume,
            resume_after_nanos: config.resume_after_ms.saturating_mul(1_000_000),
        };
        let transition = record.observe(verdict, now, policy);
        record.lease_until = now.saturating_add(Self::lease(config));
        if self.write_decided(record, cas) {
            report(transition, config, counters);
        }
    }

    /// Keeps what an answer decided: in shared data (unless another worker
    /// wrote first), or for this worker alone.
    fn write_decided(&mut self, record: Record, cas: u32) -> bool {
        match self.scope {
            Scope::Proxy => self.write(record, cas),
            Scope::Worker => {
                self.record = record;
                true
            }
        }
    }

    /// What the answer says; `None` when the poll failed (counted).
    fn answer(
        &self,
        question: Question,
        config: &Config,
        body_size: usize,
        counters: &Counters,
    ) -> Option<Answer> {
        let status = abi::get_header(MapType::HttpCallResponseHeaders, ":status");
        match status.as_ref().map(|s| s.as_deref()) {
            Ok(Some(b"304")) => {
                let Some(last) = self.record.last else {
                    failed("poll answered 304 to no earlier answer", counters);
                    return None;
                };
                return Some(Answer::Unchanged(last));
            }
            Ok(Some(b"200")) => {}
            _ => {
                let shown = match status {
                    Ok(Some(s)) => String::from_utf8_lossy(&s).chars().take(16).collect(),
                    Ok(None) => "no status (call failed)".to_owned(),
                    Err(e) => format!("{e:?}"),
                };
                failed(&format!("poll answered {shown}"), counters);
                return None;
            }
        }
        if body_size > verdict::MAX_BODY_BYTES {
            failed("poll answer too large", counters);
            return None;
        }
        let body = match abi::get_buffer(BufferType::HttpCallResponseBody, body_size) {
            Ok(body) => body.unwrap_or_default(),
            Err(status) => {
                failed(
                    &format!("cannot read the poll answer: {status:?}"),
                    counters,
                );
                return None;
            }
        };
        let candidate = config.candidate_version.as_deref().unwrap_or_default();
        match verdict::read(
            question,
            &body,
            &config.service_name,
            candidate,
            config.rollback_on,
        ) {
            Ok(verdict) => {
                let etag = abi::get_header(MapType::HttpCallResponseHeaders, "etag")
                    .ok()
                    .flatten();
                Some(Answer::Fresh(verdict, etag))
            }
            Err(error) => {
                failed(&format!("poll answer unreadable: {error}"), counters);
                None
            }
        }
    }
}

fn failed(why: &str, counters: &Counters) {
    log(
        LogLevel::Warn,
        &format!("{why}; keeping the current routing"),
    );
    counters.count(FilterCounter::PollFailed, 1);
}

fn report(transition: Option<Transition>, config: &Config, counters: &Counters) {
    let candidate = config.candidate_version.as_deref().unwrap_or_default();
    match transition {
        Some(Transition::RolledBack) => {
            log(
                LogLevel::Warn,
                &format!(
                    "rollback: {candidate} regressed; new unversioned traffic goes to {}",
                    config.baseline_version
                ),
            );
            counters.count(FilterCounter::Rollbacks, 1);
        }
        Some(Transition::Resumed) => {
            log(
                LogLevel::Info,
                &format!("resume: {candidate} passed; it gets its share again"),
            );
            counters.count(FilterCounter::Resumes, 1);
        }
        None => {}
    }
}
