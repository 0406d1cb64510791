//! Offline: records judged exactly as the live collector judges them, by
//! their own time (`modelgate analyze`).
//!
//! Samples go into the same [`Aggregator`] and [`Judge`] the pipeline task
//! runs. The clock is the records' own: "now" is the latest time seen so far
//! (the watermark), the judge evaluates each time the watermark enters a new
//! `judge.evaluation_interval`, and once more at the end. A record without a
//! time counts a millisecond after the one before it, so a log file without
//! times still says which version came first. Live, in one batch or here,
//! the same records give the same baselines and verdicts; a record older
//! than `aggregate.allowed_lateness` behind the watermark is left out and
//! counted, as it would be live.
//!
//! Memory is the aggregator's, as live: nothing is buffered here.

use std::sync::Arc;

use crate::aggregate::{Aggregator, InputLimits};
use crate::config::Config;
use crate::emit::views::{self, EndpointVersions, VerdictQuery, VerdictView};
use crate::extract::Sample;
use crate::judge::{AlertKey, AlertState, Judge, Severity};
use crate::telemetry::Telemetry;

/// An alert that fired while the records were replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    /// When, by the records' time (unix ms).
    pub time_ms: u64,
    /// Which alert.
    pub key: AlertKey,
    /// At which severity.
    pub severity: Severity,
    /// Its evidence then.
    pub detail: String,
}

/// What the records showed at their end.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The watermark: the latest record's time (unix ms).
    pub now_ms: u64,
    /// Every endpoint's versions, as `ListVersions` shows them.
    pub versions: Vec<EndpointVersions>,
    /// A verdict per (service, version) seen.
    pub verdicts: Vec<VerdictView>,
    /// Alerts that fired along the way, in order.
    pub fired: Vec<Fired>,
    /// Records left out: older than `aggregate.allowed_lateness` behind the
    /// watermark when read.
    pub late: u64,
}

/// The replay; see the module docs.
#[derive(Debug)]
pub struct Offline {
    aggregator: Aggregator,
    judge: Judge,
    telemetry: Arc<Telemetry>,
    interval_ms: u64,
    watermark: u64,
    /// The last time given to a record without one.
    untimed: u64,
    fired: Vec<Fired>,
}

impl Offline {
    /// An empty replay judging with `config`.
    pub fn new(config: &Config) -> Self {
        let telemetry = Arc::new(Telemetry::default());
        Self {
            aggregator: Aggregator::new(
                config.aggregate.clone(),
                config.emit.histogram_buckets_ms.clone(),
                telemetry.clone(),
                0,
            )
            .with_limits(InputLimits::of(&config.extract)),
            judge: Judge::new(config.judge.clone()),
            telemetry,
            interval_ms: (config.judge.evaluation_interval.as_millis() as u64).max(1),
            watermark: 0,
            untimed: 0,
            fired: Vec::new(),
        }
    }

    /// Records one record's samples (in the order read).
    pub fn add(&mut self, mut samples: Vec<Sample>) {
        let before = self.watermark;
        for s in &mut samples {
            if s.time_ms == 0 {
                self.untimed = self.untimed.max(self.watermark) + 1;
                s.time_ms = self.untimed;
            }
            self.watermark = self.watermark.max(s.time_ms);
        }
        if before > 0 && self.watermark / self.interval_ms > before / self.interval_ms {
            // The watermark entered a new interval: judge what came before,
            // as the live tick would have, then take the new records.
            self.evaluate(before);
        }
        self.aggregator.record(&samples, self.watermark);
    }

    fn evaluate(&mut self, now: u64) {
        self.aggregator.expire(now);
        for t in self.judge.evaluate(&self.aggregator, now) {
            if t.alert().state == AlertState::Firing {
                self.fired.push(Fired {
                    time_ms: now,
                    key: t.key.clone(),
                    severity: t.severity,
                    detail: t.judgement.result.evidence.detail.clone(),
                });
            }
        }
    }

    /// Judges once more at the watermark and reports.
    pub fn finish(mut self) -> Report {
        let now = self.watermark;
        self.evaluate(now);
        let versions = views::versions(&self.aggregator, &self.judge, "", "", now);
        let mut seen: Vec<(String, String)> = versions
            .iter()
            .flat_map(|e| {
                e.versions
                    .iter()
                    .map(|v| (e.key.service.clone(), v.version.clone()))
            })
            .collect();
        seen.sort();
        seen.dedup();
        let verdicts = seen
            .into_iter()
            .map(|(service, candidate)| {
                let query = VerdictQuery {
                    service,
                    candidate,
                    ..VerdictQuery::default()
                };
                views::verdict(&self.aggregator, &self.judge, &query, None, now)
            })
            .collect();
        let late = self
            .telemetry
            .readings()
            .iter()
            .filter(|r| r.label == Some(("reason", crate::telemetry::SampleDropped::Late.as_str())))
            .map(|r| r.value)
            .sum();
        Report {
            now_ms: now,
            versions,
            verdicts,
            fired: self.fired,
            late,
        }
    }
}
