//! The alert state machine: inactive -> pending -> firing -> resolved.
//!
//! Pure: each step takes the rule's condition and `now`. A condition must
//! hold for `hold` before it fires; a firing alert needs its condition clear
//! for `resolve_hold` before it resolves, and `Marginal` or `Inconclusive`
//! evaluations keep it firing. No traffic is no proof of a fix, but it is
//! no reason to keep paging either: a candidate with no request for
//! `no_traffic_resolve` (rolled back, drained) has its alerts resolved with
//! that reason ([`AlertMachine::quiet`]), while its last verdict stays.

use serde::{Deserialize, Serialize};

use crate::config::AlertPolicy;
use crate::judge::rules::Condition;

/// Where an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition does not hold.
    Inactive,
    /// The condition holds, not yet for the hold time.
    Pending,
    /// Paging.
    Firing,
    /// Was firing; cleared for the resolve hold time.
    Resolved,
}

impl AlertState {
    /// Lower-case name, for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// Why an alert resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// Its condition cleared for `resolve_hold`.
    Cleared,
    /// Its candidate had no traffic for `no_traffic_resolve`.
    NoTraffic,
    /// No longer judged: the series expired or the baseline changed.
    Retired,
}

impl Resolution {
    /// Lower-case name, for the API and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Resolution::Cleared => "cleared",
            Resolution::NoTraffic => "no_traffic",
            Resolution::Retired => "retired",
        }
    }
}

/// One alert's state over time.
///
/// Its times are unix milliseconds, so a machine restored from a snapshot
/// keeps its hold progress against the wall clock: a firing alert stays
/// firing, a pending one keeps the time it already waited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertMachine {
    /// Current state.
    pub state: AlertState,
    /// When `state` was entered (unix ms).
    pub since_ms: u64,
    /// Since when the condition has been clear while firing.
    clear_since_ms: Option<u64>,
    /// Times it has fired.
    pub firings: u64,
    /// Why it resolved, while `Resolved`.
    pub resolution: Option<Resolution>,
}

impl AlertMachine {
    /// A new, inactive alert.
    pub fn new(now_ms: u64) -> Self {
        Self {
            state: AlertState::Inactive,
            since_ms: now_ms,
            clear_since_ms: None,
            firings: 0,
            resolution: None,
        }
    }

    /// Advances by one evaluation; returns the previous state when it changed.
    pub fn step(
        &mut self,
        condition: Condition,
        now_ms: u64,
        policy: &AlertPolicy,
    ) -> Option<AlertState> {
        let hold_ms = policy.hold.as_millis() as u64;
        let resolve_ms = policy.resolve_hold.as_millis() as u64;
        let next = match (self.state, condition) {
            (AlertState::Inactive | AlertState::Resolved, Condition::Breach) => {
                if hold_ms == 0 {
                    AlertState::Firing
                } else {
                    AlertState::Pending
                }
            }
            (AlertState::Pending, Condition::Breach) if now_ms >= self.since_ms + hold_ms => {
                AlertState::Firing
            }
            (AlertState::Pending, Condition::Breach) => AlertState::Pending,
            (AlertState::Pending, _) => AlertState::Inactive,
            (AlertState::Firing, Condition::Clear) => {
                let clear_since = *self.clear_since_ms.get_or_insert(now_ms);
                if now_ms >= clear_since + resolve_ms {
                    AlertState::Resolved
                } else {
                    AlertState::Firing
                }
            }
            (AlertState::Firing, Condition::Breach | Condition::Marginal) => {
                self.clear_since_ms = None;
                AlertState::Firing
            }
            (state, _) => state,
        };
        self.transition(next, now_ms, Resolution::Cleared)
    }

    /// When it moves with no change of its condition: a pending alert
    /// fires at the end of its hold, a firing one whose condition is clear
    /// resolves at the end of the resolve hold. `None`: only a new
    /// condition (or no traffic, [`AlertMachine::quiet`]) moves it.
    pub fn wake_ms(&self, policy: &AlertPolicy) -> Option<u64> {
        match (self.state, self.clear_since_ms) {
            (AlertState::Pending, _) => {
                Some(self.since_ms.saturating_add(policy.hold.as_millis() as u64))
            }
            (AlertState::Firing, Some(clear)) => {
                Some(clear.saturating_add(policy.resolve_hold.as_millis() as u64))
            }
            _ => None,
        }
    }

    /// Forces a firing or pending alert down because its subject is gone
    /// (series expired, baseline replaced); returns the previous state.
    pub fn retire(&mut self, now_ms: u64) -> Option<AlertState> {
        self.stand_down(now_ms, Resolution::Retired)
    }

    /// The candidate has had no request since `last_seen_ms`: after
    /// `policy.no_traffic_resolve` of that, a firing alert resolves (reason
    /// [`Resolution::NoTraffic`]) and a pending one goes back to inactive.
    /// Returns the previous state when it changed.
    pub fn quiet(
        &mut self,
        last_seen_ms: u64,
        now_ms: u64,
        policy: &AlertPolicy,
    ) -> Option<AlertState> {
        let quiet_ms = policy.no_traffic_resolve.as_millis() as u64;
        if now_ms < last_seen_ms.saturating_add(quiet_ms) {
            return None;
        }
        self.stand_down(now_ms, Resolution::NoTraffic)
    }

