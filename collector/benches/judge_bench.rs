//! judge-bench: does the judge cry wolf, and how fast does it catch a slow
//! version? Continuous traffic is simulated through the real `Aggregator` and
//! `Judge` (default configuration) on a simulated clock, evaluated every
//! second as the collector does; beside it, on the same data, a reference
//! judge in the style of automated canary analysis.
//!
//! Run: `cargo bench -p modelgate-collector --bench judge-bench` (add `-- quick` for a
//! smaller run). The last line is
//! `judge-bench: aa_alerts_per_100_series_hours=X detect_1.5x_p95_within_300=Y% kenya_requests_to_alert=Z`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use modelgate_collector::aggregate::Aggregator;
use modelgate_collector::config::{AggregateConfig, JudgeConfig};
use modelgate_collector::extract::{EndpointKey, Outcome, Sample};
use modelgate_collector::judge::{AlertState, Judge, Rule};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

const T0: u64 = 1_763_658_000_000;
/// Candidate (canary) and baseline requests per second, per endpoint.
const CANDIDATE_RATE: u64 = 5;
const BASELINE_RATE: u64 = 45;

/// A latency model: draws (milliseconds, outcome) at simulated time `t_s`.
#[derive(Debug, Clone, Copy)]
enum Model {
    LogNormal {
        median: f64,
        sigma: f64,
        timeouts: f64,
    },
    Bimodal,
    Pareto {
        scale: f64,
        shape: f64,
    },
    /// Lognormal whose median drifts from 60 ms up by half and back every 2 h.
    Drifting,
    /// Lognormal with every value scaled by `factor`.
    Scaled {
        factor: f64,
    },
    /// Lognormal with the slowest 10% scaled by `factor` (p95 moves by it).
    Tail {
        factor: f64,
    },
}

const BASE: (f64, f64) = (60.0, 0.5);

impl Model {
    fn draw(self, rng: &mut StdRng, t_s: f64) -> (f64, Outcome) {
        let z: f64 = rng.sample(StandardNormal);
        let (ms, timeouts) = match self {
            Model::LogNormal {
                median,
                sigma,
                timeouts,
            } => (median * (sigma * z).exp(), timeouts),
            Model::Bimodal => {
                let (m, s) = if rng.random::<f64>() < 0.7 {
                    (40.0, 0.2)
                } else {
                    (120.0, 0.2)
                };
                (m * (s * z).exp(), 0.01)
            }
            Model::Pareto { scale, shape } => (
                scale / rng.random::<f64>().max(1e-12).powf(1.0 / shape),
                0.01,
            ),
            Model::Drifting => {
                let phase = (t_s / 7200.0 * std::f64::consts::TAU).sin().abs();
                (BASE.0 * (1.0 + 0.5 * phase) * (BASE.1 * z).exp(), 0.01)
            }
            Model::Scaled { factor } => (factor * BASE.0 * (BASE.1 * z).exp(), 0.01),
            Model::Tail { factor } => {
                let v = BASE.0 * (BASE.1 * z).exp();
                // z above the 90th percentile: the slowest tenth.
                (if z > 1.281_551_565_5 { v * factor } else { v }, 0.01)
            }
        };
        let outcome = if rng.random::<f64>() < timeouts {
            Outcome::Timeout
        } else {
            Outcome::Ok
        };
        (ms, outcome)
    }
}

fn lognormal(timeouts: f64) -> Model {
    Model::LogNormal {
        median: BASE.0,
        sigma: BASE.1,
        timeouts,
    }
}

fn endpoint(i: usize) -> EndpointKey {
    EndpointKey {
        service: "sim".into(),
        endpoint: format!("/e{i}"),
        dims: Vec::new(),
    }
}

fn sample(ep: &EndpointKey, version: &str, ms: f64, outcome: Outcome) -> Sample {
    Sample::request(
        ep.clone(),
        version,
        Duration::from_secs_f64(ms / 1e3),
        outcome,
        0,
    )
}

