//! Analyze: offline judgement of files, by the live collector's own
//! aggregator and judge, on the records' own clock
//! ([`modelgate_collector::offline`]): the same records give the same
//! baselines and verdicts here as they do live.
//!
//! A file holds JSON lines of either kind, mixed freely:
//! - a log line, one request, mapped by the configured
//!   [`LogMapping`](modelgate_collector::config::LogMapping) (the lending
//!   incident's format by default, its `timestamp` the request's time);
//! - an OTLP/JSON export request (`{"resourceSpans": ...}`,
//!   `{"resourceLogs": ...}` or `{"resourceMetrics": ...}`, its histogram
//!   points read as `extract.metrics` says), one per line, as the
//!   OpenTelemetry Collector's file exporter writes them.
//!
//! Lines that are not JSON, lack a field or hold unusable spans are reported
//! by file and line number and skipped: a bad line never stops the
//! analysis. This module reads, judges and renders its report (a table or
//! JSON in the query API's shape).

use std::fmt::Write as _;
use std::io::BufRead;
use std::path::Path;

use modelgate_collector::config::Config;
use modelgate_collector::emit::views::{ScopeVerdict, VerdictView};
use modelgate_collector::extract::logs::{extract_line, extract_logs};
use modelgate_collector::extract::metrics::extract_metrics;
use modelgate_collector::extract::{extract, Interner, Sample};
use modelgate_collector::judge::{Severity, Verdict, ALL_ENDPOINTS};
use modelgate_collector::offline::{Offline, Report};
use modelgate_collector::query::api;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;

/// A line that could not be used.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    /// The file.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

/// Files being read into the replay.
#[derive(Debug)]
pub struct Analysis {
    offline: Offline,
    config: Config,
    interner: Interner,
    /// Lines skipped, with why.
    pub malformed: Vec<Malformed>,
    /// Lines read (blank lines not counted).
    pub lines: u64,
}

/// What the files showed.
#[derive(Debug)]
pub struct Finished {
    /// The judgement at the records' end.
    pub report: Report,
    /// Lines skipped, with why.
    pub malformed: Vec<Malformed>,
    /// Lines read.
    pub lines: u64,
}

