//! Analyze: offline judgement of files with the same extraction and judge
//! the collector runs.
//!
//! A file holds JSON lines of either kind, mixed freely:
//! - a log line, one request, mapped by the configured
//!   [`LogMapping`](modelgate_collector::config::LogMapping) (the lending incident's
//!   format by default);
//! - an OTLP/JSON export request (`{"resourceSpans": ...}` or
//!   `{"resourceLogs": ...}`), one per line, as the OpenTelemetry Collector's
//!   file exporter writes them.
//!
//! Lines that are not JSON, lack a field or hold unusable spans are reported
//! by file and line number and skipped: a bad line never stops the analysis. The judgement compares, per
//! endpoint and over all endpoints together, every version with the one that
//! appeared first (log files run forward in time). This module reads files
//! and computes; [`render`] owns the output (table, JSON, progress bar).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;

use modelgate_collector::aggregate::WindowSummary;
use modelgate_collector::config::ExtractConfig;
use modelgate_collector::extract::logs::extract_logs;
use modelgate_collector::extract::{
    extract, Interner, Outcome, Sample, SampleKind, UNKNOWN_SERVICE,
};
use modelgate_collector::judge::{Condition, Judge, RuleResult};

pub mod render;

/// Name of the group that merges every endpoint.
pub const ALL_ENDPOINTS: &str = "(all endpoints)";

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

/// Everything read so far: per endpoint (and [`ALL_ENDPOINTS`]), per version.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Requests by endpoint and version.
    pub groups: BTreeMap<String, BTreeMap<String, WindowSummary>>,
    /// Versions of each group in the order they first appeared: the first is
    /// the incumbent, the baseline (log files run forward in time).
    pub order: BTreeMap<String, Vec<String>>,
    /// Lines skipped, with why.
    pub malformed: Vec<Malformed>,
    /// Lines read (blank lines not counted).
    pub lines: u64,
    /// Names the samples' series.
    interner: Interner,
}

impl Analysis {
    /// Reads one file; `progress` is told how many bytes were read, as they
    /// are.
    pub fn read_file(
        &mut self,
        path: &Path,
        config: &ExtractConfig,
        progress: &mut dyn FnMut(u64),
    ) -> std::io::Result<()> {
        let file = std::fs::File::open(path)?;
        self.read(
            &path.display().to_string(),
            std::io::BufReader::new(file),
            config,
            progress,
        )
    }

    /// Reads JSON lines from `reader`; `name` labels malformed lines.
    pub fn read(
        &mut self,
        name: &str,
        mut reader: impl BufRead,
        config: &ExtractConfig,
        progress: &mut dyn FnMut(u64),
    ) -> std::io::Result<()> {
        let mut line = String::new();
        let mut number = 0;
        let mut samples = Vec::new();
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
            samples.clear();
            if let Err(reason) = self.read_line(&line, config, &mut samples) {
                self.malformed.push(Malformed {
                    file: name.to_owned(),
                    line: number,
                    reason,
                });
            }
        }
    }

    /// One line: its samples are recorded even when some of its spans or
    /// records were not usable (the error then says how many).
    fn read_line(
        &mut self,
        line: &str,
        config: &ExtractConfig,
        samples: &mut Vec<Sample>,
    ) -> Result<(), String> {
        let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let report = if value.get("resourceSpans").is_some() {
            let request: ExportTraceServiceRequest = serde_json::from_value(value)
                .map_err(|e| format!("not an OTLP/JSON trace export: {e}"))?;
            extract(&request, config, &mut self.interner, samples)
        } else if value.get("resourceLogs").is_some() {
            let request: ExportLogsServiceRequest = serde_json::from_value(value)
                .map_err(|e| format!("not an OTLP/JSON logs export: {e}"))?;
            extract_logs(&request, config, &mut self.interner, samples)
        } else {
            let mapped = config.logs.map_json(&value)?;
            self.record(
                &mapped.endpoint,
                &mapped.version,
                mapped.duration,
                mapped.outcome,
            );
            return Ok(());
        };
        for sample in samples.iter() {
            if let SampleKind::Request { duration, outcome } = sample.kind {
                let endpoint = &sample.series.endpoint;
                let group = if endpoint.service == UNKNOWN_SERVICE {
                    endpoint.endpoint.clone()
                } else {
                    format!("{} {}", endpoint.service, endpoint.endpoint)
                };
                self.record(&group, sample.version(), duration, outcome);
            }
        }
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

    fn record(&mut self, endpoint: &str, version: &str, duration: Duration, outcome: Outcome) {
        for group in [endpoint, ALL_ENDPOINTS] {
            let order = self.order.entry(group.to_owned()).or_default();
            if !order.iter().any(|v| v == version) {
                order.push(version.to_owned());
            }
            let s = self
                .groups
                .entry(group.to_owned())
                .or_default()
                .entry(version.to_owned())
                .or_default();
            s.latency.record(duration.as_secs_f64() * 1000.0);
            s.outcomes[outcome.index()] += 1;
        }
    }
}

