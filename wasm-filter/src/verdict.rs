//! The verdict source: the one module that knows the collector's query API.
//! It says which question to ask (the poll's path) and reads the answer into
//! a [`Verdict`] about the candidate.
//!
//! Pure. It must never turn an answer that says nothing about the candidate
//! into a pass: no firing alert, no data and an inconclusive verdict are all
//! [`Verdict::NoData`], which never resumes a rolled-back candidate. An answer
//! it cannot read is an error (the caller keeps its decision and counts it).
//! When the collector's verdict API changes, this module is what changes.

use serde_json::Value;

/// Longest poll answer read; a larger one is treated as garbage.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What an answer says about the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A firing alert names the candidate: move traffic off it.
    Regressed,
    /// The candidate was judged and passed (a new verdict with enough data).
    Passed,
    /// Nothing about the candidate: no firing alert, no data, inconclusive.
    NoData,
}

impl Verdict {
    /// One letter, for the shared record.
    pub const fn letter(self) -> char {
        match self {
            Self::Regressed => 'R',
            Self::Passed => 'P',
            Self::NoData => 'N',
        }
    }

    /// The verdict of [`Verdict::letter`].
    pub const fn from_letter(letter: char) -> Option<Self> {
        match letter {
            'R' => Some(Self::Regressed),
            'P' => Some(Self::Passed),
            'N' => Some(Self::NoData),
            _ => None,
        }
    }
}

/// How bad a regression is, as the collector grades it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Significant and over the warning thresholds.
    Warning,
    /// Over the paging thresholds.
    Critical,
}

impl Severity {
    /// Its name in the query (`min_severity=`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }

    /// The severity of a proto3 JSON object's `severity` field. An answer
    /// without one (a collector before severities, or a regression that
    /// says nothing) counts as critical: it was the only grade then.
    fn of(object: &Value) -> Self {
        match text(object, "severity") {
            "SEVERITY_WARNING" => Self::Warning,
            _ => Self::Critical,
        }
    }
}

/// The question the poll asks, by what the filter is deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// Serving the candidate: is one of its alerts firing? Cheap, and its
    /// answer is the same (`304`) for as long as nothing fires.
    Regressions,
    /// Rolled back: has the candidate passed since? Only a passing verdict
    /// can resume it.
    Verdict,
}

impl Question {
    /// The question to ask while the candidate is (or is not) rolled back.
    pub const fn when(rolled_back: bool) -> Self {
        if rolled_back {
            Self::Verdict
        } else {
            Self::Regressions
        }
    }
}

/// Characters escaped in a query parameter: all but RFC 3986 unreserved ones.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The path (with query) of the question on the collector's admin port;
/// regressions under `least` are not asked for.
pub fn path(question: Question, service: &str, candidate: &str, least: Severity) -> String {
    let service = percent_encoding::utf8_percent_encode(service, QUERY_VALUE);
    match question {
        Question::Regressions => format!(
            "/api/v1/regressions?service={service}&min_severity={}",
            least.as_str()
        ),
        Question::Verdict => format!(
            "/api/v1/verdict?service={service}&candidate={}",
            percent_encoding::utf8_percent_encode(candidate, QUERY_VALUE)
        ),
    }
}

/// The alert state that moves traffic.
const FIRING: &str = "ALERT_STATE_FIRING";
/// The outcome that resumes it.
const PASS: &str = "VERDICT_OUTCOME_PASS";

/// A string field of a proto3 JSON object (absent: its default, empty).
fn text<'a>(object: &'a Value, key: &str) -> &'a str {
    object.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A repeated field of a proto3 JSON object (absent: empty).
fn list<'a>(object: &'a Value, key: &str) -> Result<&'a [Value], String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("`{key}` is not a list")),
    }
}

