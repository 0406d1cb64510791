//! What `modelgate gate` prints: the verdict as text for a person reading a
//! CI log, or as one JSON document for a pipeline step. It only formats what
//! the collector answered; it must never change a decision or an exit code.

use std::fmt::Write as _;

use modelgate_proto::v1 as pb;

use super::{exit, Decision, GateOptions, GateReport};
use crate::client::ClientError;

/// A figure in its unit: `781.2 ms`, `4.00%`, `2.10 calls`.
pub fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "ms" => format!("{value:.1} ms"),
        "rate" => format!("{:.2}%", value * 100.0),
        "calls" => format!("{value:.2} calls"),
        other => format!("{value} {other}"),
    }
}

fn outcome_name(outcome: i32) -> &'static str {
    match pb::VerdictOutcome::try_from(outcome) {
        Ok(pb::VerdictOutcome::Pass) => "PASS",
        Ok(pb::VerdictOutcome::Regression) => "REGRESSION",
        Ok(pb::VerdictOutcome::Inconclusive) | Ok(pb::VerdictOutcome::Unspecified) | Err(_) => {
            "INCONCLUSIVE"
        }
    }
}

/// `REGRESSION critical`, `PASS`: an outcome with its severity.
fn outcome_with_severity(outcome: i32, severity: i32) -> String {
    let name = outcome_name(outcome);
    match pb::Severity::try_from(severity) {
        Ok(pb::Severity::Warning) => format!("{name} warning"),
        Ok(pb::Severity::Critical) => format!("{name} critical"),
        _ => name.to_owned(),
    }
}

fn state_name(state: i32) -> &'static str {
    match pb::AlertState::try_from(state) {
        Ok(pb::AlertState::Pending) => "pending",
        Ok(pb::AlertState::Firing) => "firing",
        Ok(pb::AlertState::Resolved) => "resolved",
        _ => "inactive",
    }
}

fn evidence_line(e: &pb::Evidence, rule: &str) -> String {
    let mut line = String::new();
    if e.quantile > 0.0 {
        let _ = write!(line, "p{} ", (e.quantile * 1000.0).round() / 10.0);
    }
    let _ = write!(
        line,
        "candidate {} (n={})",
        format_value(e.candidate_value, &e.unit),
        e.candidate_count
    );
    if e.baseline_count > 0 || rule != "sla" {
        let _ = write!(
            line,
            " vs baseline {} (n={})",
            format_value(e.baseline_value, &e.unit),
            e.baseline_count
        );
    }
    let _ = write!(
        line,
        ", limit {}, ratio {:.2}",
        format_value(e.threshold, &e.unit),
        e.ratio
    );
    // p = 1 and e = 1 mean no test ran (the effect was clearly absent).
    if !e.test.is_empty() && (e.p_value < 1.0 || e.e_value != 1.0) {
        let _ = write!(
            line,
            "; {} test p={:.2e}, e={:.2e} (fires at {:.0})",
            e.test, e.p_value, e.e_value, e.e_threshold
        );
    }
    if e.has_shift {
        let _ = write!(
            line,
            "; shift {:+.1} ms [{:+.1}, {:+.1}]",
            e.shift_ms, e.shift_low_ms, e.shift_high_ms
        );
    }
    line
}

/// The verdict as text: a headline, the judge's summary, then per endpoint
/// (the version-wide judgement first, as `*`) each rule's outcome, figures
/// and the judge's own sentence.
pub fn text(report: &GateReport) -> String {
    let v = &report.verdict;
    let mut out = format!(
        "{} {}: {} (exit {})\n",
        v.service,
        v.candidate_version,
        report.decision.as_str().to_uppercase(),
        report.decision.exit().code()
    );
    if report.decision == Decision::Warning {
        out.push_str("  a warning-level regression: it fails the gate with --fail-on warning\n");
    }
    if !v.summary.is_empty() {
        let _ = writeln!(out, "  {}", v.summary);
    }
    if v.held {
        out.push_str("  held: the candidate has had no traffic lately; this is its last verdict\n");
    }
    for e in v.version_wide.iter().chain(&v.endpoints) {
        let baseline = if e.baseline_version.is_empty() {
            "none"
        } else {
            e.baseline_version.as_str()
        };
        let _ = writeln!(
            out,
            "  {} (baseline {baseline}): {}",
            e.endpoint,
            outcome_with_severity(e.outcome, e.severity)
        );
        for r in &e.rules {
            let _ = write!(
                out,
                "    {:<9} {:<12} alert {:<8}",
                r.rule,
                outcome_name(r.outcome),
                state_name(r.state)
            );
            if let Some(ev) = &r.evidence {
                let _ = writeln!(out, " {}", evidence_line(ev, &r.rule));
                let _ = writeln!(out, "              {}", ev.detail);
            } else {
                out.push('\n');
            }
        }
    }
    if let Some(reason) = &report.reason {
        let _ = writeln!(out, "inconclusive: {reason}");
    }
    out
}

