//! How many Prometheus series one modelgate series makes, counted from real
//! scrapes of the release binary (the README's "Prometheus size" table is
//! this test's output), under the default `emit.prometheus` settings and
//! each trimming; and `/metrics` sent gzip-compressed to a scraper that
//! asks for it, as Prometheus does.
//!
//! One service, one endpoint, baseline `v1` and candidate `v2` (far over the
//! SLA), every request outcome on both.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use modelgate_e2e::fleet::Fleet;
use modelgate_e2e::{eventually, Collector};

/// Bounds of the default `emit.histogram_buckets_ms`.
const DEFAULT_BOUNDS: usize = 14;
const JUDGED_TIMEOUT: Duration = Duration::from_secs(30);

/// One sample line: its family (the name without `_bucket`/`_sum`/
/// `_count`/`_total`) and labels.
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (name, rest) = line.split_at(line.find(['{', ' ']).unwrap());
            let mut labels = BTreeMap::new();
            if let Some(body) = rest.strip_prefix('{') {
                let body = &body[..body.rfind('}').unwrap()];
                for pair in body.split("\",") {
                    let (k, v) = pair.split_once("=\"").unwrap();
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
            }
            let family = ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            (family.to_owned(), labels)
        })
        .collect()
}

/// Sample lines per family for `version` (as `model_version` or as
/// `candidate_version`), every endpoint.
fn lines_of(text: &str, version: &str) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for (family, labels) in samples(text) {
        let of = labels
            .get("model_version")
            .or(labels.get("candidate_version"));
        if of.map(String::as_str) == Some(version) {
            *count.entry(family).or_insert(0) += 1;
        }
    }
    count
}

/// Distinct values of `label` on `family`'s lines of candidate `version`.
fn distinct(text: &str, family: &str, version: &str, label: &str) -> usize {
    let mut seen: Vec<String> = samples(text)
        .into_iter()
        .filter(|(f, l)| {
            f == family && l.get("candidate_version").map(String::as_str) == Some(version)
        })
        .filter_map(|(_, mut l)| l.remove(label))
        .collect();
    seen.sort();
    seen.dedup();
    seen.len()
}

/// Starts a collector with `env`, feeds the two series with every outcome,
/// and returns its scrape once the candidate is judged by every rule that
/// can judge it.
async fn scrape(env: &[(&str, &str)]) -> (Collector, String) {
    let collector = Collector::start(env).await;
    let fleet = Fleet {
        services: 1,
        endpoints: 1,
        per_series: 30,
        outcomes: 3,
    };
    fleet
        .feed(&collector, 0..3, Duration::from_millis(300))
        .await;
    let text = eventually(JUDGED_TIMEOUT, || async {
        let text = collector.metrics().await;
        // sla, relative and errors judge v2 (fanout needs database calls,
        // which this fleet makes none of).
        (distinct(&text, "modelgate_regression_ratio", "v2", "rule") >= 3).then_some(text)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "v2 not judged within {JUDGED_TIMEOUT:?}; log:\n{}",
            collector.log()
        )
    });
    (collector, text)
}

/// Judged rules of `version` as candidate (per endpoint and version-wide;
/// a baseline's own absolute rules only once one breached).
fn judged(text: &str, version: &str) -> usize {
    samples(text)
        .into_iter()
        .filter(|(f, l)| {
            f == "modelgate_regression_ratio"
                && l.get("candidate_version").map(String::as_str) == Some(version)
        })
        .count()
}

/// Prints the count of both versions and checks it against what each
/// setting promises: per series, its histograms (`histograms` of
/// `DEFAULT_BOUNDS + 3` lines: buckets, +Inf, sum, count) and its database
/// gauge; per judged rule, active and alerts per severity, ratio,
/// difference and `verdict_lines`.
fn check(setting: &str, text: &str, histograms: usize, verdict_lines: usize) {
    let histogram = histograms * (DEFAULT_BOUNDS + 3);
    let per_rule = 6 + verdict_lines;
    let mut report = Vec::new();
    for version in ["v1", "v2"] {
        let lines = lines_of(text, version);
        let judged = judged(text, version);
        assert_eq!(
            lines["modelgate_request_duration_seconds"], histogram,
            "{setting} {version}: {lines:?}"
        );
        assert_eq!(
            lines["modelgate_db_calls_per_request"], 1,
            "{setting} {version}"
        );
        if judged > 0 {
            assert_eq!(
                lines["modelgate_regression_active"],
                2 * judged,
                "{setting} {version}"
            );
            assert_eq!(lines["modelgate_alerts"], 2 * judged, "{setting} {version}");
            assert_eq!(
                lines["modelgate_regression_verdict"],
                verdict_lines * judged,
                "{setting} {version}"
            );
        }
        let total: usize = lines.values().sum();
        assert_eq!(
            total,
            histogram + 1 + per_rule * judged,
            "{setting} {version}: {lines:?}"
        );
        report.push(format!(
            "{version}: {total} = {histograms} histogram(s) x {} + 1 + {judged} judged rule(s) x {per_rule}",
            DEFAULT_BOUNDS + 3
        ));
    }
    println!(
        "{setting}: Prometheus series of one modelgate series: {}",
        report.join("; ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_series_per_modelgate_series_by_setting() {
    let (collector, text) = scrape(&[]).await;
    check("defaults (outcomes: split, verdicts: current)", &text, 3, 1);

    // gzip when asked, the same page; plain otherwise.
    let response = reqwest::Client::new()
        .get(collector.admin_url("/metrics"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(response.headers()["vary"], "accept-encoding");
    let packed = response.bytes().await.unwrap();
    let mut unpacked = String::new();
    flate2::read::GzDecoder::new(&packed[..])
        .read_to_string(&mut unpacked)
        .unwrap();
    assert!(unpacked.ends_with("# EOF\n"), "{unpacked}");
    assert!(unpacked.contains("modelgate_request_duration_seconds_bucket"));
    println!(
        "this scrape: {} bytes, {} gzip-compressed",
        unpacked.len(),
        packed.len()
    );
    let plain = reqwest::Client::new()
        .get(collector.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    collector.stop().await;

    let (collector, text) = scrape(&[("MODELGATE_EMIT__PROMETHEUS__OUTCOMES", "merged")]).await;
    check("outcomes: merged", &text, 1, 1);
    assert!(
        !text.contains("outcome="),
        "merged histograms carry no outcome"
    );
    collector.stop().await;

    let (collector, text) = scrape(&[("MODELGATE_EMIT__PROMETHEUS__VERDICTS", "all")]).await;
    check("verdicts: all (the full state set)", &text, 3, 3);
    collector.stop().await;
}