    fn stand_down(&mut self, now_ms: u64, why: Resolution) -> Option<AlertState> {
        let next = match self.state {
            AlertState::Firing => AlertState::Resolved,
            AlertState::Pending => AlertState::Inactive,
            other => other,
        };
        self.transition(next, now_ms, why)
    }

    fn transition(&mut self, next: AlertState, now_ms: u64, why: Resolution) -> Option<AlertState> {
        if next == self.state {
            return None;
        }
        let previous = self.state;
        self.state = next;
        self.since_ms = now_ms;
        self.clear_since_ms = None;
        if next == AlertState::Firing {
            self.firings += 1;
        }
        self.resolution = (next == AlertState::Resolved).then_some(why);
        Some(previous)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> AlertPolicy {
        AlertPolicy {
            hold: Duration::from_secs(2),
            resolve_hold: Duration::from_secs(10),
            clear_fraction: 0.8,
            no_traffic_resolve: Duration::from_secs(60),
        }
    }

    #[test]
    fn breach_fires_after_the_hold_time() {
        let p = policy();
        let mut a = AlertMachine::new(0);
        assert_eq!(a.step(Condition::Breach, 0, &p), Some(AlertState::Inactive));
        assert_eq!(a.state, AlertState::Pending);
        assert_eq!(a.step(Condition::Breach, 1_000, &p), None);
        assert_eq!(
            a.step(Condition::Breach, 2_000, &p),
            Some(AlertState::Pending)
        );
        assert_eq!(a.state, AlertState::Firing);
        assert_eq!(a.firings, 1);
    }

    #[test]
    fn a_blip_never_fires() {
        let p = policy();
        let mut a = AlertMachine::new(0);
        a.step(Condition::Breach, 0, &p);
        a.step(Condition::Marginal, 1_000, &p);
        assert_eq!(a.state, AlertState::Inactive);
        a.step(Condition::Breach, 1_500, &p);
        a.step(Condition::Breach, 3_000, &p);
        assert_eq!(a.state, AlertState::Pending);
        assert_eq!(a.firings, 0);
    }

    #[test]
    fn resolution_needs_a_continuous_clear_stretch() {
        let p = policy();
        let mut a = AlertMachine::new(0);
        a.step(Condition::Breach, 0, &p);
        a.step(Condition::Breach, 2_000, &p);
        a.step(Condition::Clear, 3_000, &p);
        a.step(Condition::Marginal, 9_000, &p); // flaps back: timer restarts
        a.step(Condition::Clear, 10_000, &p);
        assert_eq!(a.step(Condition::Clear, 19_000, &p), None);
        assert_eq!(
            a.step(Condition::Clear, 20_000, &p),
            Some(AlertState::Firing)
        );
        assert_eq!(a.state, AlertState::Resolved);
    }

    #[test]
    fn no_traffic_keeps_a_firing_alert_firing() {
        let p = policy();
        let mut a = AlertMachine::new(0);
        a.step(Condition::Breach, 0, &p);
        a.step(Condition::Breach, 2_000, &p);
        for t in 3..100 {
            a.step(Condition::Inconclusive, t * 1_000, &p);
        }
        assert_eq!(a.state, AlertState::Firing);
        assert_eq!(a.retire(200_000), Some(AlertState::Firing));
        assert_eq!(a.state, AlertState::Resolved);
        assert_eq!(a.resolution, Some(Resolution::Retired));
    }

    #[test]
    fn a_candidate_without_traffic_stops_paging_with_the_reason() {
        let p = policy();
        let mut a = AlertMachine::new(0);
        a.step(Condition::Breach, 0, &p);
        a.step(Condition::Breach, 2_000, &p);
        // Last request at 5 s: quiet for 60 s resolves it, not before.
        assert_eq!(a.quiet(5_000, 64_999, &p), None);
        assert_eq!(a.state, AlertState::Firing);
        assert_eq!(a.quiet(5_000, 65_000, &p), Some(AlertState::Firing));
        assert_eq!(
            (a.state, a.resolution),
            (AlertState::Resolved, Some(Resolution::NoTraffic))
        );
        // Traffic comes back, still slow: it fires again.
        a.step(Condition::Breach, 70_000, &p);
        a.step(Condition::Breach, 72_000, &p);
        assert_eq!(
            (a.state, a.resolution, a.firings),
            (AlertState::Firing, None, 2)
        );
        a.step(Condition::Clear, 80_000, &p);
        a.step(Condition::Clear, 90_000, &p);
        assert_eq!(a.resolution, Some(Resolution::Cleared));
    }

    #[test]
    fn zero_hold_fires_at_once_and_refires_after_resolving() {
        let p = AlertPolicy {
            hold: Duration::ZERO,
            resolve_hold: Duration::ZERO,
            clear_fraction: 0.8,
            no_traffic_resolve: Duration::ZERO,
        };
        let mut a = AlertMachine::new(0);
        a.step(Condition::Breach, 0, &p);
        assert_eq!(a.state, AlertState::Firing);
        a.step(Condition::Clear, 1, &p);
        assert_eq!(a.state, AlertState::Resolved);
        a.step(Condition::Breach, 2, &p);
        assert_eq!((a.state, a.firings), (AlertState::Firing, 2));
    }
}
