//! The alert state machine: inactive -> pending -> firing -> resolved.
//!
//! Pure: each step takes the rule's condition and `now`. A condition must
//! hold for `hold` before it fires; a firing alert needs its condition clear
//! for `resolve_hold` before it resolves, and `Marginal` or `Inconclusive`
//! evaluations keep it firing (no traffic is no proof of a fix).

use serde::{Deserialize, Serialize};

use crate::config::AlertPolicy;
use crate::judge::rules::Condition;

/// Where an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
}

impl AlertMachine {
    /// A new, inactive alert.
    pub fn new(now_ms: u64) -> Self {
        Self {
            state: AlertState::Inactive,
            since_ms: now_ms,
            clear_since_ms: None,
            firings: 0,
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
        self.transition(next, now_ms)
    }

    /// Forces a firing or pending alert down because its subject is gone
    /// (series expired, baseline replaced); returns the previous state.
    pub fn retire(&mut self, now_ms: u64) -> Option<AlertState> {
        let next = match self.state {
            AlertState::Firing => AlertState::Resolved,
            AlertState::Pending => AlertState::Inactive,
            other => other,
        };
        self.transition(next, now_ms)
    }

    fn transition(&mut self, next: AlertState, now_ms: u64) -> Option<AlertState> {
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
    }

    #[test]
    fn zero_hold_fires_at_once_and_refires_after_resolving() {
        let p = AlertPolicy {
            hold: Duration::ZERO,
            resolve_hold: Duration::ZERO,
            clear_fraction: 0.8,
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