/// The judge of the default configuration; `comparative_only` moves the SLA
/// limit out of reach (A/A runs test false alarms of comparisons: the SLA
/// rule fires on absolute latency by design).
fn setup(comparative_only: bool) -> (Aggregator, Judge) {
    let agg = AggregateConfig::default();
    let mut judge = JudgeConfig::default();
    if comparative_only {
        judge.sla.limit = Duration::from_secs(60);
    }
    (
        Aggregator::new(agg, vec![100.0], Default::default(), T0),
        Judge::new(judge),
    )
}

/// Raw samples kept for the reference judge.
#[derive(Default, Clone)]
struct Raw {
    candidate: Vec<f64>,
    baseline: Vec<f64>,
}

/// One simulation: `endpoints` independent endpoints, baseline `v1` with
/// model `base` (warm for `warmup_s`), then candidate `v2` with `cand` for up
/// to `seconds`. Returns per endpoint: candidate requests and seconds at the
/// first firing alert on v2 (if any), alerts fired on v2, raw samples.
struct RunResult {
    first_alert: Vec<Option<(u64, u64, Rule)>>,
    alerts: u64,
    raw: Vec<Raw>,
}

/// One simulation's parameters.
struct Sim {
    seed: u64,
    endpoints: usize,
    base: Model,
    cand: Model,
    warmup_s: u64,
    seconds: u64,
    stop_at_alert: bool,
    comparative_only: bool,
    keep_raw: usize,
}

fn simulate(sim: Sim) -> RunResult {
    let Sim {
        seed,
        endpoints,
        base,
        cand,
        warmup_s,
        seconds,
        stop_at_alert,
        comparative_only,
        keep_raw,
    } = sim;
    let (mut agg, mut judge) = setup(comparative_only);
    let mut rng = StdRng::seed_from_u64(seed);
    let eps: Vec<EndpointKey> = (0..endpoints).map(endpoint).collect();
    let mut first_alert = vec![None; endpoints];
    let mut cand_requests = vec![0u64; endpoints];
    let mut raw = vec![Raw::default(); endpoints];
    let mut alerts = 0;
    let mut batch = Vec::new();
    for s in 0..warmup_s + seconds {
        let now = T0 + s * 1000;
        let t_s = s as f64;
        batch.clear();
        for (i, ep) in eps.iter().enumerate() {
            for _ in 0..BASELINE_RATE {
                let (ms, o) = base.draw(&mut rng, t_s);
                if s >= warmup_s && raw[i].baseline.len() < keep_raw * 9 {
                    raw[i].baseline.push(ms);
                }
                batch.push(sample(ep, "v1", ms, o));
            }
            if s >= warmup_s {
                for _ in 0..CANDIDATE_RATE {
                    let (ms, o) = cand.draw(&mut rng, t_s);
                    if raw[i].candidate.len() < keep_raw {
                        raw[i].candidate.push(ms);
                    }
                    cand_requests[i] += 1;
                    batch.push(sample(ep, "v2", ms, o));
                }
            }
        }
        agg.record(&batch, now);
        agg.expire(now);
        for t in judge.evaluate(&agg, now) {
            if t.alert().state == AlertState::Firing && t.key.candidate == "v2" {
                alerts += 1;
                let i: usize = t.key.endpoint.endpoint[2..].parse().unwrap();
                if first_alert[i].is_none() {
                    first_alert[i] = Some((cand_requests[i], s - warmup_s, t.key.rule));
                }
            }
        }
        if stop_at_alert && first_alert.iter().all(Option::is_some) {
            break;
        }
    }
    RunResult {
        first_alert,
        alerts,
        raw,
    }
}

/// Automated-canary-analysis style reference: one two-sided Mann-Whitney
/// test at 98% confidence on the raw samples at the end of the window; it
/// fails the candidate only when the Hodges-Lehmann interval excludes zero by
/// a quarter of the estimate and the mean ratio exceeds the allowed increase.
fn reference_fails(candidate: &[f64], baseline: &[f64], allowed_increase: f64) -> bool {
    if candidate.is_empty() || baseline.is_empty() {
        return false;
    }
    // The interval on raw pairwise differences.
    let mut diffs: Vec<f64> = Vec::with_capacity(candidate.len() * baseline.len());
    for c in candidate {
        for b in baseline {
            diffs.push(c - b);
        }
    }
    diffs.sort_by(f64::total_cmp);
    let (n1, n2) = (candidate.len() as f64, baseline.len() as f64);
    let pairs = n1 * n2;
    let z = 2.326_347_874; // two-sided 98%
    let k = (pairs / 2.0 - z * (pairs * (n1 + n2 + 1.0) / 12.0).sqrt())
        .floor()
        .max(0.0) as usize;
    let estimate = diffs[diffs.len() / 2];
    let (low, high) = (diffs[k], diffs[diffs.len() - 1 - k]);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let excludes_zero_by_a_quarter = estimate > 0.0 && low > 0.25 * estimate && high > 0.0;
    excludes_zero_by_a_quarter && mean(candidate) / mean(baseline) > allowed_increase
}

