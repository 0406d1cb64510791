//! Analyze: offline judgement of JSON log files, one request per line, with
//! the same judge the collector runs.
//!
//! A [`LogMapping`] says which fields hold the latency (and its unit), the
//! version, the endpoint and the status, and which status values mean a
//! timeout or an error; the lending incident's format is built in. Lines that
//! are not JSON or lack a field are reported by file and line number and
//! skipped: a bad line never stops the analysis. The judgement compares, per
//! endpoint and over all endpoints together, every version with the one that
//! appeared first (log files run forward in time). This module reads files
//! and computes; printing is the binary's business.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use serde_json::Value;

use crate::aggregate::WindowSummary;
use crate::extract::Outcome;
use crate::judge::{Condition, Judge, RuleResult};

/// Name of the group that merges every endpoint.
pub const ALL_ENDPOINTS: &str = "(all endpoints)";

/// How a JSON log line maps to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMapping {
    /// Field holding the latency.
    pub duration_field: String,
    /// Milliseconds per unit of that field (1 for ms, 1000 for s).
    pub duration_ms_per_unit: f64,
    /// Field holding the version.
    pub version_field: String,
    /// Field holding the endpoint.
    pub endpoint_field: String,
    /// Field holding the status.
    pub status_field: String,
    /// Status values meaning a timeout (compared case-insensitively).
    pub timeout_values: Vec<String>,
    /// Status values meaning an error.
    pub error_values: Vec<String>,
}

impl LogMapping {
    /// The lending incident's logs: `responseTimeMs`, `modelVersion`,
    /// `endpoint`, `status` (`OK` or `Timeout`).
    pub fn lending() -> Self {
        Self {
            duration_field: "responseTimeMs".into(),
            duration_ms_per_unit: 1.0,
            version_field: "modelVersion".into(),
            endpoint_field: "endpoint".into(),
            status_field: "status".into(),
            timeout_values: vec!["timeout".into()],
            error_values: vec!["error".into(), "failed".into()],
        }
    }

    /// One line as (endpoint, version, milliseconds, outcome), or why not.
    fn map(&self, line: &str) -> Result<(String, String, f64, Outcome), String> {
        let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let field = |name: &str| value.get(name).ok_or_else(|| format!("no field {name:?}"));
        let text = |name: &str| -> Result<String, String> {
            match field(name)? {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(format!("field {name:?} is not a string")),
            }
        };
        let duration = field(&self.duration_field)?
            .as_f64()
            .filter(|d| d.is_finite() && *d >= 0.0)
            .ok_or_else(|| {
                format!(
                    "field {:?} is not a non-negative number",
                    self.duration_field
                )
            })?;
        let status = text(&self.status_field)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let outcome = if self
            .timeout_values
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&status))
        {
            Outcome::Timeout
        } else if self
            .error_values
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&status))
        {
            Outcome::Error
        } else {
            Outcome::Ok
        };
        Ok((
            text(&self.endpoint_field)?,
            text(&self.version_field)?,
            duration * self.duration_ms_per_unit,
            outcome,
        ))
    }
}

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
}

impl Analysis {
    /// Reads one file of JSON lines.
    pub fn read_file(&mut self, path: &Path, mapping: &LogMapping) -> std::io::Result<()> {
        let file = std::fs::File::open(path)?;
        self.read(
            &path.display().to_string(),
            std::io::BufReader::new(file),
            mapping,
        )
    }

    /// Reads JSON lines from `reader`; `name` labels malformed lines.
    pub fn read(
        &mut self,
        name: &str,
        reader: impl BufRead,
        mapping: &LogMapping,
    ) -> std::io::Result<()> {
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            self.lines += 1;
            match mapping.map(&line) {
                Ok((endpoint, version, ms, outcome)) => {
                    for group in [endpoint.as_str(), ALL_ENDPOINTS] {
                        let order = self.order.entry(group.to_owned()).or_default();
                        if !order.contains(&version) {
                            order.push(version.clone());
                        }
                        let s = self
                            .groups
                            .entry(group.to_owned())
                            .or_default()
                            .entry(version.clone())
                            .or_default();
                        s.latency.record(ms);
                        s.outcomes[outcome.index()] += 1;
                    }
                }
                Err(reason) => self.malformed.push(Malformed {
                    file: name.to_owned(),
                    line: i + 1,
                    reason,
                }),
            }
        }
        Ok(())
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
    /// "baseline", "pass", "regression" or "inconclusive".
    pub verdict: &'static str,
    /// The rules' results (empty for the baseline's comparisons).
    pub rules: Vec<RuleResult>,
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

fn verdict(rules: &[RuleResult], is_baseline: bool) -> &'static str {
    if rules.iter().any(|r| r.condition == Condition::Breach) {
        "regression"
    } else if is_baseline {
        "baseline"
    } else if rules.iter().all(|r| r.condition == Condition::Clear) {
        "pass"
    } else {
        "inconclusive"
    }
}

/// Whether any row regressed.
pub fn any_regression(reports: &[EndpointReport]) -> bool {
    reports
        .iter()
        .any(|r| r.versions.iter().any(|v| v.verdict == "regression"))
}

/// A judge for one look at a batch of data (no time, so no window).
pub fn offline_judge(config: crate::config::JudgeConfig) -> Judge {
    Judge::new(config, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JudgeConfig;

    const INCIDENT: &str = include_str!("../../examples/logs/kenya-lending-incident.jsonl");

    #[test]
    fn the_incident_log_flags_v13_and_reports_line_5() {
        let mut analysis = Analysis::default();
        analysis
            .read(
                "incident.jsonl",
                INCIDENT.as_bytes(),
                &LogMapping::lending(),
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
        assert_eq!(v13.verdict, "regression");
        let v12 = all.versions.iter().find(|v| v.version == "v1.2").unwrap();
        assert_eq!(v12.verdict, "baseline");
        // Two v1.3 requests per endpoint are too few for any rule.
        let risk = reports
            .iter()
            .find(|r| r.endpoint == "/risk-score")
            .unwrap();
        let v13_risk = risk.versions.iter().find(|v| v.version == "v1.3").unwrap();
        assert_eq!(v13_risk.verdict, "inconclusive");
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
                &LogMapping::lending(),
            )
            .unwrap();
        assert!(
            analysis.malformed[0].reason.contains("responseTimeMs"),
            "{:?}",
            analysis.malformed
        );
        assert!(analysis.groups.is_empty());
    }
}