/// Reads the answer to `question` about `candidate` of `service` (proto3
/// JSON of `ListRegressionsResponse` or `Verdict`: fields at their default
/// are absent, unknown fields are ignored). A firing alert at `least` or
/// worse, on any endpoint or across them (endpoint `*`), is a regression;
/// only a passing verdict that is not one held from before the candidate's
/// traffic stopped is a pass.
pub fn read(
    question: Question,
    body: &[u8],
    service: &str,
    candidate: &str,
    least: Severity,
) -> Result<Verdict, String> {
    if body.len() > MAX_BODY_BYTES {
        return Err(format!("answer longer than {MAX_BODY_BYTES} bytes"));
    }
    let answer: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if !answer.is_object() {
        return Err("not a JSON object".to_owned());
    }
    let names = |object: &Value| {
        let s = text(object, "service");
        (s.is_empty() || s == service) && text(object, "candidate_version") == candidate
    };
    let firing = |object: &Value| text(object, "state") == FIRING && Severity::of(object) >= least;
    match question {
        Question::Regressions => {
            let alerts = list(&answer, "regressions")?;
            let regressed = alerts.iter().any(|a| firing(a) && names(a));
            Ok(if regressed {
                Verdict::Regressed
            } else {
                Verdict::NoData
            })
        }
        Question::Verdict => {
            if !names(&answer) {
                return Ok(Verdict::NoData);
            }
            let mut regressed = false;
            for endpoint in list(&answer, "endpoints")? {
                regressed |= list(endpoint, "rules")?.iter().any(firing);
            }
            if let Some(wide) = answer.get("version_wide").filter(|w| w.is_object()) {
                regressed |= list(wide, "rules")?.iter().any(firing);
            }
            let held = answer.get("held").and_then(Value::as_bool).unwrap_or(false);
            Ok(if regressed {
                Verdict::Regressed
            } else if text(&answer, "outcome") == PASS && !held {
                Verdict::Passed
            } else {
                Verdict::NoData
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRING_BODY: &str = r#"{"regressions":[{"service":"lending-api","endpoint":"/risk-score",
        "candidate_version":"v1.3","baseline_version":"v1.2","rule":"sla",
        "state":"ALERT_STATE_FIRING","since_unix_ms":"1763658000000","evidence":{"x":1}}]}"#;

    fn regressions(body: &str, service: &str, candidate: &str) -> Result<Verdict, String> {
        read(
            Question::Regressions,
            body.as_bytes(),
            service,
            candidate,
            Severity::Critical,
        )
    }

    #[test]
    fn a_firing_alert_of_the_candidate_is_a_regression_and_nothing_else_is() {
        use Verdict::*;
        assert_eq!(
            regressions(FIRING_BODY, "lending-api", "v1.3"),
            Ok(Regressed)
        );
        assert_eq!(regressions(FIRING_BODY, "other", "v1.3"), Ok(NoData));
        assert_eq!(regressions(FIRING_BODY, "lending-api", "v1.4"), Ok(NoData));
        assert_eq!(regressions("{}", "s", "v"), Ok(NoData));
        let pending = FIRING_BODY.replace("FIRING", "PENDING");
        assert_eq!(regressions(&pending, "lending-api", "v1.3"), Ok(NoData));
        let no_service =
            r#"{"regressions":[{"candidate_version":"v1.3","state":"ALERT_STATE_FIRING"}]}"#;
        assert_eq!(
            regressions(no_service, "lending-api", "v1.3"),
            Ok(Regressed)
        );
        assert!(regressions("<html>", "s", "v").is_err());
        assert!(regressions("{\"regressions\":5}", "s", "v").is_err());
        assert!(regressions(&" ".repeat(MAX_BODY_BYTES + 1), "s", "v").is_err());
    }

    fn verdict(outcome: &str, state: &str) -> String {
        format!(
            r#"{{"service":"lending-api","candidate_version":"v1.3","outcome":"{outcome}",
            "endpoints":[{{"endpoint":"/risk-score","outcome":"{outcome}",
            "rules":[{{"rule":"sla","outcome":"{outcome}","state":"{state}"}}]}}]}}"#
        )
    }

    #[test]
    fn only_a_passing_verdict_passes() {
        use Verdict::*;
        let read_verdict = |body: &str, candidate: &str| {
            read(
                Question::Verdict,
                body.as_bytes(),
                "lending-api",
                candidate,
                Severity::Critical,
            )
        };
        let pass = verdict("VERDICT_OUTCOME_PASS", "ALERT_STATE_INACTIVE");
        assert_eq!(read_verdict(&pass, "v1.3"), Ok(Passed));
        // A verdict about another candidate says nothing about this one.
        assert_eq!(read_verdict(&pass, "v1.4"), Ok(NoData));
        let inconclusive = verdict("VERDICT_OUTCOME_INCONCLUSIVE", "ALERT_STATE_INACTIVE");
        assert_eq!(read_verdict(&inconclusive, "v1.3"), Ok(NoData));
        // No data at all: what the collector answers for an idle candidate.
        let idle = r#"{"service":"lending-api","candidate_version":"v1.3","outcome":"VERDICT_OUTCOME_INCONCLUSIVE"}"#;
        assert_eq!(read_verdict(idle, "v1.3"), Ok(NoData));
        let breach = verdict("VERDICT_OUTCOME_REGRESSION", "ALERT_STATE_PENDING");
        assert_eq!(read_verdict(&breach, "v1.3"), Ok(NoData));
        let firing = verdict("VERDICT_OUTCOME_REGRESSION", "ALERT_STATE_FIRING");
        assert_eq!(read_verdict(&firing, "v1.3"), Ok(Regressed));
        assert!(read_verdict("[]", "v1.3").is_err());
        // A regression held since the candidate's traffic stopped is no pass,
        // whatever else the answer says.
        let held = pass.replacen('{', r#"{"held":true,"#, 1);
        assert_eq!(read_verdict(&held, "v1.3"), Ok(NoData));
        // Version-wide: firing across the endpoints is a regression too.
        let wide = r#"{"service":"lending-api","candidate_version":"v1.3","outcome":"VERDICT_OUTCOME_REGRESSION",
            "version_wide":{"endpoint":"*","rules":[{"rule":"sla","state":"ALERT_STATE_FIRING","severity":"SEVERITY_CRITICAL"}]}}"#;
        assert_eq!(read_verdict(wide, "v1.3"), Ok(Regressed));
    }

    #[test]
    fn warnings_move_traffic_only_when_asked_to() {
        use Verdict::*;
        let warning = FIRING_BODY.replace(
            r#""rule":"sla","#,
            r#""rule":"sla","severity":"SEVERITY_WARNING","#,
        );
        let at = |least| {
            read(
                Question::Regressions,
                warning.as_bytes(),
                "lending-api",
                "v1.3",
                least,
            )
        };
        assert_eq!(at(Severity::Critical), Ok(NoData));
        assert_eq!(at(Severity::Warning), Ok(Regressed));
        let critical = FIRING_BODY.replace(
            r#""rule":"sla","#,
            r#""rule":"sla","severity":"SEVERITY_CRITICAL","#,
        );
        let at = |least| {
            read(
                Question::Regressions,
                critical.as_bytes(),
                "lending-api",
                "v1.3",
                least,
            )
        };
        assert_eq!(
            (at(Severity::Critical), at(Severity::Warning)),
            (Ok(Regressed), Ok(Regressed))
        );
    }

    #[test]
    fn paths_escape_their_parameters() {
        assert_eq!(
            path(
                Question::Regressions,
                "lending api",
                "v1.3",
                Severity::Critical
            ),
            "/api/v1/regressions?service=lending%20api&min_severity=critical"
        );
        assert_eq!(
            path(
                Question::Verdict,
                "lending-api",
                "v1.3+b&c",
                Severity::Warning
            ),
            "/api/v1/verdict?service=lending-api&candidate=v1.3%2Bb%26c"
        );
        assert_eq!(Question::when(false), Question::Regressions);
        assert_eq!(Question::when(true), Question::Verdict);
        for v in [Verdict::Regressed, Verdict::Passed, Verdict::NoData] {
            assert_eq!(Verdict::from_letter(v.letter()), Some(v));
        }
    }
}