/// One version's row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRow {
    /// The version.
    pub version: String,
    /// Requests.
    pub requests: u64,
    /// Mean, p50, p95, p99 in milliseconds.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// What the judge made of this version.
    pub verdict: RowVerdict,
    /// The rules' results (empty for the baseline's comparisons).
    pub rules: Vec<RuleResult>,
}

/// A version's verdict in an offline analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowVerdict {
    /// The version the others were compared with.
    Baseline,
    /// Every enabled rule is clear.
    Pass,
    /// Some rule breached.
    Regression,
    /// Too little evidence for some rule.
    Inconclusive,
}

impl RowVerdict {
    /// `baseline`, `pass`, `regression` or `inconclusive`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RowVerdict::Baseline => "baseline",
            RowVerdict::Pass => "pass",
            RowVerdict::Regression => "regression",
            RowVerdict::Inconclusive => "inconclusive",
        }
    }
}

/// One endpoint's table.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointReport {
    /// The endpoint, or [`ALL_ENDPOINTS`].
    pub endpoint: String,
    /// The version the others were compared with.
    pub baseline: String,
    /// One row per version.
    pub versions: Vec<VersionRow>,
}

/// Judges every group: each version against the first one that appeared,
/// with every enabled rule.
pub fn judge(analysis: &Analysis, judge: &Judge) -> Vec<EndpointReport> {
    analysis
        .groups
        .iter()
        .map(|(endpoint, versions)| {
            let baseline = analysis
                .order
                .get(endpoint)
                .and_then(|o| o.first())
                .cloned()
                .unwrap_or_default();
            let base = versions.get(&baseline).cloned().unwrap_or_default();
            let rows = versions
                .iter()
                .map(|(version, summary)| {
                    let compared = (version != &baseline).then_some((baseline.as_str(), &base));
                    let rules = judge.judge_pair(summary, compared);
                    let verdict = verdict(&rules, compared.is_none());
                    let q = |q| summary.latency.quantile(q).unwrap_or(0.0);
                    VersionRow {
                        version: version.clone(),
                        requests: summary.count(),
                        mean_ms: summary.latency.mean().unwrap_or(0.0),
                        p50_ms: q(0.5),
                        p95_ms: q(0.95),
                        p99_ms: q(0.99),
                        timeouts: summary.outcomes[Outcome::Timeout.index()],
                        verdict,
                        rules,
                    }
                })
                .collect();
            EndpointReport {
                endpoint: endpoint.clone(),
                baseline,
                versions: rows,
            }
        })
        .collect()
}

fn verdict(rules: &[RuleResult], is_baseline: bool) -> RowVerdict {
    if rules.iter().any(|r| r.condition == Condition::Breach) {
        RowVerdict::Regression
    } else if is_baseline {
        RowVerdict::Baseline
    } else if rules.iter().all(|r| r.condition == Condition::Clear) {
        RowVerdict::Pass
    } else {
        RowVerdict::Inconclusive
    }
}

/// Whether any row regressed.
pub fn any_regression(reports: &[EndpointReport]) -> bool {
    reports.iter().any(|r| {
        r.versions
            .iter()
            .any(|v| v.verdict == RowVerdict::Regression)
    })
}

