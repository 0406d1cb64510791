//! Rolling back by itself: the proxy's decision (whether the candidate gets
//! new unversioned traffic), how a verdict moves it, and the [`Record`] all
//! workers of a proxy share: the decision, the last answer (its verdict and
//! `ETag`), and which worker polls.
//!
//! Pure (time is a parameter). It must never resume on an answer that says
//! nothing about the candidate: only [`Verdict::Passed`], held for the
//! resume time, resumes it (or the operator's `rollback_epoch`, which starts
//! a new record). A record it cannot decode is no decision (see
//! `poll::Poll::read`).

use crate::verdict::Verdict;

/// A change of the routing decision, to log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The candidate stops getting new unversioned traffic.
    RolledBack,
    /// The candidate gets its share again.
    Resumed,
}

/// When a rolled-back candidate may resume by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Resume on a passing verdict at all (else only the operator resumes).
    pub auto_resume: bool,
    /// How long the candidate must keep passing first.
    pub resume_after_nanos: u64,
}

/// Longest `ETag` kept; a longer one is not sent back (the poll then gets
/// the whole answer, which is only slower).
const MAX_ETAG_BYTES: usize = 128;

/// The proxy's decision and what the next poller needs to continue it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// The candidate gets no new unversioned traffic.
    pub rolled_back: bool,
    /// Rolled back: since when every answer has been a pass.
    pub passing_since: Option<u64>,
    /// The verdict of the last answer read: what a `304` answer repeats.
    pub last: Option<Verdict>,
    /// That answer's `ETag` (empty: none), sent as `If-None-Match`.
    pub etag: String,
    /// The worker that polls (0: none) ...
    pub poller: u64,
    /// ... until then, unix nanoseconds, unless it renews.
    pub lease_until: u64,
}

/// The first word of an encoded record: its format.
const FORMAT: &str = "mg1";

impl Record {
    /// Takes a verdict into account: rolls back on a regression, resumes
    /// after `resume_after` of passes. Forgets the last answer on a change
    /// (the next poll asks another question).
    pub fn observe(&mut self, verdict: Verdict, now: u64, policy: Policy) -> Option<Transition> {
        let transition = match (self.rolled_back, verdict) {
            (false, Verdict::Regressed) => {
                self.rolled_back = true;
                Some(Transition::RolledBack)
            }
            (false, _) => None,
            (true, Verdict::Passed) => {
                let since = *self.passing_since.get_or_insert(now);
                let held = now.saturating_sub(since) >= policy.resume_after_nanos;
                (policy.auto_resume && held).then(|| {
                    self.rolled_back = false;
                    Transition::Resumed
                })
            }
            (true, Verdict::Regressed | Verdict::NoData) => {
                self.passing_since = None;
                None
            }
        };
        if transition.is_some() {
            self.passing_since = None;
            self.last = None;
            self.etag.clear();
        }
        transition
    }

    /// Remembers an answer read in full: its verdict, and its `ETag` when
    /// it can be sent back as it is.
    pub fn answered(&mut self, verdict: Verdict, etag: Option<&[u8]>) {
        self.last = Some(verdict);
        self.etag.clear();
        if let Some(etag) =
            etag.filter(|e| e.len() <= MAX_ETAG_BYTES && e.iter().all(u8::is_ascii_graphic))
        {
            self.etag.extend(etag.iter().map(|b| char::from(*b)));
        }
    }

    /// Whether `worker` holds the poll at `now`.
    pub fn polled_by(&self, worker: u64, now: u64) -> bool {
        self.poller == worker && now < self.lease_until
    }

    /// Whether nobody holds the poll at `now` (never taken, or lapsed).
    pub fn lease_free(&self, now: u64) -> bool {
        self.poller == 0 || now >= self.lease_until
    }

    /// The record as shared data: one line of words, the `ETag` last (it
    /// holds no space).
    pub fn encode(&self) -> String {
        let passing = self
            .passing_since
            .map_or_else(|| "-".to_owned(), |t| t.to_string());
        let last = self.last.map_or('-', Verdict::letter);
        format!(
            "{FORMAT} {} {passing} {last} {:x} {} {}",
            u8::from(self.rolled_back),
            self.poller,
            self.lease_until,
            self.etag
        )
    }

