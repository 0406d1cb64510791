//! judge-bench: does the judge cry wolf, how fast does it catch a slow
//! version and at which severity, and when does it dare say PASS?
//! Continuous traffic is simulated through the real `Aggregator` and `Judge`
//! (default configuration) on a simulated clock, evaluated every second as
//! the collector does; verdicts are read through the API's own view
//! (`emit::views::verdict`, what `modelgate gate` sees). Beside it, on the
//! same samples, a reference judge in the style of automated canary
//! analysis (Kayenta's Mann-Whitney classifier).
//!
//! Sections: A/A false alerts per severity (lognormal, bimodal, heavy tail,
//! drifting, diurnal), how often and how soon A/A reaches PASS, detection
//! per severity (whole-distribution, median-only, tail-only and share
//! shifts, timeouts), the lending incident and the e-commerce incident.
//!
//! Run: `cargo bench -p modelgate-collector --bench judge-bench` (add
//! `-- quick` for a smaller run). The last line is
//! `judge-bench: aa_false_alerts_per_100_series_hours=W/C detect_1.2x_warning_by_1000=X% detect_1.5x_critical_by_300=Y% lending_requests_to_critical=L ecommerce_requests_to_critical=E aa_pass_reached=P%`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use modelgate_collector::aggregate::Aggregator;
use modelgate_collector::config::{AggregateConfig, JudgeConfig};
use modelgate_collector::emit::views::{self, VerdictQuery};
use modelgate_collector::extract::{EndpointKey, Outcome, Sample};
use modelgate_collector::judge::{
    AlertState, Judge, Resolution, Rule, Severity, Transition, Verdict, ALL_ENDPOINTS,
};
use modelgate_collector::phase::{InputBand, Phase};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use statrs::distribution::{ChiSquared, ContinuousCDF};

const T0: u64 = 1_763_658_000_000;
/// Candidate (canary) and baseline requests per second, per endpoint.
const CANDIDATE_RATE: f64 = 5.0;
const BASELINE_RATE: f64 = 45.0;
/// Baseline-only traffic before the candidate starts.
const WARMUP_S: u64 = 600;
/// One simulated day of the diurnal model: 24 h compressed into 2 h.
const DAY_S: f64 = 7200.0;
/// The reference's allowed increase of the mean (10%).
const ALLOWED_INCREASE: f64 = 1.1;
/// The reference's analysis interval in A/A (one test per 5 minutes).
const REFERENCE_WINDOW_S: u64 = 300;
/// Candidate request counts the detection table reports at.
const CHECKPOINTS: [u64; 4] = [50, 100, 300, 1000];
const CANDIDATE: &str = "v2";

/// Lognormal median (ms) and sigma of the baseline the shifts start from.
const BASE: (f64, f64) = (60.0, 0.5);
/// z of the 90th percentile of the standard normal.
const Z90: f64 = 1.281_551_565_5;

/// A latency model: draws (milliseconds, outcome) at simulated time `t_s`.
#[derive(Debug, Clone, Copy)]
enum Model {
    LogNormal {
        median: f64,
        sigma: f64,
        timeouts: f64,
    },
    /// 70% fast (40 ms), 30% slow (120 ms): a cache in front of a model.
    Bimodal,
    Pareto {
        scale: f64,
        shape: f64,
    },
    /// Lognormal whose median drifts from 60 ms up by half and back every 2 h.
    Drifting,
    /// A day's traffic (24 h compressed into [`DAY_S`]): the request rate
    /// follows a sine from 10% (night) to 100% (peak) of its rate, and
    /// latency rises with load (median 20% higher at peak than at night).
    Diurnal,
    /// The baseline lognormal with every value scaled by `factor`.
    Scaled {
        factor: f64,
    },
    /// The slowest 10% scaled by `factor` (p95 and p99 move by it).
    Tail {
        factor: f64,
    },
    /// Median-only: the faster half scaled by `factor`, fading to 1x at
    /// p90; p90 and above unchanged.
    Body {
        factor: f64,
    },
    /// A share of requests `factor` times slower (a bimodal middle).
    Share {
        share: f64,
        factor: f64,
    },
}

/// Diurnal load at `t_s`: 0.1 at night, 1 at peak.
fn load(t_s: f64) -> f64 {
    0.55 - 0.45 * (t_s / DAY_S * std::f64::consts::TAU).cos()
}

impl Model {
    fn draw(self, rng: &mut StdRng, t_s: f64) -> (f64, Outcome) {
        let z: f64 = rng.sample(StandardNormal);
        let base = BASE.0 * (BASE.1 * z).exp();
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
                (base * (1.0 + 0.5 * phase), 0.01)
            }
            Model::Diurnal => {
                let busy = (load(t_s) - 0.1) / 0.9;
                (base * (1.0 + 0.2 * busy), 0.01)
            }
            Model::Scaled { factor } => (factor * base, 0.01),
            Model::Tail { factor } => (if z > Z90 { base * factor } else { base }, 0.01),
            Model::Body { factor } => {
                let fade = (1.0 - z.max(0.0) / Z90).max(0.0);
                (base * factor.powf(fade), 0.01)
            }
            Model::Share { share, factor } => {
                let slow = rng.random::<f64>() < share;
                (if slow { base * factor } else { base }, 0.01)
            }
        };
        let outcome = if rng.random::<f64>() < timeouts {
            Outcome::Timeout
        } else {
            Outcome::Ok
        };
        (ms, outcome)
    }

    /// The request rate at `t_s`, as a fraction of the nominal one.
    fn rate(self, t_s: f64) -> f64 {
        match self {
            Model::Diurnal => load(t_s),
            _ => 1.0,
        }
    }
}

fn lognormal(timeouts: f64) -> Model {
    Model::LogNormal {
        median: BASE.0,
        sigma: BASE.1,
        timeouts,
    }
}

/// Requests in one second at `rate` per second (the fraction rounded at
/// random, so the mean is `rate`).
fn arrivals(rng: &mut StdRng, rate: f64) -> usize {
    let whole = rate.floor();
    let frac = rate - whole;
    whole as usize + usize::from(frac > 0.0 && rng.random::<f64>() < frac)
}

fn endpoint(service: &str, name: &str) -> EndpointKey {
    EndpointKey {
        service: service.into(),
        endpoint: name.into(),
        dims: Vec::new(),
        phase: Phase::Request,
        input: None,
    }
}

fn sample(ep: &EndpointKey, version: &str, ms: f64, outcome: Outcome, now: u64) -> Sample {
    Sample::request(
        ep.clone(),
        version,
        Duration::from_secs_f64(ms / 1e3),
        outcome,
        now,
    )
}