/// A judge for one look at a batch of data (no time, so no window).
pub fn offline_judge(config: modelgate_collector::config::JudgeConfig) -> Judge {
    Judge::new(config, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_collector::config::JudgeConfig;
    use modelgate_fixture::{request_of, SpanSpec};

    const INCIDENT: &str = include_str!("../../../examples/logs/kenya-lending-incident.jsonl");

    #[test]
    fn the_incident_log_flags_v13_and_reports_line_5() {
        let mut analysis = Analysis::default();
        analysis
            .read(
                "incident.jsonl",
                INCIDENT.as_bytes(),
                &ExtractConfig::default(),
                &mut |_| {},
            )
            .unwrap();
        assert_eq!(analysis.lines, 8);
        assert_eq!(analysis.malformed.len(), 1);
        assert_eq!(analysis.malformed[0].line, 5);
        assert!(
            analysis.malformed[0].reason.starts_with("not JSON"),
            "{:?}",
            analysis.malformed
        );
        let reports = judge(&analysis, &offline_judge(JudgeConfig::default()));
        let all = reports
            .iter()
            .find(|r| r.endpoint == ALL_ENDPOINTS)
            .unwrap();
        assert_eq!(all.baseline, "v1.2");
        let v13 = all.versions.iter().find(|v| v.version == "v1.3").unwrap();
        assert_eq!((v13.requests, v13.timeouts), (4, 3));
        assert_eq!(v13.verdict, RowVerdict::Regression);
        let v12 = all.versions.iter().find(|v| v.version == "v1.2").unwrap();
        assert_eq!(v12.verdict, RowVerdict::Baseline);
        // Two v1.3 requests per endpoint are too few for any rule.
        let risk = reports
            .iter()
            .find(|r| r.endpoint == "/risk-score")
            .unwrap();
        let v13_risk = risk.versions.iter().find(|v| v.version == "v1.3").unwrap();
        assert_eq!(v13_risk.verdict, RowVerdict::Inconclusive);
        assert!((v12.mean_ms - 102.0).abs() < 1.0, "{}", v12.mean_ms);
        assert!(any_regression(&reports));
    }

    #[test]
    fn a_line_without_a_field_is_reported_with_the_field() {
        let mut analysis = Analysis::default();
        analysis
            .read(
                "x",
                r#"{"endpoint":"/a","status":"OK","modelVersion":"v1"}"#.as_bytes(),
                &ExtractConfig::default(),
                &mut |_| {},
            )
            .unwrap();
        assert!(
            analysis.malformed[0].reason.contains("responseTimeMs"),
            "{:?}",
            analysis.malformed
        );
        assert!(analysis.groups.is_empty());
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
        let logs = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"lending-api"}}]},"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"},"attributes":[{"key":"endpoint","value":{"stringValue":"/risk-score"}},{"key":"responseTimeMs","value":{"intValue":"800"}},{"key":"status","value":{"stringValue":"Timeout"}},{"key":"modelVersion","value":{"stringValue":"v1.3"}}]}]}]}]}"#;
        let file = [
            serde_json::to_string(&fast).unwrap(),
            serde_json::to_string(&slow).unwrap(),
            serde_json::to_string(&bad).unwrap(),
            logs.to_owned(),
            r#"{"resourceSpans":"nope"}"#.to_owned(),
        ]
        .join("\n");
        let mut analysis = Analysis::default();
        let mut bytes = 0;
        analysis
            .read(
                "otlp.json",
                file.as_bytes(),
                &ExtractConfig::default(),
                &mut |n| bytes += n,
            )
            .unwrap();
        assert_eq!(bytes as usize, file.len());
        assert_eq!(analysis.malformed.len(), 2, "{:?}", analysis.malformed);
        assert_eq!(analysis.malformed[0].line, 3);
        assert!(
            analysis.malformed[0]
                .reason
                .starts_with("1 of 2 not usable"),
            "{:?}",
            analysis.malformed
        );
        assert_eq!(analysis.malformed[1].line, 5);
        assert!(
            analysis.malformed[1]
                .reason
                .contains("OTLP/JSON trace export"),
            "{:?}",
            analysis.malformed
        );
        let group = &analysis.groups["lending-api /risk-score"];
        assert_eq!(group["v1.2"].count(), 21);
        assert_eq!(group["v1.3"].count(), 21);
        let reports = judge(&analysis, &offline_judge(JudgeConfig::default()));
        let risk = reports
            .iter()
            .find(|r| r.endpoint == "lending-api /risk-score")
            .unwrap();
        assert_eq!(risk.baseline, "v1.2");
        let v13 = risk.versions.iter().find(|v| v.version == "v1.3").unwrap();
        assert_eq!((v13.timeouts, v13.verdict), (1, RowVerdict::Regression));
    }
}
