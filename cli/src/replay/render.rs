//! What `modelgate replay` prints: the run announced before it starts, and
//! what each version of each phase sent once it is over.

use std::fmt::Write as _;

use super::{ReplayOptions, ReplayReport, Scenario};

/// One line naming the scenario, its size, the destination and the rate.
pub fn header(scenario: &Scenario, options: &ReplayOptions) -> String {
    format!(
        "replaying {:?} ({}): {} requests to {} at {}/s\n",
        scenario.name,
        scenario.description,
        scenario.total_requests(),
        options.endpoint,
        options.rate.unwrap_or(scenario.rate)
    )
}

/// A line per phase and version, then the totals.
pub fn summary(report: &ReplayReport) -> String {
    let mut out = String::new();
    for v in &report.per_version {
        let _ = writeln!(
            out,
            "  {:<32} {:<10} {:>7} requests {:>6} timeouts {:>6} errors",
            v.phase, v.version, v.requests, v.timeouts, v.errors
        );
    }
    let _ = writeln!(
        out,
        "sent {} requests ({} database spans) in {:.1}s, {} spans failed",
        report.requests,
        report.db_spans,
        report.elapsed.as_secs_f64(),
        report.failed
    );
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::replay::VersionSent;

    #[test]
    fn summary_has_a_line_per_version_and_the_totals() {
        let report = ReplayReport {
            requests: 30,
            db_spans: 4,
            failed: 0,
            per_version: vec![
                VersionSent {
                    phase: "steady".into(),
                    version: "v1.2".into(),
                    requests: 20,
                    timeouts: 0,
                    errors: 1,
                },
                VersionSent {
                    phase: "canary".into(),
                    version: "v1.3".into(),
                    requests: 10,
                    timeouts: 3,
                    errors: 0,
                },
            ],
            elapsed: Duration::from_millis(1500),
        };
        let out = summary(&report);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("  steady"), "{out}");
        assert!(lines[0].contains("v1.2"), "{out}");
        assert!(
            lines[0].ends_with("20 requests      0 timeouts      1 errors"),
            "{out}"
        );
        assert!(
            lines[1].ends_with("10 requests      3 timeouts      0 errors"),
            "{out}"
        );
        assert_eq!(
            lines[2],
            "sent 30 requests (4 database spans) in 1.5s, 0 spans failed"
        );
    }

    #[test]
    fn header_names_the_rate_given_or_the_scenarios() {
        let scenario = Scenario::load("lending").unwrap();
        let options = ReplayOptions::default();
        let line = header(&scenario, &options);
        assert!(line.starts_with("replaying \"lending\""), "{line}");
        assert!(line.contains(&format!("at {}/s", scenario.rate)), "{line}");
        let line = header(
            &scenario,
            &ReplayOptions {
                rate: Some(50.0),
                ..options
            },
        );
        assert!(line.trim_end().ends_with("at 50/s"), "{line}");
    }
}