fn pct(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let started = std::time::Instant::now();
    let allowed_increase = 1.1;

    // A/A: continuous evaluation, false alerts per series-hour.
    let (endpoints, hours) = if quick { (10, 1) } else { (25, 2) };
    println!("## A/A: {endpoints} endpoints x {hours} h per model, evaluated every second (comparative rules; sla limit out of reach)");
    println!("| model | series-hours | modelgate alerts | per 100 series-hours | reference failures (one test per 5-min window) | per 100 series-hours |");
    println!("|---|---|---|---|---|---|");
    let mut aa_alerts = 0u64;
    let mut aa_hours = 0.0;
    let models = [
        ("lognormal", lognormal(0.01)),
        ("bimodal", Model::Bimodal),
        (
            "pareto (heavy tail)",
            Model::Pareto {
                scale: 30.0,
                shape: 2.5,
            },
        ),
        ("drifting", Model::Drifting),
    ];
    for (k, (name, model)) in models.iter().enumerate() {
        let r = simulate(Sim {
            seed: 100 + k as u64,
            endpoints,
            base: *model,
            cand: *model,
            warmup_s: 600,
            seconds: hours * 3600,
            stop_at_alert: false,
            comparative_only: true,
            keep_raw: 0,
        });
        let series_hours = (endpoints as u64 * hours) as f64;
        aa_alerts += r.alerts;
        aa_hours += series_hours;
        // The reference on fresh same-distribution windows: 5 minutes of
        // candidate traffic each, 12 per series-hour.
        let windows = if quick { 24 } else { 120 };
        let mut rng = StdRng::seed_from_u64(900 + k as u64);
        let n = (CANDIDATE_RATE * 300) as usize;
        let fails = (0..windows)
            .filter(|w| {
                let c: Vec<f64> = (0..n)
                    .map(|_| model.draw(&mut rng, *w as f64 * 300.0).0)
                    .collect();
                let b: Vec<f64> = (0..n)
                    .map(|_| model.draw(&mut rng, *w as f64 * 300.0).0)
                    .collect();
                reference_fails(&c, &b, allowed_increase)
            })
            .count();
        let ref_rate = fails as f64 / windows as f64 * 12.0 * 100.0;
        println!(
            "| {name} | {series_hours:.0} | {} | {:.2} | {fails} of {windows} windows | {ref_rate:.1} |",
            r.alerts,
            r.alerts as f64 / series_hours * 100.0
        );
    }
    let aa_rate = aa_alerts as f64 / aa_hours * 100.0;

    // Detection: shifts of the candidate against a lognormal baseline.
    let runs = if quick { 20 } else { 100 };
    let limit_s = 1000 / CANDIDATE_RATE;
    println!();
    println!("## Detection: {runs} runs per shift, candidate {CANDIDATE_RATE} req/s beside a baseline at {BASELINE_RATE} req/s, default config");
    println!("| shift | by 50 req | by 100 | by 300 | by 1000 | median requests to alert | median seconds | first rule | reference at 100 / 300 / 1000 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut detect_15_300 = 0.0;
    let shifts: Vec<(String, Model)> = [1.1, 1.25, 1.5, 2.0, 7.0]
        .iter()
        .map(|f| {
            (
                format!("{f}x all (median and p95)"),
                Model::Scaled { factor: *f },
            )
        })
        .chain(
            [1.1, 1.25, 1.5, 2.0, 7.0]
                .iter()
                .map(|f| (format!("{f}x tail only (p95)"), Model::Tail { factor: *f })),
        )
        .chain(
            [0.03, 0.05, 0.10]
                .iter()
                .map(|t| (format!("timeouts 1% -> {}%", t * 100.0), lognormal(*t))),
        )
        .collect();
    for (k, (name, model)) in shifts.iter().enumerate() {
        let r = simulate(Sim {
            seed: 5000 + k as u64,
            endpoints: runs,
            base: lognormal(0.01),
            cand: *model,
            warmup_s: 600,
            seconds: limit_s,
            stop_at_alert: true,
            comparative_only: false,
            keep_raw: 1000,
        });
        let requests: Vec<u64> = r.first_alert.iter().flatten().map(|a| a.0).collect();
        let seconds: Vec<u64> = r.first_alert.iter().flatten().map(|a| a.1).collect();
        let by = |n: u64| requests.iter().filter(|q| **q <= n).count() as f64 / runs as f64;
        let mut rules: Vec<&str> = r
            .first_alert
            .iter()
            .flatten()
            .map(|a| a.2.as_str())
            .collect();
        rules.sort_unstable();
        rules.dedup();
        let reference = |n: usize| {
            r.raw
                .iter()
                .filter(|raw| {
                    reference_fails(
                        &raw.candidate[..n.min(raw.candidate.len())],
                        &raw.baseline[..(n * 9).min(raw.baseline.len())],
                        allowed_increase,
                    )
                })
                .count() as f64
                / runs as f64
        };
        if let Model::Scaled { factor } = model {
            if (*factor - 1.5).abs() < 1e-9 {
                detect_15_300 = by(300);
            }
        }
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} |",
            pct(by(50)),
            pct(by(100)),
            pct(by(300)),
            pct(by(1000)),
            median(requests).map_or("-".into(), |v| v.to_string()),
            median(seconds).map_or("-".into(), |v| v.to_string()),
            rules.join(","),
            pct(reference(100)),
            pct(reference(300)),
            pct(reference(1000)),
        );
    }

    // The lending incident at its own pace: v1.2 every few seconds for half
    // an hour, then v1.3 requests a minute apart on each endpoint.
    println!();
    println!("## The lending incident, default config (v1.3 requests counted per endpoint when each rule fires)");
    let (mut agg, mut judge) = setup(false);
    let mut rng = StdRng::seed_from_u64(20261120);
    let eps = [endpoint(0), endpoint(1)];
    let mut v13 = [0u64; 2];
    let mut fired: Vec<(usize, Rule, u64)> = Vec::new();
    for s in 0..3600u64 {
        let now = T0 + s * 1000;
        let mut batch = Vec::new();
        for (i, ep) in eps.iter().enumerate() {
            if s % 5 == i as u64 {
                batch.push(sample(
                    ep,
                    "v1.2",
                    rng.random_range(85.0..119.0),
                    Outcome::Ok,
                ));
            }
            if s >= 1800 && (s - 1800) % 60 == 30 * i as u64 {
                let outcome = if rng.random::<f64>() < 0.8 {
                    Outcome::Timeout
                } else {
                    Outcome::Ok
                };
                batch.push(sample(ep, "v1.3", rng.random_range(700.0..820.0), outcome));
                v13[i] += 1;
            }
        }
        agg.record(&batch, now);
        agg.expire(now);
        for t in judge.evaluate(&agg, now) {
            if t.alert().state == AlertState::Firing && t.key.candidate == "v1.3" {
                let i: usize = t.key.endpoint.endpoint[2..].parse().unwrap();
                fired.push((i, t.key.rule, v13[i]));
            }
        }
    }
    println!("| endpoint | rule | v1.3 requests when it fired |");
    println!("|---|---|---|");
    for (i, rule, n) in &fired {
        println!(
            "| {} | {rule} | {n} |",
            ["/risk-score", "/funding-approve"][*i]
        );
    }
    let kenya = fired
        .iter()
        .filter(|f| f.1 == Rule::Sla)
        .map(|f| f.2)
        .max()
        .unwrap_or(0);
    println!();
    println!("(finished in {:.0} s)", started.elapsed().as_secs_f64());
    println!(
        "judge-bench: aa_alerts_per_100_series_hours={aa_rate:.2} detect_1.5x_p95_within_300={:.0}% kenya_requests_to_alert={kenya}",
        detect_15_300 * 100.0
    );
}
