//! What `modelgate analyze` prints: a table per endpoint for a person, one
//! JSON document for a script, and a progress bar on stderr while a large
//! input is read. It formats the analysis; it must never judge.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::json;

use super::{Analysis, EndpointReport, RowVerdict};

/// Inputs smaller than this are read without a progress bar.
const LARGE_INPUT_BYTES: u64 = 16 * 1024 * 1024;

/// A progress bar on stderr for inputs large enough to wait for (hidden
/// when stderr is not a terminal, so logs and pipes stay clean).
pub fn progress(files: &[PathBuf]) -> indicatif::ProgressBar {
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    if total < LARGE_INPUT_BYTES {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} analyzing [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The lines skipped, one `file:line: skipped: reason` each, for stderr.
pub fn skipped(analysis: &Analysis) -> String {
    let mut out = String::new();
    for m in &analysis.malformed {
        let _ = writeln!(out, "{}:{}: skipped: {}", m.file, m.line, m.reason);
    }
    out
}

/// The tables: lines read, then per endpoint one row per version and, for
/// every version but the baseline, each rule's sentence.
pub fn text(analysis: &Analysis, reports: &[EndpointReport]) -> String {
    let mut out = format!(
        "{} lines read, {} skipped\n",
        analysis.lines,
        analysis.malformed.len()
    );
    for report in reports {
        let _ = writeln!(out);
        let _ = writeln!(out, "{} (baseline {})", report.endpoint, report.baseline);
        let _ = writeln!(
            out,
            "  {:<12} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8}  verdict",
            "version", "requests", "avg ms", "p50 ms", "p95 ms", "p99 ms", "timeouts"
        );
        for v in &report.versions {
            let _ = writeln!(
                out,
                "  {:<12} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8}  {}",
                v.version,
                v.requests,
                v.mean_ms,
                v.p50_ms,
                v.p95_ms,
                v.p99_ms,
                v.timeouts,
                v.verdict.as_str()
            );
            if v.verdict != RowVerdict::Baseline {
                for r in &v.rules {
                    let _ = writeln!(out, "      {:<9} {}", r.rule.as_str(), r.evidence.detail);
                }
            }
        }
    }
    out
}

/// The analysis as one JSON document: lines read, the lines skipped, and
/// per endpoint each version's figures, verdict and rule sentences.
pub fn json(analysis: &Analysis, reports: &[EndpointReport]) -> serde_json::Value {
    let malformed: Vec<_> = analysis
        .malformed
        .iter()
        .map(|m| json!({"file": m.file, "line": m.line, "reason": m.reason}))
        .collect();
    let endpoints: Vec<_> = reports
        .iter()
        .map(|r| {
            let versions: Vec<_> = r
                .versions
                .iter()
                .map(|v| {
                    let rules: Vec<_> = v
                        .rules
                        .iter()
                        .map(|r| json!({"rule": r.rule.as_str(), "detail": r.evidence.detail}))
                        .collect();
                    json!({
                        "version": v.version,
                        "requests": v.requests,
                        "mean_ms": v.mean_ms,
                        "p50_ms": v.p50_ms,
                        "p95_ms": v.p95_ms,
                        "p99_ms": v.p99_ms,
                        "timeouts": v.timeouts,
                        "verdict": v.verdict.as_str(),
                        "rules": rules,
                    })
                })
                .collect();
            json!({"endpoint": r.endpoint, "baseline": r.baseline, "versions": versions})
        })
        .collect();
    json!({"lines": analysis.lines, "malformed": malformed, "endpoints": endpoints})
}

#[cfg(test)]
mod tests {
    use modelgate_collector::config::{ExtractConfig, JudgeConfig};

    use super::*;
    use crate::analyze::{judge, offline_judge};

    fn incident() -> (Analysis, Vec<EndpointReport>) {
        let mut analysis = Analysis::default();
        analysis
            .read(
                "incident.jsonl",
                include_bytes!("../../../examples/logs/kenya-lending-incident.jsonl").as_slice(),
                &ExtractConfig::default(),
                &mut |_| {},
            )
            .unwrap();
        let reports = judge(&analysis, &offline_judge(JudgeConfig::default()));
        (analysis, reports)
    }

    #[test]
    fn text_has_a_row_per_version_and_rules_only_off_the_baseline() {
        let (analysis, reports) = incident();
        let out = text(&analysis, &reports);
        assert!(out.starts_with("8 lines read, 1 skipped\n"), "{out}");
        let all = out
            .split("\n\n")
            .find(|t| t.starts_with("(all endpoints) (baseline v1.2)"))
            .unwrap();
        let lines: Vec<&str> = all.lines().collect();
        assert!(lines[1].trim_start().starts_with("version"), "{all}");
        assert!(lines[2].trim_start().starts_with("v1.2"), "{all}");
        assert!(lines[2].ends_with("  baseline"), "{all}");
        // The baseline's row is followed directly by the next version's.
        assert!(lines[3].trim_start().starts_with("v1.3"), "{all}");
        assert!(lines[3].ends_with("  regression"), "{all}");
        assert!(lines[4].starts_with("      "), "{all}");
        assert_eq!(skipped(&analysis).lines().count(), 1);
        assert!(skipped(&analysis).starts_with("incident.jsonl:5: skipped: not JSON"));
    }

    #[test]
    fn json_holds_the_same_rows() {
        let (analysis, reports) = incident();
        let doc = json(&analysis, &reports);
        assert_eq!(doc["lines"], 8);
        assert_eq!(doc["malformed"][0]["line"], 5);
        let all = doc["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["endpoint"] == "(all endpoints)")
            .unwrap();
        assert_eq!(all["baseline"], "v1.2");
        let v13 = all["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["version"] == "v1.3")
            .unwrap();
        assert_eq!(v13["verdict"], "regression");
        assert_eq!(v13["timeouts"], 3);
        assert!(!v13["rules"].as_array().unwrap().is_empty());
    }
}
