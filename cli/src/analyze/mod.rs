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
//! analysis. This module reads and judges; [`render`] owns the output (a
//! table, or JSON in the query API's shape, and the progress bar).

use std::io::BufRead;
use std::path::Path;

use modelgate_collector::config::Config;
use modelgate_collector::emit::views::VerdictView;
use modelgate_collector::extract::logs::{extract_line, extract_logs};
use modelgate_collector::extract::metrics::extract_metrics;
use modelgate_collector::extract::{extract, Interner, Sample};
use modelgate_collector::judge::{Severity, Verdict};
use modelgate_collector::offline::{Offline, Report};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;

pub mod render;

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