/// The result as one JSON document: the gate's question, its decision and
/// exit code, why (when inconclusive or failed) and the collector's verdict
/// (proto3 JSON mapping, as served on `/api/v1/verdict`).
pub fn json(options: &GateOptions, result: &Result<GateReport, ClientError>) -> serde_json::Value {
    let (decision, reason, verdict, polls, waited) = match result {
        Ok(r) => (
            r.decision,
            r.reason.clone(),
            serde_json::to_value(&r.verdict).unwrap_or(serde_json::Value::Null),
            r.polls,
            r.waited.as_secs_f64(),
        ),
        Err(e) => (
            Decision::Inconclusive,
            Some(e.to_string()),
            serde_json::Value::Null,
            0,
            0.0,
        ),
    };
    serde_json::json!({
        "service": options.service,
        "candidate": options.candidate,
        "baseline": options.baseline,
        "endpoint": options.endpoint,
        "sla_ms": options.sla.map(|d| d.as_secs_f64() * 1e3),
        "min_samples": options.min_samples,
        "wait_s": options.wait.as_secs_f64(),
        "fail_on": options.fail_on.as_str(),
        "decision": decision.as_str(),
        "exit_code": exit(result).code(),
        "reason": reason,
        "error": result.as_ref().err().map(ToString::to_string),
        "polls": polls,
        "waited_s": waited,
        "verdict": verdict,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::gate::tests::{options, rule, verdict};
    use crate::gate::DEFAULT_URL;

    #[test]
    fn values_in_their_units() {
        assert_eq!(format_value(781.25, "ms"), "781.2 ms");
        assert_eq!(format_value(0.04, "rate"), "4.00%");
        assert_eq!(format_value(2.1, "calls"), "2.10 calls");
    }

    #[test]
    fn text_shows_each_rule_with_its_evidence() {
        use pb::VerdictOutcome as O;
        let report = GateReport {
            decision: Decision::Regression,
            reason: None,
            verdict: verdict(
                O::Regression,
                vec![
                    rule(
                        "relative",
                        O::Regression,
                        "p95 781.2 ms vs 117.5 ms on v1.2",
                    ),
                    rule("sla", O::Regression, "p95 781.2 ms over the 150 ms limit"),
                ],
            ),
            polls: 1,
            waited: Duration::ZERO,
        };
        let text = text(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "lending-api v1.3: REGRESSION (exit 1)");
        assert_eq!(lines[1], "  /risk-score (baseline v1.2): REGRESSION");
        assert!(lines[2].starts_with("    relative  REGRESSION   alert inactive"));
        assert!(
            lines[2].contains("p95 candidate 781.2 ms (n=150) vs baseline 117.5 ms (n=350)"),
            "{text}"
        );
        assert!(lines[2].contains("binomial test p=1.00e-40, e=3.00e30 (fires at 200)"));
        assert_eq!(lines[3].trim(), "p95 781.2 ms vs 117.5 ms on v1.2");
        // sla has no baseline: none shown.
        assert!(!lines[4].contains("baseline"), "{text}");
        assert!(lines[4].contains("limit 150.0 ms"), "{text}");
    }

    #[test]
    fn text_names_severity_summary_and_the_version_wide_judgement() {
        use pb::VerdictOutcome as O;
        let mut v = verdict(
            O::Regression,
            vec![rule("relative", O::Regression, "p50 1.25x")],
        );
        v.severity = pb::Severity::Warning as i32;
        v.summary = "slower on 2 of 2 endpoints: the version, not an endpoint".into();
        v.version_wide = Some(pb::EndpointVerdict {
            endpoint: "*".into(),
            severity: pb::Severity::Warning as i32,
            ..v.endpoints[0].clone()
        });
        let report = GateReport {
            decision: Decision::Warning,
            reason: None,
            verdict: v,
            polls: 10,
            waited: Duration::from_secs(9),
        };
        let text = text(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "lending-api v1.3: WARNING (exit 0)", "{text}");
        assert!(lines[1].contains("--fail-on warning"), "{text}");
        assert_eq!(
            lines[2],
            "  slower on 2 of 2 endpoints: the version, not an endpoint"
        );
        assert_eq!(lines[3], "  * (baseline v1.2): REGRESSION warning");
        assert!(
            text.contains("  /risk-score (baseline v1.2): REGRESSION\n"),
            "{text}"
        );
    }

    #[test]
    fn json_carries_decision_exit_code_and_verdict() {
        use pb::VerdictOutcome as O;
        let report = GateReport {
            decision: Decision::Inconclusive,
            reason: Some("not enough evidence".into()),
            verdict: verdict(O::Inconclusive, vec![rule("sla", O::Inconclusive, "x")]),
            polls: 3,
            waited: Duration::from_secs(2),
        };
        let doc = json(&options(), &Ok(report));
        assert_eq!(doc["decision"], "inconclusive");
        assert_eq!(doc["exit_code"], 2);
        assert_eq!(doc["sla_ms"], 150.0);
        assert_eq!(doc["fail_on"], "critical");
        assert_eq!(doc["verdict"]["outcome"], "VERDICT_OUTCOME_INCONCLUSIVE");
        assert_eq!(doc["verdict"]["endpoints"][0]["rules"][0]["rule"], "sla");
        let failed = json(
            &options(),
            &Err(ClientError::Unreachable {
                url: DEFAULT_URL.into(),
                message: "refused".into(),
            }),
        );
        assert_eq!(failed["exit_code"], 69);
        assert!(failed["verdict"].is_null());
        assert!(failed["error"]
            .as_str()
            .unwrap()
            .contains("collector unreachable"));
    }
}
