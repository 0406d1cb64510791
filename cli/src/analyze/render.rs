//! What `modelgate analyze` prints: a table per endpoint (and across
//! endpoints per service) with the alerts that fired, or one JSON document
//! in the query API's shape; the lines skipped on stderr, and a progress bar
//! while a large input is read. It formats the finished analysis; it must
//! never judge.

use std::fmt::Write as _;
use std::path::PathBuf;

use modelgate_collector::emit::views::ScopeVerdict;
use modelgate_collector::judge::{Severity, Verdict, ALL_ENDPOINTS};
use modelgate_collector::query::api;
use serde_json::Value;

use super::Finished;

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

/// A verdict's words: `pass`, `inconclusive`, `regression (critical)`.
fn words(v: Verdict) -> String {
    match v {
        Verdict::Pass => "pass".into(),
        Verdict::Inconclusive => "inconclusive".into(),
        Verdict::Regression(s) => format!("regression ({s})"),
    }
}

impl Finished {
    /// The lines skipped, one `file:line: skipped: reason` each, for stderr.
    pub fn render_skipped(&self) -> String {
        let mut out = String::new();
        for m in &self.malformed {
            let _ = writeln!(out, "{}:{}: skipped: {}", m.file, m.line, m.reason);
        }
        out
    }

    /// The report as tables: one per endpoint, one across endpoints per
    /// service, then the alerts that fired along the way.
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "{} lines read, {} skipped\n",
            self.lines,
            self.malformed.len()
        );
        for e in &self.report.versions {
            let (baseline, source) = match &e.baseline {
                Some((b, s)) => (b.as_str(), s.as_str()),
                None => ("none", "none"),
            };
            let _ = writeln!(
                out,
                "\n{} {} (baseline {baseline}, {source})",
                e.key.service, e.key.endpoint
            );
            let _ = writeln!(
                out,
                "  {:<12} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8}  verdict",
                "version", "requests", "avg ms", "p50 ms", "p95 ms", "p99 ms", "timeouts"
            );
            for v in &e.versions {
                let scope = self
                    .verdict(&e.key.service, &v.version)
                    .and_then(|d| d.endpoints.iter().find(|s| s.endpoint == e.key.endpoint));
                let verdict = if v.is_baseline {
                    "baseline".to_owned()
                } else {
                    scope.map_or("inconclusive".to_owned(), |s| words(s.verdict))
                };
                let _ = writeln!(
                    out,
                    "  {:<12} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8}  {verdict}",
                    v.version,
                    v.count,
                    v.mean_ms,
                    v.p50_ms,
                    v.p95_ms,
                    v.p99_ms,
                    (v.timeout_rate * v.count as f64).round() as u64,
                );
                rules(&mut out, scope, v.is_baseline);
            }
        }
        for v in &self.report.verdicts {
            if let Some(wide) = &v.version_wide {
                let _ = writeln!(
                    out,
                    "\n{} {ALL_ENDPOINTS} (all endpoints, baseline {}): {} {}\n  {}",
                    v.service,
                    if wide.baseline.is_empty() {
                        "none"
                    } else {
                        &wide.baseline
                    },
                    v.candidate,
                    words(wide.verdict),
                    v.summary
                );
                rules(&mut out, Some(wide), false);
            }
        }
        if !self.report.fired.is_empty() {
            let _ = writeln!(out, "\nalerts that fired while replaying:");
            for f in &self.report.fired {
                // A critical alert fires with its warning: name it once.
                let also_critical = f.severity == Severity::Warning
                    && self.report.fired.iter().any(|g| {
                        g.key == f.key && g.time_ms == f.time_ms && g.severity == Severity::Critical
                    });
                if also_critical {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "  {} {} {} {} {} ({}): {}",
                    humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(f.time_ms)
                    ),
                    f.key.endpoint.service,
                    f.key.endpoint.endpoint,
                    f.key.candidate,
                    f.key.rule,
                    f.severity,
                    f.detail
                );
            }
        }
        if self.report.late > 0 {
            let _ = writeln!(
                out,
                "\n{} records left out: older than aggregate.allowed_lateness behind the latest one",
                self.report.late
            );
        }
        out
    }

    /// The report as JSON: the lines, the malformed ones, and the query
    /// API's own messages (`ListVersions`' endpoints, a `Verdict` per
    /// version).
    pub fn render_json(&self) -> Value {
        let versions: Vec<Value> = self
            .report
            .versions
            .iter()
            .map(|e| serde_json::to_value(api::endpoint_versions(e)).unwrap_or(Value::Null))
            .collect();
        let verdicts: Vec<Value> = self
            .report
            .verdicts
            .iter()
            .map(|v| serde_json::to_value(api::verdict(v)).unwrap_or(Value::Null))
            .collect();
        serde_json::json!({
            "lines": self.lines,
            "malformed": self.malformed.iter().map(|m| serde_json::json!({"file": m.file, "line": m.line, "reason": m.reason})).collect::<Vec<_>>(),
            "endpoints": versions,
            "verdicts": verdicts,
            "fired": self.report.fired.iter().map(|f| serde_json::json!({
                "time_unix_ms": f.time_ms,
                "service": f.key.endpoint.service,
                "endpoint": f.key.endpoint.endpoint,
                "candidate_version": f.key.candidate,
                "rule": f.key.rule.as_str(),
                "severity": f.severity.as_str(),
                "detail": f.detail,
            })).collect::<Vec<_>>(),
            "late": self.report.late,
        })
    }
}

/// A scope's rules, one line each, under a version's row.
fn rules(out: &mut String, scope: Option<&ScopeVerdict>, is_baseline: bool) {
    let Some(scope) = scope else {
        return;
    };
    for r in &scope.rules {
        if is_baseline && r.result.rule.comparative() && r.result.rule.as_str() != "errors" {
            continue;
        }
        let _ = writeln!(
            out,
            "      {:<9} {}",
            r.result.rule.as_str(),
            r.result.evidence.detail
        );
    }
}
