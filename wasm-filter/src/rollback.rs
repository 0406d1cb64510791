//! Rolling back by itself: reading the collector's answer to
//! `GET /api/v1/regressions?service=...` and deciding whether the candidate
//! gets new traffic.
//!
//! Pure (time is a parameter). It must never change the routing decision on
//! an answer it cannot read: garbage, a non-200 or a failed poll keeps the
//! current decision (fail open), and the caller counts it.

use serde::Deserialize;

/// Longest poll answer read; a larger one is treated as garbage.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The collector's answer (proto3 JSON of `ListRegressionsResponse`; fields
/// at their default are absent, unknown fields are ignored).
#[derive(Debug, Default, Deserialize)]
struct Regressions {
    #[serde(default)]
    regressions: Vec<Regression>,
}

/// One active regression, as much of it as the filter needs.
#[derive(Debug, Default, Deserialize)]
struct Regression {
    #[serde(default)]
    service: String,
    #[serde(default)]
    candidate_version: String,
    #[serde(default)]
    state: String,
}

/// The alert state that moves traffic.
const FIRING: &str = "ALERT_STATE_FIRING";

/// Whether the answer reports a firing regression of `candidate` in
/// `service`. `Err` when the body is not the expected JSON.
pub fn candidate_firing(body: &[u8], service: &str, candidate: &str) -> Result<bool, String> {
    if body.len() > MAX_BODY_BYTES {
        return Err(format!("answer longer than {MAX_BODY_BYTES} bytes"));
    }
    let answer: Regressions = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(answer.regressions.iter().any(|r| {
        r.state == FIRING
            && r.candidate_version == candidate
            && (r.service.is_empty() || r.service == service)
    }))
}

/// A change of the routing decision, to log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The candidate stops getting new unversioned traffic.
    RolledBack,
    /// The candidate gets its share again.
    Resumed,
}

/// The rollback decision and what it remembers between polls.
#[derive(Debug, Clone)]
pub struct Rollback {
    enabled: bool,
    auto_resume: bool,
    resume_after_nanos: u64,
    rolled_back: bool,
    clear_since: Option<u64>,
}

impl Rollback {
    /// A decision that starts with the candidate getting traffic.
    pub fn new(enabled: bool, auto_resume: bool, resume_after_ms: u64) -> Self {
        Self {
            enabled,
            auto_resume,
            resume_after_nanos: resume_after_ms.saturating_mul(1_000_000),
            rolled_back: false,
            clear_since: None,
        }
    }

    /// Whether the candidate is rolled back now.
    pub fn rolled_back(&self) -> bool {
        self.rolled_back
    }

    /// Takes one successful poll's verdict into account.
    pub fn observe(&mut self, firing: bool, now_nanos: u64) -> Option<Transition> {
        if !self.enabled {
            return None;
        }
        if firing {
            self.clear_since = None;
            if !self.rolled_back {
                self.rolled_back = true;
                return Some(Transition::RolledBack);
            }
            return None;
        }
        if !self.rolled_back || !self.auto_resume {
            return None;
        }
        let since = *self.clear_since.get_or_insert(now_nanos);
        if now_nanos.saturating_sub(since) >= self.resume_after_nanos {
            self.rolled_back = false;
            self.clear_since = None;
            return Some(Transition::Resumed);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRING_BODY: &str = r#"{"regressions":[{"service":"lending-api","endpoint":"/risk-score",
        "candidate_version":"v1.3","baseline_version":"v1.2","rule":"sla",
        "state":"ALERT_STATE_FIRING","since_unix_ms":"1763658000000","evidence":{"x":1}}]}"#;

    #[test]
    fn reads_the_collector_answer() {
        assert_eq!(
            candidate_firing(FIRING_BODY.as_bytes(), "lending-api", "v1.3"),
            Ok(true)
        );
        assert_eq!(
            candidate_firing(FIRING_BODY.as_bytes(), "other", "v1.3"),
            Ok(false)
        );
        assert_eq!(
            candidate_firing(FIRING_BODY.as_bytes(), "lending-api", "v1.4"),
            Ok(false)
        );
        assert_eq!(candidate_firing(b"{}", "s", "v"), Ok(false));
        let pending = FIRING_BODY.replace("FIRING", "PENDING");
        assert_eq!(
            candidate_firing(pending.as_bytes(), "lending-api", "v1.3"),
            Ok(false)
        );
        let no_service =
            r#"{"regressions":[{"candidate_version":"v1.3","state":"ALERT_STATE_FIRING"}]}"#;
        assert_eq!(
            candidate_firing(no_service.as_bytes(), "lending-api", "v1.3"),
            Ok(true)
        );
        assert!(candidate_firing(b"<html>", "s", "v").is_err());
        assert!(candidate_firing(b"{\"regressions\":5}", "s", "v").is_err());
    }

    #[test]
    fn rolls_back_and_resumes_after_the_hold() {
        let mut r = Rollback::new(true, true, 1_000);
        assert_eq!(r.observe(false, 0), None);
        assert_eq!(r.observe(true, 1), Some(Transition::RolledBack));
        assert_eq!(r.observe(true, 2), None);
        assert_eq!(r.observe(false, 10), None);
        assert_eq!(r.observe(true, 20), None);
        assert_eq!(r.observe(false, 30), None);
        assert_eq!(r.observe(false, 30 + 999_999_999), None);
        assert_eq!(
            r.observe(false, 30 + 1_000_000_000),
            Some(Transition::Resumed)
        );
        assert!(!r.rolled_back());
    }

    #[test]
    fn stays_rolled_back_without_auto_resume_and_ignores_when_disabled() {
        let mut r = Rollback::new(true, false, 0);
        assert_eq!(r.observe(true, 0), Some(Transition::RolledBack));
        assert_eq!(r.observe(false, u64::MAX), None);
        assert!(r.rolled_back());
        let mut off = Rollback::new(false, true, 0);
        assert_eq!(off.observe(true, 0), None);
    }
}