/// The judge of the default configuration; `comparative_only` moves the SLA
/// limit out of reach (the A/A and detection runs measure the comparisons:
/// the SLA rule fires on absolute latency by design, and the baseline's own
/// p95, 136 ms, is already over its warning level of 120 ms).
fn setup(comparative_only: bool) -> (Aggregator, Judge) {
    let mut judge = JudgeConfig::default();
    if comparative_only {
        judge.sla.limit = Duration::from_secs(60);
    }
    (
        Aggregator::new(
            AggregateConfig::default(),
            vec![100.0],
            Default::default(),
            T0,
        ),
        Judge::new(judge),
    )
}

/// One step of the collector's loop: record a batch, expire, judge.
fn step(agg: &mut Aggregator, judge: &mut Judge, batch: &[Sample], now: u64) -> Vec<Transition> {
    agg.record(batch, now);
    agg.expire(now);
    judge.evaluate(agg, now)
}

/// An alert that fired.
#[derive(Debug, Clone)]
struct Fired {
    /// Candidate requests on its series when it fired.
    requests: u64,
    rule: Rule,
    severity: Severity,
    detail: String,
}

impl Fired {
    fn of(t: &Transition, requests: u64) -> Self {
        Self {
            requests,
            rule: t.key.rule,
            severity: t.severity,
            detail: t.judgement.result.evidence.detail.clone(),
        }
    }
}

/// What the judge did to one candidate series: an endpoint, or the
/// version across its endpoints (endpoint `*`).
#[derive(Debug, Default, Clone)]
struct SeriesLog {
    /// Candidate requests so far.
    requests: u64,
    /// Alerts fired, per severity.
    fired: [u64; 2],
    /// The first alert at each severity or above (index 0: warning or
    /// critical; 1: critical).
    first: [Option<Fired>; 2],
    /// Candidate requests when the verdict first was PASS.
    first_pass: Option<u64>,
    /// Evaluations (seconds) with a verdict, and those that said PASS.
    judged_s: u64,
    pass_s: u64,
}

impl SeriesLog {
    fn record(&mut self, t: &Transition) {
        self.fired[t.severity.index()] += 1;
        let f = Fired::of(t, self.requests);
        if self.first[0].is_none() {
            self.first[0] = Some(f.clone());
        }
        if t.severity == Severity::Critical && self.first[1].is_none() {
            self.first[1] = Some(f);
        }
    }

    fn verdict(&mut self, v: Verdict) {
        self.judged_s += 1;
        if v == Verdict::Pass {
            self.pass_s += 1;
            self.first_pass.get_or_insert(self.requests);
        }
    }
}

/// Raw samples kept for the reference judge.
#[derive(Debug, Default, Clone)]
struct Raw {
    candidate: Vec<f64>,
    baseline: Vec<f64>,
}

/// One simulation: `services` independent services of `endpoints`
/// endpoints each, baseline `v1` with model `base` (alone for
/// [`WARMUP_S`]), then candidate `v2` with `cand` for `seconds`.
struct Sim {
    seed: u64,
    services: usize,
    endpoints: usize,
    base: Model,
    cand: Model,
    seconds: u64,
    /// Raw candidate requests kept per endpoint for the reference (and nine
    /// times as many baseline ones); 0: none.
    keep_raw: usize,
    /// Run the reference on every endpoint's 5-minute windows.
    reference_windows: bool,
    /// What the series measure: the request, or one phase of it.
    phase: Phase,
    /// A first token's prompts (each request's band of input sizes); none
    /// for every other run.
    prompts: Option<Prompts>,
}

/// A first token's input sizes in a run: each request's band drawn from
/// [`BAND_MIX`], the candidate's one band longer with probability
/// `longer` (3x longer prompts move a prompt 0.79 of a 4x band), its time
/// the model's draw times its band's [`BAND_PREFILL`].
#[derive(Debug, Clone, Copy)]
struct Prompts {
    longer: f64,
    /// The samples carry their band (else all sizes mix, as before
    /// bands).
    banded: bool,
}

/// The baseline's share of requests per band of input sizes.
const BAND_MIX: [f64; 4] = [0.4, 0.3, 0.2, 0.1];

/// Time to the first token per band, relative to the shortest.
const BAND_PREFILL: [f64; 5] = [1.0, 2.5, 7.0, 20.0, 50.0];

impl Prompts {
    /// One request's band, and its key.
    fn draw(self, rng: &mut StdRng, ep: &EndpointKey, candidate: bool) -> (usize, EndpointKey) {
        let u: f64 = rng.random();
        let mut band = 0;
        let mut below = BAND_MIX[0];
        while u >= below && band + 1 < BAND_MIX.len() {
            band += 1;
            below += BAND_MIX[band];
        }
        if candidate && rng.random::<f64>() < self.longer {
            band += 1;
        }
        let key = EndpointKey {
            input: self.banded.then_some(InputBand::ALL[band]),
            ..ep.clone()
        };
        (band, key)
    }
}

struct SimResult {
    /// Endpoint series (service-major), then one version-wide series per
    /// service (when services have two endpoints or more).
    series: Vec<SeriesLog>,
    /// Endpoint series in `series`.
    endpoint_series: usize,
    /// Alerts fired on the baseline itself.
    baseline_alerts: u64,
    raw: Vec<Raw>,
    /// Reference tests run on 5-minute windows, and failures.
    reference: (u64, u64),
    /// Seconds of candidate traffic simulated.
    seconds: u64,
}

