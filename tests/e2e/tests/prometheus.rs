//! The Prometheus, Alertmanager and Grafana examples against the real tools:
//! `promtool` and `amtool` check the example files, and a real Prometheus
//! (`/usr/bin/prometheus`, installed by `scripts/install-test-deps`) scrapes
//! the real `modelgate` binary every second with the example's
//! `examples/prometheus/rules.yml` loaded unchanged, while the lending
//! incident is replayed; the test waits for `ModelgateRegression` to fire for
//! candidate v1.3 and runs every PromQL expression of the Grafana dashboard.

// Test code: a panic with a message is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use modelgate::replay::{replay, ReplayOptions, Scenario};
use modelgate_e2e::prometheus::{label, tool, Prometheus};
use modelgate_e2e::{eventually, output_text, repo, Collector};
use serde_json::Value;

const ENDPOINTS: [&str; 2] = ["/risk-score", "/funding-approve"];
/// How long the alert may take to fire once the replay starts: the rule's
/// `for: 15s` plus scrapes and evaluations every second, with room for a
/// busy machine.
const FIRE_TIMEOUT: Duration = Duration::from_secs(90);

fn example(path: &str) -> PathBuf {
    let path = repo().join("examples").join(path);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// Runs a checking tool, asserts it succeeds, returns its output.
fn check(tool_name: &str, args: &[&str]) -> String {
    let output = Command::new(tool(tool_name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool_name}: {e}"));
    output_text(&format!("{tool_name} {args:?}"), &output)
}

/// Every `expr` in a Grafana dashboard (panels, rows, annotations).
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// A dashboard expression as Grafana sends it with every variable at "All".
fn grafana_expand(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$service", ".*")
        .replace("$endpoint", ".*")
        .replace("$version", ".*")
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(example("grafana/dashboard.json")).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("dashboard.json: {e}"))
}

#[test]
fn example_files_pass_promtool_amtool_and_json() {
    let rules = example("prometheus/rules.yml");
    let out = check("promtool", &["check", "rules", rules.to_str().unwrap()]);
    println!("{out}");
    // Resolves rule_files relative to the config, so it checks rules.yml too.
    let config = example("prometheus/prometheus.yml");
    let out = check("promtool", &["check", "config", config.to_str().unwrap()]);
    assert!(out.contains("1 rule files found"), "{out}");
    println!("{out}");
    let alertmanager = example("prometheus/alertmanager.yml");
    let out = check("amtool", &["check-config", alertmanager.to_str().unwrap()]);
    assert!(out.contains("2 receivers"), "{out}");
    println!("{out}");

    let dashboard = dashboard();
    let vars: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["datasource", "service", "endpoint", "version"]);
    let mut found = Vec::new();
    exprs(&dashboard, &mut found);
    for needed in [
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "modelgate_regression_active",
        "outcome!=\"ok\"",
    ] {
        assert!(
            found.iter().any(|e| e.contains(needed)),
            "no dashboard query with {needed}: {found:#?}"
        );
    }
    // Every panel queries the datasource variable, not a fixed datasource.
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_the_example_regression_alert_for_lending_v13() {
    let collector = Collector::start(&[]).await;
    // The example rules, unchanged: their `for: 15s` fits in FIRE_TIMEOUT.
    let rules = example("prometheus/rules.yml").canonicalize().unwrap();
    let prometheus = Prometheus::start(&[collector.admin], &rules).await;

    // Prometheus scrapes modelgate before anything is sent.
    let up = eventually(Duration::from_secs(20), || async {
        let result = prometheus.query("up{job=\"modelgate\"} == 1").await.ok()?;
        (!result.is_empty()).then_some(())
    })
    .await;
    assert!(
        up.is_some(),
        "prometheus does not scrape modelgate at {}:\n{}",
        collector.admin,
        prometheus.log()
    );

    let scenario = Scenario::load("lending").unwrap();
    let v13_starts = Duration::from_secs_f64(scenario.phases[0].requests as f64 / scenario.rate);
    let started = Instant::now();
    let sender = tokio::spawn({
        let options = ReplayOptions {
            endpoint: collector.grpc_url(),
            rate: None,
            ..ReplayOptions::default()
        };
        async move { replay(&scenario, &options).await }
    });

    // ModelgateRegression firing for v1.3 against v1.2 under the sla rule on
    // both endpoints (relative and errors follow a few requests later).
    let pending_seen: Cell<Option<Duration>> = Cell::new(None);
    let firing = eventually(FIRE_TIMEOUT, || {
        let prometheus = &prometheus;
        let pending_seen = &pending_seen;
        async move {
            let alerts = prometheus.alerts().await;
            let ours: Vec<Value> = alerts
                .into_iter()
                .filter(|a| {
                    label(a, "alertname") == "ModelgateRegression"
                        && label(a, "candidate_version") == "v1.3"
                        && label(a, "rule") == "sla"
                        && label(a, "severity") == "critical"
                })
                .collect();
            if pending_seen.get().is_none() && !ours.is_empty() {
                pending_seen.set(Some(started.elapsed()));
            }
            let firing: Vec<Value> = ours
                .into_iter()
                .filter(|a| a["state"] == "firing")
                .collect();
            ENDPOINTS
                .iter()
                .all(|ep| firing.iter().any(|a| label(a, "endpoint") == *ep))
                .then_some(firing)
        }
    })
    .await;
    let Some(firing) = firing else {
        panic!(
            "ModelgateRegression not firing for v1.3 on both endpoints within {FIRE_TIMEOUT:?}; alerts: {:#?}\nprometheus log:\n{}\nmodelgate /metrics:\n{}",
            prometheus.alerts().await,
            prometheus.log(),
            collector.metrics().await
        )
    };
    let fired = started.elapsed();
    println!(
        "ModelgateRegression (sla) firing in Prometheus on both endpoints {:.1} s after the replay started, {:.1} s after the first v1.3 request (pending after {:.1} s; the rule's for: 15s)",
        fired.as_secs_f64(),
        fired.saturating_sub(v13_starts).as_secs_f64(),
        pending_seen.get().unwrap_or(fired).as_secs_f64(),
    );
    for alert in &firing {
        assert_eq!(label(alert, "service_name"), "lending-api", "{alert:#}");
        assert_eq!(label(alert, "baseline_version"), "v1.2", "{alert:#}");
        assert_eq!(label(alert, "severity"), "critical", "{alert:#}");
        let summary = alert["annotations"]["summary"].as_str().unwrap_or("");
        let description = alert["annotations"]["description"].as_str().unwrap_or("");
        let verdict = alert["annotations"]["verdict"].as_str().unwrap_or("");
        println!("  {summary}\n    {description}\n    {verdict}");
        assert!(
            summary.contains("lending-api") && summary.contains("v1.3") && summary.contains("sla"),
            "{summary}"
        );
        assert!(
            description.contains("against baseline v1.2")
                && description.contains("x the SLA limit")
                && !description.contains("error"),
            "description without the ratio (or a template error): {description}"
        );
        assert!(
            verdict.starts_with(&format!("http://{}/api/v1/verdict?", collector.admin))
                && verdict.contains("candidate=v1.3"),
            "{verdict}"
        );
        // The dashboard opened on the alert's service, endpoint and version.
        let dashboard = alert["annotations"]["dashboard"].as_str().unwrap_or("");
        let endpoint = label(alert, "endpoint");
        let expected = format!("http://{}/?service=lending-api", collector.admin);
        assert!(
            dashboard.starts_with(&expected)
                && dashboard.ends_with("&version=v1.3")
                && (endpoint == "*"
                    || dashboard.contains(&format!("&endpoint={}", endpoint.replace('/', "%2F")))),
            "{dashboard}"
        );
    }
    // The link in the annotation answers.
    let verdict = firing[0]["annotations"]["verdict"].as_str().unwrap();
    let path = verdict.split_once(&collector.admin.to_string()).unwrap().1;
    assert_eq!(collector.get(path).await.0, 200, "{verdict}");

    let report = sender.await.unwrap().unwrap();
    assert_eq!(report.failed, 0);

    // The relative and errors rules fire too (they need about ten requests,
    // then the same 15 s), with their own reading of the ratio.
    let all = eventually(Duration::from_secs(60), || async {
        let alerts = prometheus.alerts().await;
        let firing: Vec<Value> = alerts
            .into_iter()
            .filter(|a| {
                label(a, "alertname") == "ModelgateRegression"
                    && label(a, "candidate_version") == "v1.3"
                    && a["state"] == "firing"
            })
            .collect();
        ENDPOINTS
            .iter()
            .all(|ep| {
                ["sla", "relative", "errors"].iter().all(|rule| {
                    firing
                        .iter()
                        .any(|a| label(a, "endpoint") == *ep && label(a, "rule") == *rule)
                })
            })
            .then_some(firing)
    })
    .await;
    let all = all.unwrap_or_else(|| panic!("not all six alerts fire for v1.3"));
    println!(
        "all six (2 endpoints x sla, relative, errors) firing {:.1} s after the replay started",
        started.elapsed().as_secs_f64()
    );
    for alert in &all {
        let description = alert["annotations"]["description"].as_str().unwrap_or("");
        let reading = match label(alert, "rule") {
            "relative" => "latency at",
            "errors" => "timeout and error rate up",
            _ => "x the SLA limit",
        };
        assert!(description.contains(reading), "{description}");
        if label(alert, "rule") != "sla" {
            println!("    {description}");
        }
    }

    // Nothing, not even pending, for v1.2.
    let alerts = prometheus.alerts().await;
    assert!(
        alerts
            .iter()
            .all(|a| label(a, "candidate_version") != "v1.2"),
        "{alerts:#?}"
    );
    // Every rule of the example evaluates without error.
    let groups = prometheus.api("/api/v1/rules", &[]).await.unwrap();
    let mut rules_seen = 0;
    for group in groups["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            rules_seen += 1;
            assert_eq!(rule["health"], "ok", "{rule:#}");
        }
    }
    assert_eq!(rules_seen, 7, "{groups:#}");
    // The recording rule's p95 for v1.3 is far over the 150 ms SLA.
    let p95 = eventually(Duration::from_secs(15), || async {
        let result = prometheus
            .query("modelgate:request_duration_seconds:p95_rate5m{model_version=\"v1.3\"}")
            .await
            .ok()?;
        (result.len() == 2).then_some(result)
    })
    .await
    .expect("recording rule p95 for v1.3 on both endpoints");
    for series in &p95 {
        let value: f64 = series["value"][1].as_str().unwrap().parse().unwrap();
        assert!(value > 0.5, "{series}");
    }

    // Every query of the Grafana dashboard runs, as Grafana sends it with
    // each variable at "All"; the latency and regression panels show data.
    let mut found = Vec::new();
    exprs(&dashboard(), &mut found);
    for expr in &found {
        let expanded = grafana_expand(expr);
        let result = prometheus
            .query(&expanded)
            .await
            .unwrap_or_else(|e| panic!("dashboard query {expanded}: {e}"));
        let needs_data = expr.contains("histogram_quantile(0.95")
            || expr.contains("modelgate_regression_active")
            || expr.contains("outcome!=\"ok\"");
        if needs_data {
            assert!(!result.is_empty(), "no data for {expanded}");
        }
    }
    println!("{} dashboard queries run", found.len());
}
