//! Which services an evaluation judges: only those whose verdicts can have
//! changed since they were last judged.
//!
//! A service's verdicts are a function of its own series, the time and its
//! own alert states ([`Judge::evaluate_service`](super::Judge::evaluate_service)).
//! With no new sample they change only when time crosses one of these:
//!
//! - a slot boundary (`aggregate.slot`): windows, horizons and the history
//!   merging all move by whole slots, so every service is judged at the
//!   first tick of each slot (a sweep in service-name order);
//! - a timer of its own ([`Judge::wake_ms`](super::Judge::wake_ms)): an
//!   alert's hold or resolve hold, a version turning quiet
//!   (`no_traffic_resolve`), an evidence epoch ending, a promotion's
//!   `after`, a series' idle timeout.
//!
//! Between those, a service with no new sample would be judged to exactly
//! what it already holds. So each tick judges the services the aggregator
//! saw samples for ([`Aggregator::take_touched`](crate::aggregate::Aggregator::take_touched)),
//! those an operator acted on, those whose timer is due, and every service
//! when the slot changed; a judgement happens at the same tick a full
//! evaluation's would change it, so the verdicts are the same at every tick.
//!
//! Pure: time is a parameter, and a [`Round`] only names services; the
//! pipeline judges them in bounded slices between batches.

use std::collections::{BTreeSet, VecDeque};
use std::ops::Bound;

use hashbrown::{HashMap, HashSet};

use crate::aggregate::Aggregator;

/// When each service must be judged again at the latest, with no new
/// sample; see the module docs.
#[derive(Debug, Default)]
pub struct Schedule {
    /// Per service, its next timer (unix ms).
    wake: HashMap<String, u64>,
    /// The same, by time.
    timers: BTreeSet<(u64, String)>,
    /// The slot of the last round: a round in a new one sweeps every service.
    last_slot: Option<u64>,
}

/// The services one tick judges, handed out one at a time
/// ([`Round::next`]) so the work can be spread over many slices.
#[derive(Debug)]
pub struct Round {
    /// The time the round judges at.
    pub now_ms: u64,
    /// Named services (touched, acted on, due), each once, in name order.
    queue: VecDeque<String>,
    /// Those of `queue`, so the sweep does not judge them twice.
    named: HashSet<String>,
    /// Set while the round sweeps every service: the last it handed out
    /// (`None` before the first).
    sweep: Option<Option<String>>,
    /// Services handed out so far.
    handed: usize,
}

impl Schedule {
    /// An empty schedule: its first round sweeps every service.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the round at `now_ms`: `named` services (touched, acted on)
    /// and those whose timer is due; every service as well when the slot
    /// (`slot_ms`) changed since the last round, or when `everything`.
    pub fn begin(
        &mut self,
        named: impl IntoIterator<Item = String>,
        slot_ms: u64,
        everything: bool,
        now_ms: u64,
    ) -> Round {
        let slot = now_ms / slot_ms.max(1);
        let sweep = everything || self.last_slot != Some(slot);
        self.last_slot = Some(slot);
        let mut due = Vec::new();
        while let Some((at, _)) = self.timers.first() {
            if *at > now_ms {
                break;
            }
            if let Some((_, service)) = self.timers.pop_first() {
                self.wake.remove(&service);
                due.push(service);
            }
        }
        let mut services: Vec<String> = named.into_iter().chain(due).collect();
        services.sort_unstable();
        services.dedup();
        Round {
            now_ms,
            named: services.iter().cloned().collect(),
            queue: services.into(),
            sweep: sweep.then_some(None),
            handed: 0,
        }
    }

    /// Sets when `service` must be judged again with no new sample (`None`:
    /// only when it gets one, or at the next slot).
    pub fn set_wake(&mut self, service: &str, at: Option<u64>) {
        match (self.wake.get_mut(service), at) {
            (Some(old), Some(at)) if *old == at => {}
            (Some(old), Some(at)) => {
                self.timers.remove(&(*old, service.to_owned()));
                *old = at;
                self.timers.insert((at, service.to_owned()));
            }
            (Some(old), None) => {
                self.timers.remove(&(*old, service.to_owned()));
                self.wake.remove(service);
            }
            (None, Some(at)) => {
                self.wake.insert(service.to_owned(), at);
                self.timers.insert((at, service.to_owned()));
            }
            (None, None) => {}
        }
    }

    /// The next timer of `service`, if it has one.
    pub fn wake_of(&self, service: &str) -> Option<u64> {
        self.wake.get(service).copied()
    }

    /// Services with a timer.
    pub fn timers(&self) -> usize {
        self.wake.len()
    }
}

impl Round {
    /// The next service to judge: the named ones first, then (sweeping)
    /// every service of `agg` in name order, skipping those already named.
    /// A service `agg` gains during the sweep is judged when it comes up
    /// in name order or at the next round (it was touched).
    pub fn next(&mut self, agg: &Aggregator) -> Option<String> {
        if let Some(service) = self.queue.pop_front() {
            self.handed += 1;
            return Some(service);
        }
        let cursor = self.sweep.as_mut()?;
        let after = match cursor.as_deref() {
            Some(last) => Bound::Excluded(last),
            None => Bound::Unbounded,
        };
        let next = agg
            .services_from(after)
            .find(|s| !self.named.contains(*s))
            .map(str::to_owned);
        match &next {
            Some(service) => {
                *cursor = Some(service.clone());
                self.handed += 1;
            }
            None => self.sweep = None,
        }
        next
    }

    /// Services handed out so far.
    pub fn handed(&self) -> usize {
        self.handed
    }

    /// Whether it sweeps every service.
    pub fn sweeps(&self) -> bool {
        self.sweep.is_some()
    }
}