fn simulate(sim: &Sim) -> SimResult {
    let (mut agg, mut judge) = setup(true);
    let mut rng = StdRng::seed_from_u64(sim.seed);
    let names: Vec<String> = (0..sim.services).map(|i| format!("svc{i}")).collect();
    let eps: Vec<EndpointKey> = names
        .iter()
        .flat_map(|s| {
            (0..sim.endpoints).map(move |e| endpoint(s, &format!("/e{e}")).with_phase(sim.phase))
        })
        .collect();
    let version_wide = sim.endpoints >= 2;
    let mut index: HashMap<(String, String), usize> = eps
        .iter()
        .enumerate()
        .map(|(i, e)| ((e.service.clone(), e.endpoint.clone()), i))
        .collect();
    if version_wide {
        for (i, s) in names.iter().enumerate() {
            index.insert((s.clone(), ALL_ENDPOINTS.into()), eps.len() + i);
        }
    }
    let n_series = eps.len() + if version_wide { names.len() } else { 0 };
    let mut series = vec![SeriesLog::default(); n_series];
    let mut raw = vec![Raw::default(); eps.len()];
    let mut windows = vec![Raw::default(); eps.len()];
    let mut reference = (0, 0);
    let mut baseline_alerts = 0;
    let mut batch = Vec::new();
    let mut ran = 0;
    for s in 0..WARMUP_S + sim.seconds {
        let now = T0 + s * 1000;
        let t_s = s as f64;
        let live = s >= WARMUP_S;
        batch.clear();
        for (i, ep) in eps.iter().enumerate() {
            for _ in 0..arrivals(&mut rng, BASELINE_RATE * sim.base.rate(t_s)) {
                let (ms, o) = sim.base.draw(&mut rng, t_s);
                if let Some(p) = sim.prompts {
                    let (band, key) = p.draw(&mut rng, ep, false);
                    batch.push(sample(&key, "v1", ms * BAND_PREFILL[band], o, now));
                    continue;
                }
                if live && raw[i].baseline.len() < sim.keep_raw * 9 {
                    raw[i].baseline.push(ms);
                }
                if live && sim.reference_windows {
                    windows[i].baseline.push(ms);
                }
                batch.push(sample(ep, "v1", ms, o, now));
            }
            if !live {
                continue;
            }
            for _ in 0..arrivals(&mut rng, CANDIDATE_RATE * sim.cand.rate(t_s)) {
                let (ms, o) = sim.cand.draw(&mut rng, t_s);
                if let Some(p) = sim.prompts {
                    let (band, key) = p.draw(&mut rng, ep, true);
                    series[i].requests += 1;
                    if version_wide {
                        series[eps.len() + i / sim.endpoints].requests += 1;
                    }
                    batch.push(sample(&key, CANDIDATE, ms * BAND_PREFILL[band], o, now));
                    continue;
                }
                if raw[i].candidate.len() < sim.keep_raw {
                    raw[i].candidate.push(ms);
                }
                if sim.reference_windows {
                    windows[i].candidate.push(ms);
                }
                series[i].requests += 1;
                if version_wide {
                    series[eps.len() + i / sim.endpoints].requests += 1;
                }
                batch.push(sample(ep, CANDIDATE, ms, o, now));
            }
        }
        agg.record(&batch, now);
        agg.expire(now);
        // Before the candidate there is nothing to compare: judge once a
        // minute (the baseline's own rules), then every second.
        if !live && s % 60 != 0 {
            continue;
        }
        for t in judge.evaluate(&agg, now) {
            if t.alert().state != AlertState::Firing {
                continue;
            }
            if t.key.candidate != CANDIDATE {
                baseline_alerts += 1;
                continue;
            }
            let key = (
                t.key.endpoint.service.clone(),
                t.key.endpoint.endpoint.clone(),
            );
            series[index[&key]].record(&t);
        }
        if !live {
            continue;
        }
        ran = s + 1 - WARMUP_S;
        for (si, name) in names.iter().enumerate() {
            let query = VerdictQuery {
                service: name.clone(),
                candidate: CANDIDATE.into(),
                ..Default::default()
            };
            let v = views::verdict(&agg, &judge, &query, None, now);
            for scope in &v.endpoints {
                series[index[&(name.clone(), scope.endpoint.clone())]].verdict(scope.verdict);
            }
            if version_wide {
                // What the gate acts on: the version's verdict.
                series[eps.len() + si].verdict(v.verdict);
            }
        }
        if sim.reference_windows && ran % REFERENCE_WINDOW_S == 0 {
            for w in &mut windows {
                reference.0 += 1;
                reference.1 += u64::from(reference_fails(&w.candidate, &w.baseline));
                *w = Raw::default();
            }
        }
    }
    SimResult {
        series,
        endpoint_series: eps.len(),
        baseline_alerts,
        raw,
        reference,
        seconds: ran,
    }
}

/// Automated-canary-analysis style reference: one two-sided Mann-Whitney
/// test at 98% confidence on the raw samples; it fails the candidate only
/// when the Hodges-Lehmann interval excludes zero by a quarter of the
/// estimate and the mean ratio exceeds the allowed increase
/// ([`ALLOWED_INCREASE`]).
fn reference_fails(candidate: &[f64], baseline: &[f64]) -> bool {
    if candidate.is_empty() || baseline.is_empty() {
        return false;
    }
    let sorted = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (c, b) = (sorted(candidate), sorted(baseline));
    // The interval on the pairwise differences, ranked.
    let pairs_len = c.len() * b.len();
    let (n1, n2) = (c.len() as f64, b.len() as f64);
    let pairs = n1 * n2;
    let z = 2.326_347_874; // two-sided 98%
    let k = (pairs / 2.0 - z * (pairs * (n1 + n2 + 1.0) / 12.0).sqrt())
        .floor()
        .max(0.0) as usize;
    let estimate = kth_difference(&c, &b, pairs_len / 2);
    let (low, high) = (
        kth_difference(&c, &b, k),
        kth_difference(&c, &b, pairs_len - 1 - k),
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let excludes_zero_by_a_quarter = estimate > 0.0 && low > 0.25 * estimate && high > 0.0;
    excludes_zero_by_a_quarter && mean(candidate) / mean(baseline) > ALLOWED_INCREASE
}

/// The `k`-th smallest (from 0) of the pairwise differences `c[i] - b[j]`
/// of two ascending slices: the value a sort of all of them puts at `k`,
/// without building them (13.5 million pairs for one 5-minute window).
/// Bisection over the differences' f64 values in their total order, each
/// step counting the differences at or under a value in O(n + m): for a
/// fixed `c[i]` they fall as `b[j]` grows, and rise with `c[i]`.
fn kth_difference(c: &[f64], b: &[f64], k: usize) -> f64 {
    let at_most = |d: f64| {
        let (mut j, mut count) = (0, 0);
        for &ci in c {
            while j < b.len() && ci - b[j] > d {
                j += 1;
            }
            count += b.len() - j;
        }
        count
    };
    // f64 <-> u64 keys in the same (total) order.
    let key = |x: f64| {
        let bits = x.to_bits();
        if bits >> 63 == 1 {
            !bits
        } else {
            bits | 1 << 63
        }
    };
    let value = |k: u64| f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k });
    let (mut lo, mut hi) = (key(c[0] - b[b.len() - 1]), key(c[c.len() - 1] - b[0]));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if at_most(value(mid)) > k {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    value(lo)
}

