//! Envoy stats per model version: a request counter and a latency histogram
//! (milliseconds), plus the filter's own counters.
//!
//! Names are `<prefix>.model_version.<version>.requests` and
//! `<prefix>.model_version.<version>.duration_ms`, so an Envoy `stats_tags`
//! entry with the regex `^wasmcustom\.<prefix>\.(model_version\.([^.]+)\.)`
//! turns the version into a `model_version` tag. Envoy allocates a new metric
//! on every `define_metric` call, so each name is defined once and its id
//! cached here. This module must never let the number of metrics grow with
//! the traffic: versions are sanitized and capped, the rest share `other`.

use std::collections::BTreeMap;

/// Longest version kept in a stat name.
pub const MAX_VERSION_CHARS: usize = 64;

/// The version as a stat name segment: `[A-Za-z0-9_-]`, anything else
/// (dots included, they separate segments) becomes `_`; at most 64 chars.
pub fn sanitize_version(version: &str) -> String {
    let cleaned: String = version
        .chars()
        .take(MAX_VERSION_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "unknown".to_owned()
    } else {
        cleaned
    }
}

/// The two metric ids of one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionMetrics {
    /// Counter of requests served by the version.
    pub requests: u32,
    /// Histogram of their latency in milliseconds.
    pub duration_ms: u32,
}

/// What the metric names are built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A counter.
    Counter,
    /// A histogram.
    Histogram,
}

/// Cached metric ids per sanitized version, capped at `max_versions` plus
/// the shared `other`.
#[derive(Debug)]
pub struct VersionStats {
    prefix: String,
    max_versions: usize,
    ids: BTreeMap<String, VersionMetrics>,
}

/// The version name that collects every version past the cap.
pub const OTHER: &str = "other";

impl VersionStats {
    /// An empty cache.
    pub fn new(prefix: &str, max_versions: usize) -> Self {
        Self {
            prefix: prefix.to_owned(),
            max_versions,
            ids: BTreeMap::new(),
        }
    }

    /// The metric name of a version's metric.
    pub fn name(&self, version: &str, kind: MetricKind) -> String {
        let suffix = match kind {
            MetricKind::Counter => "requests",
            MetricKind::Histogram => "duration_ms",
        };
        format!("{}.model_version.{version}.{suffix}", self.prefix)
    }

    /// The ids of a version's metrics, defining them on first use through
    /// `define`. `None` when the host refused to define them: the request
    /// goes unrecorded and the definition is tried again next time.
    pub fn ids<E>(
        &mut self,
        version: &str,
        mut define: impl FnMut(MetricKind, &str) -> Result<u32, E>,
    ) -> Option<VersionMetrics> {
        let mut key = sanitize_version(version);
        if let Some(ids) = self.ids.get(&key) {
            return Some(*ids);
        }
        if self.ids.len() >= self.max_versions && key != OTHER {
            key = OTHER.to_owned();
            if let Some(ids) = self.ids.get(&key) {
                return Some(*ids);
            }
        }
        let requests = define(MetricKind::Counter, &self.name(&key, MetricKind::Counter)).ok()?;
        let duration_ms = define(
            MetricKind::Histogram,
            &self.name(&key, MetricKind::Histogram),
        )
        .ok()?;
        let ids = VersionMetrics {
            requests,
            duration_ms,
        };
        self.ids.insert(key, ids);
        Some(ids)
    }

    /// How many versions have their own metrics (including `other`).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// No version recorded yet.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The filter's own counters, named `<prefix>.filter.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterCounter {
    /// Spans accepted by the collector.
    SpansExported,
    /// Spans dropped: buffer full or retries exhausted.
    SpansDropped,
    /// Export calls that failed (dispatch refused, error status, timeout).
    ExportFailed,
    /// Polls that failed or answered something unusable.
    PollFailed,
    /// Candidate rolled back.
    Rollbacks,
    /// Candidate resumed.
    Resumes,
}

impl FilterCounter {
    /// Every counter, in definition order.
    pub const ALL: [Self; 6] = [
        Self::SpansExported,
        Self::SpansDropped,
        Self::ExportFailed,
        Self::PollFailed,
        Self::Rollbacks,
        Self::Resumes,
    ];

    /// The last segment of its name.
    pub const fn suffix(self) -> &'static str {
        match self {
            Self::SpansExported => "spans_exported",
            Self::SpansDropped => "spans_dropped",
            Self::ExportFailed => "export_failed",
            Self::PollFailed => "poll_failed",
            Self::Rollbacks => "rollbacks",
            Self::Resumes => "resumes",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_sanitized() {
        assert_eq!(sanitize_version("v1.3"), "v1_3");
        assert_eq!(sanitize_version("gpt-4o_mini"), "gpt-4o_mini");
        assert_eq!(sanitize_version(""), "unknown");
        assert_eq!(sanitize_version("ü;{}"), "____");
        assert_eq!(sanitize_version(&"x".repeat(500)).len(), MAX_VERSION_CHARS);
    }

    #[test]
    fn each_metric_is_defined_once_and_versions_are_capped() {
        let mut defined = Vec::new();
        let mut stats = VersionStats::new("modelgate", 2);
        let mut define = |_kind: MetricKind, name: &str| -> Result<u32, ()> {
            defined.push(name.to_owned());
            Ok(u32::try_from(defined.len()).unwrap())
        };
        let a = stats.ids("v1.2", &mut define).unwrap();
        assert_eq!(stats.ids("v1.2", &mut define), Some(a));
        stats.ids("v1.3", &mut define).unwrap();
        let other = stats.ids("v9", &mut define).unwrap();
        assert_eq!(stats.ids("v10", &mut define), Some(other));
        assert_eq!(
            defined,
            [
                "modelgate.model_version.v1_2.requests",
                "modelgate.model_version.v1_2.duration_ms",
                "modelgate.model_version.v1_3.requests",
                "modelgate.model_version.v1_3.duration_ms",
                "modelgate.model_version.other.requests",
                "modelgate.model_version.other.duration_ms",
            ]
        );
        assert_eq!(stats.len(), 3);
    }

    #[test]
    fn a_refused_definition_is_retried() {
        let mut stats = VersionStats::new("m", 4);
        assert_eq!(stats.ids("v1", |_, _| Err(())), None);
        assert!(stats.is_empty());
        assert!(stats.ids("v1", |_, _| Ok::<u32, ()>(5)).is_some());
    }
}