impl Analysis {
    /// An empty analysis judging with `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            offline: Offline::new(config),
            config: config.clone(),
            interner: Interner::default(),
            malformed: Vec::new(),
            lines: 0,
        }
    }

    /// Reads one file; `progress` is told how many bytes were read, as they
    /// are.
    pub fn read_file(&mut self, path: &Path, progress: &mut dyn FnMut(u64)) -> std::io::Result<()> {
        let file = std::fs::File::open(path)?;
        self.read(
            &path.display().to_string(),
            std::io::BufReader::new(file),
            progress,
        )
    }

    /// Reads JSON lines from `reader`; `name` labels malformed lines.
    pub fn read(
        &mut self,
        name: &str,
        mut reader: impl BufRead,
        progress: &mut dyn FnMut(u64),
    ) -> std::io::Result<()> {
        let mut line = String::new();
        let mut number = 0;
        loop {
            line.clear();
            let read = reader.read_line(&mut line)?;
            if read == 0 {
                return Ok(());
            }
            progress(read as u64);
            number += 1;
            if line.trim().is_empty() {
                continue;
            }
            self.lines += 1;
            let mut samples = Vec::new();
            let result = self.read_line(&line, &mut samples);
            // A line's usable samples count even when some were not usable.
            if !samples.is_empty() {
                self.offline.add(samples);
            }
            if let Err(reason) = result {
                self.malformed.push(Malformed {
                    file: name.to_owned(),
                    line: number,
                    reason,
                });
            }
        }
    }

    fn read_line(&mut self, line: &str, samples: &mut Vec<Sample>) -> Result<(), String> {
        let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let config = &self.config.extract;
        let report = if value.get("resourceSpans").is_some() {
            let request: ExportTraceServiceRequest = serde_json::from_value(value)
                .map_err(|e| format!("not an OTLP/JSON trace export: {e}"))?;
            extract(&request, config, &mut self.interner, samples)
        } else if value.get("resourceLogs").is_some() {
            let request: ExportLogsServiceRequest = serde_json::from_value(value)
                .map_err(|e| format!("not an OTLP/JSON logs export: {e}"))?;
            extract_logs(&request, config, &mut self.interner, samples)
        } else if value.get("resourceMetrics").is_some() {
            let request: ExportMetricsServiceRequest = serde_json::from_value(value)
                .map_err(|e| format!("not an OTLP/JSON metrics export: {e}"))?;
            extract_metrics(&request, config, &mut self.interner, samples)
        } else {
            samples.push(extract_line(&value, config, &mut self.interner)?);
            return Ok(());
        };
        if report.rejected > 0 {
            return Err(format!(
                "{} of {} not usable: {}",
                report.rejected,
                report.rejected + report.samples + report.ignored,
                report.message
            ));
        }
        Ok(())
    }

    /// Judges at the records' end.
    pub fn finish(self) -> Finished {
        Finished {
            report: self.offline.finish(),
            malformed: self.malformed,
            lines: self.lines,
        }
    }
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
    /// A version regressed at `severity` or worse (the exit status).
    pub fn regressed(&self, severity: Severity) -> bool {
        self.report
            .verdicts
            .iter()
            .any(|v| matches!(v.verdict, Verdict::Regression(s) if s >= severity))
    }

    /// The verdict on `version` of `service`.
    fn verdict(&self, service: &str, version: &str) -> Option<&VerdictView> {
        self.report
            .verdicts
            .iter()
            .find(|v| v.service == service && v.candidate == version)
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

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_fixture::{request_of, SpanSpec};

    const INCIDENT: &str = include_str!("../../../examples/logs/kenya-lending-incident.jsonl");

    fn analyze(name: &str, text: &str) -> Finished {
        let mut analysis = Analysis::new(&Config::default());
        analysis.read(name, text.as_bytes(), &mut |_| {}).unwrap();
        analysis.finish()
    }

    #[test]
    fn the_incident_log_flags_v13_across_both_endpoints_and_reports_line_5() {
        let done = analyze("incident.jsonl", INCIDENT);
        assert_eq!(done.lines, 8);
        assert_eq!(done.malformed.len(), 1);
        assert_eq!(done.malformed[0].line, 5);
        assert!(
            done.malformed[0].reason.starts_with("not JSON"),
            "{:?}",
            done.malformed
        );
        let v13 = done.verdict("unknown_service", "v1.3").unwrap();
        assert_eq!(v13.verdict, Verdict::Regression(Severity::Critical));
        let wide = v13.version_wide.as_ref().unwrap();
        assert_eq!(wide.baseline, "v1.2");
        assert_eq!(wide.verdict, Verdict::Regression(Severity::Critical));
        // Two v1.3 requests per endpoint are too few for any rule alone.
        for e in &v13.endpoints {
            assert_eq!(e.verdict, Verdict::Inconclusive, "{e:?}");
        }
        assert!(done.regressed(Severity::Critical));
        let text = done.render_text();
        assert!(text.contains("(baseline v1.2, incumbent)"), "{text}");
        assert!(text.contains("4 of 4 requests above 150 ms"), "{text}");
    }

    #[test]
    fn a_line_without_a_field_is_reported_with_the_field() {
        let done = analyze(
            "x",
            r#"{"endpoint":"/a","status":"OK","modelVersion":"v1"}"#,
        );
        assert!(
            done.malformed[0].reason.contains("responseTimeMs"),
            "{:?}",
            done.malformed
        );
        assert!(done.report.versions.is_empty());
    }

    #[test]
    fn otlp_json_lines_of_the_file_exporter_are_read_with_their_spans() {
        let slow = request_of(
            (0..20).map(|_| SpanSpec::request("lending-api", "/risk-score", "v1.3", 750)),
        );
        let fast = request_of(
            (0..20).map(|_| SpanSpec::request("lending-api", "/risk-score", "v1.2", 100)),
        );
        let bad = request_of([
            SpanSpec::request("lending-api", "/risk-score", "v1.2", 100),
            SpanSpec::request("lending-api", "/risk-score", "v1.2", 100).no_timestamps(),
        ]);
        let file = [
            serde_json::to_string(&fast).unwrap(),
            serde_json::to_string(&slow).unwrap(),
            serde_json::to_string(&bad).unwrap(),
            r#"{"resourceSpans":"nope"}"#.to_owned(),
        ]
        .join("\n");
        let mut analysis = Analysis::new(&Config::default());
        let mut bytes = 0;
        analysis
            .read("otlp.json", file.as_bytes(), &mut |n| bytes += n)
            .unwrap();
        assert_eq!(bytes as usize, file.len());
        let done = analysis.finish();
        assert_eq!(done.malformed.len(), 2, "{:?}", done.malformed);
        assert_eq!(done.malformed[0].line, 3);
        assert!(
            done.malformed[0].reason.starts_with("1 of 2 not usable"),
            "{:?}",
            done.malformed
        );
        assert!(done.malformed[1].reason.contains("OTLP/JSON trace export"));
        let risk = &done.report.versions[0];
        assert_eq!(risk.baseline.as_ref().unwrap().0, "v1.2");
        let count = |v: &str| risk.versions.iter().find(|s| s.version == v).unwrap().count;
        assert_eq!((count("v1.2"), count("v1.3")), (21, 20));
        let v13 = done.verdict("lending-api", "v1.3").unwrap();
        assert!(matches!(v13.verdict, Verdict::Regression(_)), "{v13:?}");
        let json = done.render_json();
        assert_eq!(
            json["verdicts"][1]["outcome"], "VERDICT_OUTCOME_REGRESSION",
            "{json}"
        );
    }
}