/// [`kth_difference`] must give exactly what sorting every difference
/// gives (the reference as it was written): checked on random small
/// samples, with ties, before any figure is printed.
fn check_kth_difference() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..300 {
        let draw = |rng: &mut StdRng, n: usize| -> Vec<f64> {
            let mut v: Vec<f64> = (0..n)
                .map(|_| (rng.random::<f64>() * 40.0).round() / 4.0)
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (n, m) = (rng.random_range(1..30), rng.random_range(1..60));
        let (c, b) = (draw(&mut rng, n), draw(&mut rng, m));
        let mut all: Vec<f64> = c
            .iter()
            .flat_map(|x| b.iter().map(move |y| x - y))
            .collect();
        all.sort_by(f64::total_cmp);
        for k in [0, all.len() / 3, all.len() / 2, all.len() - 1] {
            assert_eq!(kth_difference(&c, &b, k), all[k], "k={k} of {}", all.len());
        }
    }
}

/// Runs `f` on every item on the machine's cores; results in item order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, items.len().max(1));
    let next = AtomicUsize::new(0);
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= items.len() {
                            return mine;
                        }
                        mine.push((i, f(&items[i])));
                    }
                })
            })
            .collect();
        for w in workers {
            for (i, r) in w.join().unwrap() {
                out[i] = Some(r);
            }
        }
    });
    out.into_iter().map(Option::unwrap).collect()
}