    /// A record from shared data; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut words = text.splitn(7, ' ');
        if words.next()? != FORMAT {
            return None;
        }
        let rolled_back = match words.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let passing_since = match words.next()? {
            "-" => None,
            t => Some(t.parse().ok()?),
        };
        let last = match words.next()? {
            "-" => None,
            l => Some(Verdict::from_letter(l.parse().ok()?)?),
        };
        let poller = u64::from_str_radix(words.next()?, 16).ok()?;
        let lease_until = words.next()?.parse().ok()?;
        let etag = words.next()?;
        if etag.len() > MAX_ETAG_BYTES || !etag.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        Some(Self {
            rolled_back,
            passing_since,
            last,
            etag: etag.to_owned(),
            poller,
            lease_until,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    const SECOND: u64 = 1_000_000_000;
    const POLICY: Policy = Policy {
        auto_resume: true,
        resume_after_nanos: SECOND,
    };

    #[test]
    fn rolls_back_on_a_regression_and_resumes_after_passing_for_the_hold() {
        let mut r = Record::default();
        assert_eq!(r.observe(NoData, 0, POLICY), None);
        assert_eq!(r.observe(Passed, 0, POLICY), None);
        assert_eq!(
            r.observe(Regressed, 1, POLICY),
            Some(Transition::RolledBack)
        );
        assert_eq!(r.observe(Regressed, 2, POLICY), None);
        assert_eq!(r.observe(Passed, 10, POLICY), None);
        assert_eq!(r.observe(Passed, 10 + SECOND - 1, POLICY), None);
        assert_eq!(
            r.observe(Passed, 10 + SECOND, POLICY),
            Some(Transition::Resumed)
        );
        assert!(!r.rolled_back);
        assert_eq!(r.passing_since, None);
    }

    #[test]
    fn no_data_never_resumes_and_restarts_the_hold() {
        let mut r = Record::default();
        r.observe(Regressed, 0, POLICY);
        for t in 1..100 {
            assert_eq!(r.observe(NoData, t * SECOND, POLICY), None);
        }
        assert!(r.rolled_back);
        assert_eq!(r.observe(Passed, 100 * SECOND, POLICY), None);
        assert_eq!(r.observe(NoData, 100 * SECOND + 1, POLICY), None);
        assert_eq!(r.observe(Passed, 101 * SECOND, POLICY), None);
        assert_eq!(r.passing_since, Some(101 * SECOND));
        assert!(r.rolled_back);
    }

    #[test]
    fn without_auto_resume_only_the_operator_resumes() {
        let policy = Policy {
            auto_resume: false,
            resume_after_nanos: 0,
        };
        let mut r = Record::default();
        assert_eq!(
            r.observe(Regressed, 0, policy),
            Some(Transition::RolledBack)
        );
        assert_eq!(r.observe(Passed, u64::MAX, policy), None);
        assert!(r.rolled_back);
    }

    #[test]
    fn a_change_forgets_the_last_answer() {
        let mut r = Record::default();
        r.answered(Regressed, Some(b"\"abc\""));
        assert_eq!((r.last, r.etag.as_str()), (Some(Regressed), "\"abc\""));
        r.observe(Regressed, 0, POLICY);
        assert_eq!((r.last, r.etag.as_str()), (None, ""));
        r.answered(NoData, Some(b"has space"));
        assert_eq!(r.etag, "", "an unusable ETag is not kept");
    }

    #[test]
    fn records_round_trip_and_garbage_is_absent() {
        let mut r = Record {
            rolled_back: true,
            passing_since: Some(17),
            last: Some(Passed),
            etag: "\"6f1c-2\"".into(),
            poller: 0xdead_beef,
            lease_until: 1_763_658_000_000_000_000,
        };
        assert_eq!(Record::decode(r.encode().as_bytes()), Some(r.clone()));
        r = Record::default();
        assert_eq!(Record::decode(r.encode().as_bytes()), Some(r));
        for garbage in [
            &b""[..],
            b"mg1",
            b"mg2 0 - - 0 0 ",
            b"mg1 2 - - 0 0 ",
            b"mg1 0 x - 0 0 ",
            b"mg1 0 - Q 0 0 ",
            b"mg1 0 - - zz 0 ",
            b"mg1 0 - - 0 0 a b",
            b"\xff\xfe",
        ] {
            assert_eq!(Record::decode(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn the_lease_is_held_until_it_lapses() {
        let r = Record {
            poller: 7,
            lease_until: 100,
            ..Record::default()
        };
        assert!(r.polled_by(7, 99) && !r.polled_by(7, 100) && !r.polled_by(8, 50));
        assert!(!r.lease_free(99) && r.lease_free(100));
        assert!(Record::default().lease_free(0));
    }
}