fn pct(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

/// The median of `values` over all `of` runs, a run without a value
/// counting as never (so more than half without one is "> limit").
fn median_or_never(mut values: Vec<u64>, of: usize, limit: u64) -> String {
    if values.len() * 2 <= of {
        return format!("> {limit}");
    }
    values.sort_unstable();
    values[of / 2].to_string()
}

/// Events per 100 units, with the exact one-sided 95% Poisson upper bound.
fn rate_per_100(events: u64, units: f64) -> String {
    let upper = ChiSquared::new(2.0 * events as f64 + 2.0)
        .unwrap()
        .inverse_cdf(0.95)
        / 2.0;
    format!(
        "{:.2} (95% upper {:.2})",
        events as f64 / units * 100.0,
        upper / units * 100.0
    )
}

/// How much the candidate's quantiles moved against the baseline's, by
/// drawing both models.
fn moved(base: Model, cand: Model) -> String {
    let mut rng = StdRng::seed_from_u64(42);
    let mut draw = |m: Model| {
        let mut v: Vec<f64> = (0..200_000).map(|_| m.draw(&mut rng, 0.0).0).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (b, c) = (draw(base), draw(cand));
    let q = |v: &[f64], q: f64| v[(q * v.len() as f64) as usize];
    [0.5, 0.95, 0.99]
        .iter()
        .map(|p| format!("{:.2}", q(&c, *p) / q(&b, *p)))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Totals of the A/A section, for the last line.
#[derive(Default)]
struct AaTotals {
    series_hours: f64,
    fired: [u64; 2],
    reference_windows: u64,
    reference_fails: u64,
    endpoint_series: usize,
    reached_pass: usize,
}

fn aa(quick: bool) -> AaTotals {
    let (services, hours) = if quick { (5, 1) } else { (20, 2) };
    let endpoints = 2;
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
        ("diurnal", Model::Diurnal),
    ];
    let sims: Vec<Sim> = models
        .iter()
        .enumerate()
        .map(|(k, (_, model))| Sim {
            seed: 100 + k as u64,
            services,
            endpoints,
            base: *model,
            cand: *model,
            seconds: hours * 3600,
            keep_raw: 0,
            reference_windows: true,
            phase: Phase::Request,
            prompts: None,
        })
        .collect();
    let results = par_map(&sims, simulate);

    println!("## A/A: false alerts, {services} services x {endpoints} endpoints x {hours} h per model, evaluated every second (comparative rules; sla limit out of reach)");
    println!("Series: each endpoint's candidate and each version across its endpoints (endpoint \"*\"). An alert is a firing at that severity; the reference runs one test per endpoint and 5-minute window (12 per series-hour).");
    println!();
    println!("| model | series-hours (endpoint + version-wide) | warning alerts | per 100 series-hours | critical alerts | per 100 series-hours | reference failures | per 100 endpoint-hours |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut totals = AaTotals::default();
    let mut examples = Vec::new();
    let mut baseline_alerts = 0;
    for ((name, _), r) in models.iter().zip(&results) {
        let hours = r.seconds as f64 / 3600.0;
        let series_hours = r.series.len() as f64 * hours;
        let fired = [0, 1].map(|s| r.series.iter().map(|l| l.fired[s]).sum::<u64>());
        let (windows, fails) = r.reference;
        let endpoint_hours = windows as f64 * REFERENCE_WINDOW_S as f64 / 3600.0;
        println!(
            "| {name} | {series_hours:.0} ({:.0} + {:.0}) | {} | {} | {} | {} | {fails} of {windows} windows | {} |",
            r.endpoint_series as f64 * hours,
            (r.series.len() - r.endpoint_series) as f64 * hours,
            fired[0],
            rate_per_100(fired[0], series_hours),
            fired[1],
            rate_per_100(fired[1], series_hours),
            rate_per_100(fails, endpoint_hours),
        );
        totals.series_hours += series_hours;
        totals.fired[0] += fired[0];
        totals.fired[1] += fired[1];
        totals.reference_windows += windows;
        totals.reference_fails += fails;
        for (i, l) in r.series.iter().enumerate() {
            let scope = if i < r.endpoint_series {
                "endpoint"
            } else {
                "version-wide"
            };
            // The first alert, and the first critical one if that came later.
            let critical_later = l.first[0]
                .as_ref()
                .is_some_and(|f| f.severity != Severity::Critical);
            let later = l.first[1].as_ref().filter(|_| critical_later);
            for f in l.first[0].iter().chain(later) {
                examples.push((*name, scope, f.clone()));
            }
        }
        baseline_alerts += r.baseline_alerts;
    }
    let ref_hours = totals.reference_windows as f64 * REFERENCE_WINDOW_S as f64 / 3600.0;
    println!(
        "| all | {:.0} | {} | {} | {} | {} | {} of {} windows | {} |",
        totals.series_hours,
        totals.fired[0],
        rate_per_100(totals.fired[0], totals.series_hours),
        totals.fired[1],
        rate_per_100(totals.fired[1], totals.series_hours),
        totals.reference_fails,
        totals.reference_windows,
        rate_per_100(totals.reference_fails, ref_hours),
    );
    println!();
    println!("Alerts on the baseline itself (its absolute rules): {baseline_alerts}.");
    if !examples.is_empty() {
        println!();
        println!(
            "False alerts (the first on each series that had one, and its first critical one):"
        );
        let mut by: BTreeMap<(&str, &str, Rule, Severity), (usize, String)> = BTreeMap::new();
        for (model, scope, f) in &examples {
            let e = by
                .entry((model, scope, f.rule, f.severity))
                .or_insert((0, f.detail.clone()));
            e.0 += 1;
        }
        for ((model, scope, rule, severity), (n, detail)) in by {
            println!("- {model}, {scope}, {rule}, {severity}: {n} series; e.g. \"{detail}\"");
        }
    }

    println!();
    println!("## A/A: PASS (it needs the power to have seen each rule's critical effect)");
    println!("| model | endpoint series reaching PASS | median candidate requests at the first PASS | evaluations in PASS (endpoint series) | versions reaching PASS (the gate's verdict) | median candidate requests at the first PASS (all endpoints) |");
    println!("|---|---|---|---|---|---|");
    for ((name, _), r) in models.iter().zip(&results) {
        let (eps, versions) = r.series.split_at(r.endpoint_series);
        let reached = |logs: &[SeriesLog]| logs.iter().filter_map(|l| l.first_pass).collect();
        let at_ep: Vec<u64> = reached(eps);
        let at_v: Vec<u64> = reached(versions);
        let judged: u64 = eps.iter().map(|l| l.judged_s).sum();
        let passing: u64 = eps.iter().map(|l| l.pass_s).sum();
        let limit = |logs: &[SeriesLog]| logs.iter().map(|l| l.requests).max().unwrap_or(0);
        println!(
            "| {name} | {} of {} | {} | {} | {} of {} | {} |",
            at_ep.len(),
            eps.len(),
            median_or_never(at_ep.clone(), eps.len(), limit(eps)),
            pct(passing as f64 / judged.max(1) as f64),
            at_v.len(),
            versions.len(),
            median_or_never(at_v, versions.len(), limit(versions)),
        );
        totals.endpoint_series += eps.len();
        totals.reached_pass += at_ep.len();
    }
    totals
}

/// The share of `runs` whose first alert at severity index `s` (0:
/// warning or above, 1: critical) came within each of [`CHECKPOINTS`]
/// candidate requests.
fn alerted_by(logs: &[SeriesLog], s: usize, runs: usize) -> Vec<f64> {
    CHECKPOINTS
        .iter()
        .map(|n| {
            let hit = logs
                .iter()
                .filter(|l| l.first[s].as_ref().is_some_and(|f| f.requests <= *n))
                .count();
            hit as f64 / runs as f64
        })
        .collect()
}

/// The median candidate requests to the first alert at severity index `s`
/// over `runs` (see [`median_or_never`]).
fn median_to_alert(logs: &[SeriesLog], s: usize, runs: usize, limit: u64) -> String {
    let at: Vec<u64> = logs
        .iter()
        .filter_map(|l| l.first[s].as_ref().map(|f| f.requests))
        .collect();
    median_or_never(at, runs, limit)
}

/// Detection figures the last line reports.
#[derive(Default)]
struct DetectTotals {
    warning_12_by_1000: f64,
    critical_15_by_300: f64,
}

fn detection(quick: bool) -> DetectTotals {
    let runs = if quick { 20 } else { 100 };
    let limit = *CHECKPOINTS.last().unwrap();
    let seconds = (limit as f64 / CANDIDATE_RATE) as u64;
    let base = lognormal(0.01);
    let mut shifts: Vec<(String, Model)> = Vec::new();
    for f in [1.1, 1.2, 1.5, 2.0] {
        shifts.push((
            format!("{f}x whole distribution"),
            Model::Scaled { factor: f },
        ));
    }
    for f in [1.5, 2.0] {
        shifts.push((format!("{f}x median-only"), Model::Body { factor: f }));
    }
    for f in [1.25, 1.5, 2.0] {
        shifts.push((
            format!("{f}x tail-only (slowest 10%)"),
            Model::Tail { factor: f },
        ));
    }
    shifts.push((
        "middle: 20% of requests 5x slower".into(),
        Model::Share {
            share: 0.2,
            factor: 5.0,
        },
    ));
    shifts.push((
        "middle: 10% of requests 2x slower".into(),
        Model::Share {
            share: 0.1,
            factor: 2.0,
        },
    ));
    for t in [0.03, 0.05, 0.10] {
        shifts.push((format!("timeouts 1% -> {:.0}%", t * 100.0), lognormal(t)));
    }
    let sims: Vec<Sim> = shifts
        .iter()
        .enumerate()
        .map(|(k, (_, model))| Sim {
            seed: 5000 + k as u64,
            services: runs,
            endpoints: 1,
            base,
            cand: *model,
            seconds,
            keep_raw: limit as usize,
            reference_windows: false,
            phase: Phase::Request,
            prompts: None,
        })
        .collect();
    let results = par_map(&sims, simulate);

    println!();
    println!("## Detection: {runs} runs per shift, candidate {CANDIDATE_RATE} req/s beside a baseline at {BASELINE_RATE} req/s (lognormal, median 60 ms, sigma 0.5, 1% timeouts), comparative rules (sla limit out of reach)");
    println!("\"by n\": share of runs alerted within n candidate requests (50 / 100 / 300 / 1000); median over all runs (\"> 1000\": fewer than half alerted). Warning counts an alert at warning or critical. The reference tests at 50, 100, 300 and 1000 requests (baseline 9x as many) and counts a failure at any of them up to n.");
    println!();
    println!("| shift | p50 / p95 / p99 moved | warning by 50 / 100 / 300 / 1000 | median requests to warning | critical by 50 / 100 / 300 / 1000 | median requests to critical | first rules (warning; critical) | PASS reached | reference by 50 / 100 / 300 / 1000 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut totals = DetectTotals::default();
    for ((name, model), r) in shifts.iter().zip(&results) {
        let logs = &r.series;
        let by = |s: usize| alerted_by(logs, s, runs);
        let shown = |v: &[f64]| v.iter().map(|x| pct(*x)).collect::<Vec<_>>().join(" / ");
        let median = |s: usize| median_to_alert(logs, s, runs, limit);
        let rules = |s: usize| {
            let mut r: Vec<&str> = logs
                .iter()
                .filter_map(|l| l.first[s].as_ref().map(|f| f.rule.as_str()))
                .collect();
            r.sort_unstable();
            r.dedup();
            if r.is_empty() {
                "-".to_owned()
            } else {
                r.join(",")
            }
        };
        let passed = logs.iter().filter(|l| l.first_pass.is_some()).count();
        let reference: Vec<f64> = CHECKPOINTS
            .iter()
            .map(|n| {
                let failed = r
                    .raw
                    .iter()
                    .filter(|raw| {
                        CHECKPOINTS.iter().filter(|m| *m <= n).any(|m| {
                            let m = *m as usize;
                            raw.candidate.len() >= m
                                && reference_fails(
                                    &raw.candidate[..m],
                                    &raw.baseline[..(9 * m).min(raw.baseline.len())],
                                )
                        })
                    })
                    .count();
                failed as f64 / runs as f64
            })
            .collect();
        let (warning, critical) = (by(0), by(1));
        match model {
            Model::Scaled { factor } if (factor - 1.2).abs() < 1e-9 => {
                totals.warning_12_by_1000 = warning[3];
            }
            Model::Scaled { factor } if (factor - 1.5).abs() < 1e-9 => {
                totals.critical_15_by_300 = critical[2];
            }
            _ => {}
        }
        println!(
            "| {name} | {} | {} | {} | {} | {} | {}; {} | {} | {} |",
            moved(base, *model),
            shown(&warning),
            median(0),
            shown(&critical),
            median(1),
            rules(0),
            rules(1),
            pct(passed as f64 / runs as f64),
            shown(&reference),
        );
    }
    totals
}

/// What the phase rows report.
struct PhaseTotals {
    aa_per_100: [f64; 2],
    critical_15_by_300: f64,
    /// First token, the candidate's prompts 3x longer at the same speed:
    /// alerts per 100 series-hours [warning, critical], banded and not.
    mix_per_100: [[f64; 2]; 2],
    /// First token 1.5x slower in each band, prompts 3x longer.
    ttft_critical_15_by_300: f64,
}

/// A first token: lognormal, median 100 ms for the shortest prompts,
/// sigma 0.3, times `factor` (and times its band's prefill).
fn ttft(factor: f64) -> Model {
    Model::LogNormal {
        median: 100.0 * factor,
        sigma: 0.3,
        timeouts: 0.0,
    }
}

/// A generative model's time per output token: lognormal, median 20 ms,
/// sigma 0.3 (decode is steadier than a whole request), times `factor`.
fn tpot(factor: f64) -> Model {
    Model::LogNormal {
        median: 20.0 * factor,
        sigma: 0.3,
        timeouts: 0.0,
    }
}

/// The phase rules: time per output token judged as its own series (the
/// relative rule with its 1 ms smallest difference), A/A and shifted.
fn phases(quick: bool) -> PhaseTotals {
    let (services, hours, runs) = if quick { (5, 1, 20) } else { (20, 2, 100) };
    let limit = *CHECKPOINTS.last().unwrap();
    let mut sims = vec![Sim {
        seed: 9000,
        services,
        endpoints: 2,
        base: tpot(1.0),
        cand: tpot(1.0),
        seconds: hours * 3600,
        keep_raw: 0,
        reference_windows: false,
        phase: Phase::PerOutputToken,
        prompts: None,
    }];
    let factors = [1.2, 1.5, 2.0];
    for (k, f) in factors.iter().enumerate() {
        sims.push(Sim {
            seed: 9001 + k as u64,
            services: runs,
            endpoints: 1,
            base: tpot(1.0),
            cand: tpot(*f),
            seconds: (limit as f64 / CANDIDATE_RATE) as u64,
            keep_raw: 0,
            reference_windows: false,
            phase: Phase::PerOutputToken,
            prompts: None,
        });
    }
    let results = par_map(&sims, simulate);
    let aa = &results[0];
    let series_hours = aa.series.len() as f64 * aa.seconds as f64 / 3600.0;
    let fired = [0, 1].map(|s| aa.series.iter().map(|l| l.fired[s]).sum::<u64>());
    println!();
    println!("## Phases: time per output token (lognormal, median 20 ms, sigma 0.3), judged as its own series");
    println!("A/A: {services} services x 2 endpoints x {hours} h, evaluated every second. Shifts: {runs} runs each, one endpoint, candidate {CANDIDATE_RATE} req/s beside {BASELINE_RATE} req/s; \"by n\" as in the detection table.");
    println!();
    println!("| run | series-hours | warning alerts (per 100 series-hours) | critical alerts (per 100 series-hours) | warning by 50 / 100 / 300 / 1000 | median requests to warning | critical by 50 / 100 / 300 / 1000 | median requests to critical |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| A/A | {series_hours:.0} | {} ({}) | {} ({}) | | | | |",
        fired[0],
        rate_per_100(fired[0], series_hours),
        fired[1],
        rate_per_100(fired[1], series_hours),
    );
    let mut totals = PhaseTotals {
        aa_per_100: fired.map(|n| n as f64 / series_hours * 100.0),
        critical_15_by_300: 0.0,
        mix_per_100: [[0.0; 2]; 2],
        ttft_critical_15_by_300: 0.0,
    };
    for (f, r) in factors.iter().zip(&results[1..]) {
        let logs = &r.series;
        let by = |s: usize| alerted_by(logs, s, runs);
        let median = |s: usize| median_to_alert(logs, s, runs, limit);
        let shown = |v: &[f64]| v.iter().map(|x| pct(*x)).collect::<Vec<_>>().join(" / ");
        let critical = by(1);
        if (f - 1.5).abs() < 1e-9 {
            totals.critical_15_by_300 = critical[2];
        }
        println!(
            "| {f}x per output token | | | | {} | {} | {} | {} |",
            shown(&by(0)),
            median(0),
            shown(&critical),
            median(1),
        );
    }
    first_token_mix(quick, &mut totals);
    totals
}

/// The first token when the candidate's prompts are 3x longer: A/A speed
/// with its samples banded by input size and not (as before bands), and
/// a 1.5x slower prefill in each band.
fn first_token_mix(quick: bool, totals: &mut PhaseTotals) {
    let (services, hours, runs) = if quick { (5, 1, 20) } else { (20, 2, 100) };
    let limit = *CHECKPOINTS.last().unwrap();
    let longer = Some(Prompts {
        longer: 0.8,
        banded: true,
    });
    let aa = |banded: bool| Sim {
        seed: 9100,
        services,
        endpoints: 2,
        base: ttft(1.0),
        cand: ttft(1.0),
        seconds: hours * 3600,
        keep_raw: 0,
        reference_windows: false,
        phase: Phase::FirstToken,
        prompts: Some(Prompts {
            longer: 0.8,
            banded,
        }),
    };
    let sims = [
        aa(true),
        aa(false),
        Sim {
            seed: 9101,
            services: runs,
            endpoints: 1,
            base: ttft(1.0),
            cand: ttft(1.5),
            seconds: (limit as f64 / CANDIDATE_RATE) as u64,
            keep_raw: 0,
            reference_windows: false,
            phase: Phase::FirstToken,
            prompts: longer,
        },
    ];
    let results = par_map(&sims, simulate);
    println!();
    println!("## Phases: time to first token when the candidate's prompts are 3x longer (bands of input tokens {BAND_MIX:?} of the baseline's requests, each moved one band up with probability 0.8 on the candidate; per band lognormal, median 100 ms x {BAND_PREFILL:?}, sigma 0.3)");
    println!("A/A speed: {services} services x 2 endpoints x {hours} h. Shift: {runs} runs, one endpoint, 1.5x in every band.");
    println!();
    println!("| run | series-hours | warning alerts (per 100 series-hours) | critical alerts (per 100 series-hours) | critical by 50 / 100 / 300 / 1000 | median requests to critical |");
    println!("|---|---|---|---|---|---|");
    for (k, (r, name)) in results
        .iter()
        .zip([
            "same speed, banded by input size",
            "same speed, unbanded (as before bands)",
        ])
        .enumerate()
    {
        let series_hours = r.series.len() as f64 * r.seconds as f64 / 3600.0;
        let fired = [0, 1].map(|s| r.series.iter().map(|l| l.fired[s]).sum::<u64>());
        totals.mix_per_100[k] = fired.map(|n| n as f64 / series_hours * 100.0);
        println!(
            "| {name} | {series_hours:.0} | {} ({}) | {} ({}) | | |",
            fired[0],
            rate_per_100(fired[0], series_hours),
            fired[1],
            rate_per_100(fired[1], series_hours),
        );
    }
    let logs = &results[2].series;
    let critical = alerted_by(logs, 1, runs);
    totals.ttft_critical_15_by_300 = critical[2];
    println!(
        "| 1.5x in every band, banded | | | | {} | {} |",
        critical
            .iter()
            .map(|x| pct(*x))
            .collect::<Vec<_>>()
            .join(" / "),
        median_to_alert(logs, 1, runs, limit),
    );
}

/// One alert's first firing, per (scope, rule, severity), for the incident
/// tables.
type Firsts = BTreeMap<(String, Rule, Severity), (u64, u64, String)>;

/// Notes `t`'s firing if it is the first of its scope, rule and severity:
/// the candidate's requests on its scope (`counts`, per endpoint of `eps`;
/// their sum version-wide) and `seconds` since the candidate's first one.
fn note_first(
    firsts: &mut Firsts,
    t: &Transition,
    eps: &[EndpointKey],
    counts: &[u64],
    seconds: u64,
) {
    let scope = &t.key.endpoint.endpoint;
    let n = match eps.iter().position(|e| e.endpoint == *scope) {
        Some(i) => counts[i],
        None => counts.iter().sum(),
    };
    firsts
        .entry((scope.clone(), t.key.rule, t.severity))
        .or_insert_with(|| (n, seconds, t.judgement.result.evidence.detail.clone()));
}

fn print_firsts(firsts: &Firsts, version: &str) {
    println!("| scope | rule | severity | {version} requests on the scope when it fired | seconds after {version}'s first request |");
    println!("|---|---|---|---|---|");
    let mut rows: Vec<_> = firsts.iter().collect();
    rows.sort_by_key(|((scope, rule, severity), (n, s, _))| {
        (*s, *n, scope.clone(), *rule, std::cmp::Reverse(*severity))
    });
    for ((scope, rule, severity), (n, s, _)) in rows {
        let scope = if scope == ALL_ENDPOINTS {
            "* (all endpoints)"
        } else {
            scope
        };
        println!("| {scope} | {rule} | {severity} | {n} | {s} |");
    }
    if let Some((_, _, detail)) = firsts
        .iter()
        .find(|((scope, rule, severity), _)| {
            scope == ALL_ENDPOINTS && *rule == Rule::Relative && *severity == Severity::Critical
        })
        .map(|(_, v)| v)
    {
        println!();
        println!("Version-wide relative evidence: \"{detail}\"");
    }
}

/// The lending incident at its own pace: v1.2 every few seconds for half
/// an hour, then v1.3 requests a minute apart on each endpoint. Returns the
/// v1.3 requests (on one endpoint) when both endpoints had a critical alert.
fn lending() -> u64 {
    println!();
    println!("## The lending incident, default config (sla on): v1.2 every 5 s per endpoint (85-119 ms), then v1.3 one request a minute per endpoint (700-820 ms, 80% timeouts)");
    let (mut agg, mut judge) = setup(false);
    let mut rng = StdRng::seed_from_u64(20261120);
    let eps = [
        endpoint("lending-api", "/risk-score"),
        endpoint("lending-api", "/funding-approve"),
    ];
    let mut v13 = [0u64; 2];
    let mut firsts = Firsts::new();
    let mut v12_alerts = 0;
    let start = 1800;
    for s in 0..3600u64 {
        let now = T0 + s * 1000;
        let mut batch = Vec::new();
        for (i, ep) in eps.iter().enumerate() {
            if s % 5 == i as u64 {
                let ms = rng.random_range(85.0..119.0);
                batch.push(sample(ep, "v1.2", ms, Outcome::Ok, now));
            }
            if s >= start && (s - start) % 60 == 30 * i as u64 {
                let outcome = if rng.random::<f64>() < 0.8 {
                    Outcome::Timeout
                } else {
                    Outcome::Ok
                };
                let ms = rng.random_range(700.0..820.0);
                batch.push(sample(ep, "v1.3", ms, outcome, now));
                v13[i] += 1;
            }
        }
        for t in step(&mut agg, &mut judge, &batch, now) {
            if t.alert().state != AlertState::Firing {
                continue;
            }
            if t.key.candidate != "v1.3" {
                v12_alerts += 1;
                continue;
            }
            note_first(&mut firsts, &t, &eps, &v13, s - start);
        }
    }
    print_firsts(&firsts, "v1.3");
    println!();
    println!("Alerts on v1.2: {v12_alerts}.");
    eps.iter()
        .map(|e| {
            firsts
                .iter()
                .filter(|((scope, _, sev), _)| *scope == e.endpoint && *sev == Severity::Critical)
                .map(|(_, (n, _, _))| *n)
                .min()
                .unwrap_or(u64::MAX)
        })
        .max()
        .unwrap_or(u64::MAX)
}

/// A lognormal with `median` and `p95` (ms).
fn lognormal_p95(median: f64, p95: f64, timeouts: f64) -> Model {
    Model::LogNormal {
        median,
        sigma: (p95 / median).ln() / 1.644_853_6,
        timeouts,
    }
}

/// The e-commerce incident (`examples/scenarios/ecommerce.yaml`'s traffic
/// at a steadier pace): v2.7 alone, then v2.8 to a quarter of users (slow,
/// 10% timeouts and 14 database calls per request on /recommendations and
/// /product, unchanged on /cart), rolled back, then the patched v2.8.1 to
/// the same quarter. Returns v2.8's requests on /recommendations at its
/// first critical alert there.
fn ecommerce() -> u64 {
    let (rate, alone_s, v28_s, patched_s) = (10.0, 600, 600, 1800);
    println!();
    println!("## The e-commerce incident, default config (sla on): v2.7 alone for {alone_s} s at {rate} req/s per endpoint, then v2.8 to 25% of users for {v28_s} s, rolled back, then the patched v2.8.1 to the same 25% for {patched_s} s");
    println!("v2.7 and v2.8.1: median 60 ms, p95 120 ms, 2 database calls per request. v2.8 on /recommendations and /product: median 240 ms, p95 900 ms, 10% timeouts, 14 database calls; on /cart as v2.7.");
    let service = "shop-api";
    let eps = [
        endpoint(service, "/recommendations"),
        endpoint(service, "/product"),
        endpoint(service, "/cart"),
    ];
    let good = lognormal_p95(60.0, 120.0, 0.0);
    let bad = lognormal_p95(240.0, 900.0, 0.1);
    let (mut agg, mut judge) = setup(false);
    let mut rng = StdRng::seed_from_u64(1400);
    let mut trace = 0u128;
    let mut requests: HashMap<&str, [u64; 3]> = HashMap::new();
    let mut firsts = Firsts::new();
    let mut others: BTreeMap<String, u64> = BTreeMap::new();
    let mut resolved: BTreeMap<(String, Rule, Severity), (Resolution, u64)> = BTreeMap::new();
    let (v28_start, v28_end) = (alone_s, alone_s + v28_s);
    let mut v28_last = 0;
    for s in 0..v28_end + patched_s {
        let now = T0 + s * 1000;
        let t_s = s as f64;
        let mut batch = Vec::new();
        let canary = if s < v28_start {
            None
        } else if s < v28_end {
            Some("v2.8")
        } else {
            Some("v2.8.1")
        };
        for (i, ep) in eps.iter().enumerate() {
            let mut send = |rng: &mut StdRng, version: &'static str, model: Model, calls: usize| {
                let share = if version == "v2.7" && canary.is_some() {
                    0.75
                } else if version == "v2.7" {
                    1.0
                } else {
                    0.25
                };
                for _ in 0..arrivals(rng, rate * share) {
                    trace += 1;
                    let id = trace.to_be_bytes();
                    for _ in 0..calls {
                        batch.push(Sample::db_call(service, id, now));
                    }
                    let (ms, o) = model.draw(rng, t_s);
                    batch.push(sample(ep, version, ms, o, now).in_trace(id));
                    requests.entry(version).or_default()[i] += 1;
                }
            };
            send(&mut rng, "v2.7", good, 2);
            match canary {
                Some("v2.8") if i < 2 => send(&mut rng, "v2.8", bad, 14),
                Some(v) => send(&mut rng, v, good, 2),
                None => {}
            }
        }
        if canary == Some("v2.8") {
            v28_last = s;
        }
        for t in step(&mut agg, &mut judge, &batch, now) {
            let scope = t.key.endpoint.endpoint.clone();
            match (t.alert().state, t.key.candidate.as_str()) {
                (AlertState::Firing, "v2.8") => {
                    note_first(&mut firsts, &t, &eps, &requests["v2.8"], s - v28_start);
                }
                (AlertState::Firing, other) => {
                    *others
                        .entry(format!("{other} {scope} {} {}", t.key.rule, t.severity))
                        .or_default() += 1;
                }
                (AlertState::Resolved, "v2.8") => {
                    let why = t.alert().resolution.unwrap_or(Resolution::Cleared);
                    resolved
                        .entry((scope, t.key.rule, t.severity))
                        .or_insert((why, s - v28_last));
                }
                _ => {}
            }
        }
    }
    print_firsts(&firsts, "v2.8");
    if let Some((_, _, detail)) = firsts
        .iter()
        .find(|((scope, rule, sev), _)| {
            scope == "/recommendations" && *rule == Rule::Fanout && *sev == Severity::Critical
        })
        .map(|(_, v)| v)
    {
        println!();
        println!("Fanout evidence on /recommendations: \"{detail}\"");
    }
    println!();
    if others.is_empty() {
        println!("Alerts on v2.7 or the patched v2.8.1: none.");
    } else {
        println!("Alerts on v2.7 or the patched v2.8.1: {others:?}");
    }
    let mut reasons: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for (why, after) in resolved.values() {
        let e = reasons.entry(why.as_str().to_owned()).or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(*after);
    }
    for (why, (n, after)) in reasons {
        println!("v2.8 alerts resolved after the rollback, reason {why}: {n}, the last {after} s after its last request.");
    }
    firsts
        .iter()
        .filter(|((scope, _, sev), _)| scope == "/recommendations" && *sev == Severity::Critical)
        .map(|(_, (n, _, _))| *n)
        .min()
        .unwrap_or(u64::MAX)
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let started = std::time::Instant::now();
    check_kth_difference();
    let aa = aa(quick);
    eprintln!("(A/A done at {:.0} s)", started.elapsed().as_secs_f64());
    let detect = detection(quick);
    eprintln!(
        "(detection done at {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    let phases = phases(quick);
    eprintln!("(phases done at {:.0} s)", started.elapsed().as_secs_f64());
    let lending = lending();
    let ecommerce = ecommerce();
    println!();
    println!("(finished in {:.0} s)", started.elapsed().as_secs_f64());
    let per_100 = |n: u64| n as f64 / aa.series_hours * 100.0;
    println!(
        "judge-bench: aa_false_alerts_per_100_series_hours={:.2}/{:.2} detect_1.2x_warning_by_1000={:.0}% detect_1.5x_critical_by_300={:.0}% lending_requests_to_critical={lending} ecommerce_requests_to_critical={ecommerce} aa_pass_reached={:.0}% tpot_aa_false_alerts_per_100_series_hours={:.2}/{:.2} tpot_detect_1.5x_critical_by_300={:.0}% ttft_mix_aa_false_alerts_per_100_series_hours={:.2}/{:.2} ttft_mix_unbanded_alerts_per_100_series_hours={:.2}/{:.2} ttft_detect_1.5x_critical_by_300={:.0}%",
        per_100(aa.fired[0]),
        per_100(aa.fired[1]),
        detect.warning_12_by_1000 * 100.0,
        detect.critical_15_by_300 * 100.0,
        aa.reached_pass as f64 / aa.endpoint_series.max(1) as f64 * 100.0,
        phases.aa_per_100[0],
        phases.aa_per_100[1],
        phases.critical_15_by_300 * 100.0,
        phases.mix_per_100[0][0],
        phases.mix_per_100[0][1],
        phases.mix_per_100[1][0],
        phases.mix_per_100[1][1],
        phases.ttft_critical_15_by_300 * 100.0,
    );
}
