//! The rules on literal data: the incidents' numbers, shifts in each part of
//! the distribution, severities, power, strata.

use super::*;
use crate::aggregate::Sketch;
use crate::config::{ErrorsRule, FanoutRule, RelativeRule, SlaRule};

fn summary(values: &[f64], timeouts: u64) -> WindowSummary {
    let mut latency = Sketch::new();
    for v in values {
        latency.record(*v);
    }
    let n = values.len() as u64;
    WindowSummary {
        latency,
        outcomes: [n - timeouts, 0, timeouts],
        db_calls: 0,
        ..WindowSummary::default()
    }
}

/// The default thresholds: 0.01 false alerts per series-hour over four
/// rules and a 30-minute epoch: 1 / (0.0025 * 0.5) = 800.
fn seq() -> Sequential {
    Sequential {
        e_threshold: 800.0,
        rank_effect_scale: 0.1,
        clear_fraction: 0.8,
        pass_power: 0.9,
    }
}

fn cand(w: &WindowSummary) -> Candidate<'_> {
    // One batch: the epoch is the window. Leaked so the epoch lives as long
    // as the window it describes (a few bytes per test).
    let epoch: &Epoch<'_> = Box::leak(Box::new(Epoch::of(w.clone())));
    Candidate { window: w, epoch }
}

fn pair<'a>(c: &'a WindowSummary, b: &'a WindowSummary) -> Pair<'a> {
    Pair {
        candidate: cand(c),
        baseline: b,
    }
}

fn relative_of(c: &WindowSummary, b: &WindowSummary) -> RuleResult {
    relative(&RelativeRule::default(), &seq(), "v1.2", &[pair(c, b)])
}

fn errors_of(c: &WindowSummary, b: &WindowSummary) -> RuleResult {
    errors(
        &ErrorsRule::default(),
        &seq(),
        &[cand(c)],
        Some(("v1.2", &[pair(c, b)])),
    )
}

fn critical(r: &RuleResult) -> Condition {
    r.conditions.at(Severity::Critical)
}

fn warning(r: &RuleResult) -> Condition {
    r.conditions.at(Severity::Warning)
}

fn v12(n: usize) -> WindowSummary {
    summary(
        &(0..n).map(|i| 90.0 + (i % 30) as f64).collect::<Vec<_>>(),
        0,
    )
}

const V13: [f64; 10] = [
    750.0, 820.0, 780.0, 700.0, 750.0, 760.0, 790.0, 710.0, 805.0, 730.0,
];

#[test]
fn sla_fires_on_the_third_slow_request_not_before() {
    let rule = SlaRule::default();
    for n in 1..=3 {
        let r = sla(&rule, &seq(), &[cand(&summary(&V13[..n], n as u64))]);
        let want = if n < 3 {
            Condition::Inconclusive
        } else {
            Condition::Breach
        };
        assert_eq!(critical(&r), want, "{n}: {r:?}");
    }
    let r = sla(&rule, &seq(), &[cand(&summary(&V13[..3], 3))]);
    assert!(
        r.evidence.detail.contains("3 of 3"),
        "{}",
        r.evidence.detail
    );
    assert!((r.evidence.e_value - 2105.25).abs() < 1e-6);
    assert_eq!(r.outcome(), Verdict::Regression(Severity::Critical));
    // One slow request among three is not enough, nor among many.
    let one = sla(&rule, &seq(), &[cand(&summary(&[100.0, 820.0, 95.0], 1))]);
    assert_ne!(critical(&one), Condition::Breach, "{one:?}");
    let mut values = vec![100.0; 99];
    values.push(5000.0);
    let r = sla(&rule, &seq(), &[cand(&summary(&values, 0))]);
    assert_eq!(r.conditions, Conditions::all(Condition::Clear), "{r:?}");
}

#[test]
fn an_sla_at_risk_is_a_warning_not_a_page() {
    // p95 at 135 ms: over 80% of the 150 ms limit, under the limit.
    let values: Vec<f64> = (0..200).map(|i| 100.0 + f64::from(i % 40)).collect();
    let r = sla(&SlaRule::default(), &seq(), &[cand(&summary(&values, 0))]);
    assert_eq!(warning(&r), Condition::Breach, "{r:?}");
    assert_eq!(critical(&r), Condition::Clear, "{r:?}");
    assert_eq!(r.outcome(), Verdict::Regression(Severity::Warning));
    assert!(
        r.evidence.detail.contains("at risk"),
        "{}",
        r.evidence.detail
    );
}

#[test]
fn four_slow_requests_across_two_endpoints_fire_where_two_each_cannot() {
    // The incident's log: v1.3 twice on /risk-score, twice on
    // /funding-approve, every request over the 150 ms limit.
    let risk = summary(&[750.0, 780.0], 2);
    let funding = summary(&[700.0, 750.0], 1);
    let rule = SlaRule::default();
    for one in [&risk, &funding] {
        let r = sla(&rule, &seq(), &[cand(one)]);
        assert_eq!(critical(&r), Condition::Inconclusive, "{r:?}");
    }
    let r = sla(&rule, &seq(), &[cand(&risk), cand(&funding)]);
    assert_eq!(critical(&r), Condition::Breach, "{r:?}");
    assert!(
        r.evidence.detail.contains("4 of 4"),
        "{}",
        r.evidence.detail
    );
}

#[test]
fn relative_and_errors_fire_on_the_tenth_lending_request_not_the_ninth() {
    let baseline = v12(200);
    for (n, want) in [(9, Condition::Inconclusive), (10, Condition::Breach)] {
        let cand_w = summary(&V13[..n], (n as u64 * 8) / 10);
        let r = relative_of(&cand_w, &baseline);
        assert_eq!(critical(&r), want, "{n}: {r:?}");
        let e = errors_of(&cand_w, &baseline);
        assert_eq!(critical(&e), want, "{n}: {e:?}");
    }
    let cand_w = summary(&V13, 8);
    let r = relative_of(&cand_w, &baseline);
    assert!(r.evidence.ratio > 6.0);
    let shift = r.evidence.shift.unwrap();
    assert!(shift.low > 550.0 && shift.high < 750.0, "{shift:?}");
    assert!(r.evidence.e_value >= r.evidence.e_threshold);
    assert_eq!(r.evidence.share_beyond_p95, Some(1.0));
    let e = errors_of(&cand_w, &baseline);
    assert!((e.evidence.candidate_value - 0.8).abs() < 1e-12);
    assert_eq!(
        (e.evidence.candidate_events, e.evidence.baseline_events),
        (8, 0)
    );
}

#[test]
fn error_evidence_speaks_in_points_not_in_ratios_to_zero() {
    let e = errors_of(&summary(&V13, 8), &v12(200));
    assert!((e.evidence.difference - 0.8).abs() < 1e-12);
    assert!(
        e.evidence
            .detail
            .contains("80.0% (8 of 10) vs 0.0% (0 of 200) on v1.2 (+80.0 points)"),
        "{}",
        e.evidence.detail
    );
    assert!(!e.evidence.detail.contains('x'), "{}", e.evidence.detail);
}

#[test]
fn same_distribution_is_clear_and_passes_with_enough_traffic() {
    let r = relative_of(&v12(300), &v12(300));
    assert_eq!(r.conditions, Conditions::all(Condition::Clear), "{r:?}");
    assert_eq!(r.outcome(), Verdict::Pass, "{r:?}");
    let power = r.evidence.power.unwrap();
    assert!(power.sufficient, "{power:?}");
    assert!(power.candidate_needed > 1 && power.candidate_needed <= 300);
    let e = errors_of(&v12(300), &v12(300));
    assert_eq!(critical(&e), Condition::Clear, "{e:?}");
    let f = fanout(
        &FanoutRule::default(),
        &seq(),
        "v1.2",
        &[pair(&v12(300), &v12(300))],
    );
    assert_eq!(critical(&f), Condition::Clear, "{f:?}");
}

#[test]
fn errors_pass_an_a_a_pair_with_a_few_timeouts_once_both_sides_suffice() {
    // 1% timeouts on both sides, the candidate at a ninth of the baseline's
    // traffic (the judge-bench A/A shape): the baseline's power must be
    // judged with its own count, not the candidate's.
    let values = |n: usize| (0..n).map(|i| 50.0 + (i % 40) as f64).collect::<Vec<_>>();
    let (c, b) = (summary(&values(1500), 15), summary(&values(13_500), 135));
    let e = errors_of(&c, &b);
    assert_eq!(e.outcome(), Verdict::Pass, "{e:?}");
    let power = e.evidence.power.unwrap();
    assert!(power.baseline_needed <= 13_500, "{power:?}");
    assert!(power.candidate_needed <= 1500, "{power:?}");
    // A thin baseline is what holds the verdict back, and says so.
    let thin = summary(&values(200), 2);
    let e = errors_of(&c, &thin);
    assert_eq!(e.outcome(), Verdict::Inconclusive, "{e:?}");
    assert!(e.evidence.power.unwrap().baseline_needed > 200, "{e:?}");
}

#[test]
fn clear_on_a_dozen_requests_is_not_a_pass() {
    // The gate said PASS two seconds in, on 12 requests a side.
    let values: Vec<f64> = (0..12).map(|i| 60.0 + f64::from(i * 7 % 50)).collect();
    let (c, b) = (summary(&values, 0), summary(&values, 0));
    let r = relative_of(&c, &b);
    assert_eq!(r.conditions, Conditions::all(Condition::Clear), "{r:?}");
    assert_eq!(r.outcome(), Verdict::Inconclusive, "{r:?}");
    let power = r.evidence.power.unwrap();
    assert!(!power.sufficient);
    assert!(power.candidate_needed > 12, "{power:?}");
    assert!(
        r.evidence.detail.contains("too little traffic to pass"),
        "{}",
        r.evidence.detail
    );
    let e = errors_of(&c, &b);
    assert_eq!(e.outcome(), Verdict::Inconclusive, "{e:?}");
}

#[test]
fn too_little_traffic_is_inconclusive_never_a_pass() {
    let r = relative_of(&v12(5), &v12(300));
    assert_eq!(r.conditions, Conditions::all(Condition::Inconclusive));
    assert!(r.evidence.detail.starts_with("inconclusive"));
    assert_eq!(r.outcome(), Verdict::Inconclusive);
    let e = errors_of(&v12(300), &v12(3));
    assert_eq!(critical(&e), Condition::Inconclusive);
}

#[test]
fn big_ratio_on_a_tiny_endpoint_needs_the_minimum_difference() {
    let c = summary(&[4.0; 50], 0);
    let b = summary(&[1.0; 50], 0);
    let r = relative_of(&c, &b);
    assert_eq!(r.conditions, Conditions::all(Condition::Clear), "{r:?}");
}

#[test]
fn between_the_critical_thresholds_is_marginal_and_a_warning() {
    // 1.45x: under the 1.5x critical factor, over its 1.4x clearing one;
    // over the 1.2x warning factor.
    let c = summary(&[145.0; 40], 0);
    let b = summary(&[100.0; 40], 0);
    let r = relative_of(&c, &b);
    assert_eq!(critical(&r), Condition::Marginal, "{r:?}");
    assert_eq!(warning(&r), Condition::Breach, "{r:?}");
    assert_eq!(r.outcome(), Verdict::Regression(Severity::Warning));
}

#[test]
fn a_quarter_slower_on_thousands_of_requests_is_a_warning() {
    let b: Vec<f64> = (0..3000).map(|i| 50.0 + f64::from(i % 100)).collect();
    let c: Vec<f64> = b.iter().map(|v| v * 1.25).collect();
    let r = relative_of(&summary(&c, 0), &summary(&b, 0));
    assert_eq!(warning(&r), Condition::Breach, "{r:?}");
    assert_eq!(critical(&r), Condition::Clear, "{r:?}");
    assert!(
        r.evidence.detail.starts_with("warning: "),
        "{}",
        r.evidence.detail
    );
}

#[test]
fn a_tail_only_shift_is_caught_by_the_tail_test() {
    // Same median; the slowest 12% of the candidate are 1.6x slower. The
    // rank test barely moves; requests beyond 1.5x the baseline's p95 go
    // from none to one in ten.
    let b: Vec<f64> = (0..2000).map(|i| 50.0 + f64::from(i % 100)).collect();
    let c: Vec<f64> = (0..300)
        .map(|i| {
            let v = 50.0 + f64::from(i % 100);
            if i % 100 >= 88 {
                v * 1.6
            } else {
                v
            }
        })
        .collect();
    let r = relative_of(&summary(&c, 0), &summary(&b, 0));
    assert_eq!(critical(&r), Condition::Breach, "{r:?}");
    assert_eq!(r.evidence.test, Test::Tail);
}

#[test]
fn a_slowdown_in_the_middle_is_caught_though_p95_barely_moves() {
    // A cache that stopped hitting: 70% of requests were 20 ms hits, now
    // 40% are; misses take 200-300 ms either way. The median goes from 20 to
    // about 210 ms, p95 from about 290 to 295.
    let draw = |hits: u32| -> Vec<f64> {
        (0..1000)
            .map(|i| {
                if i % 100 < hits {
                    20.0 + f64::from(i % 7)
                } else {
                    200.0 + f64::from(i * 37 % 100)
                }
            })
            .collect()
    };
    let (b, c) = (summary(&draw(70), 0), summary(&draw(40), 0));
    let r = relative_of(&c, &b);
    assert_eq!(critical(&r), Condition::Breach, "{r:?}");
    assert!(r.evidence.quantile <= 0.75, "{r:?}");
    assert!(r.evidence.ratio > 5.0, "{r:?}");
    let p95 = |s: &WindowSummary| s.latency.quantile(0.95).unwrap();
    assert!(p95(&c) / p95(&b) < 1.1, "p95 barely moves");
}

#[test]
fn a_share_of_requests_much_slower_is_caught_in_the_middle_quantiles() {
    // Bimodal: 20% of the candidate's requests take 5x as long.
    let b: Vec<f64> = (0..2000).map(|i| 80.0 + f64::from(i % 40)).collect();
    let c: Vec<f64> = (0..500)
        .map(|i| {
            let v = 80.0 + f64::from(i % 40);
            if i % 5 == 0 {
                v * 5.0
            } else {
                v
            }
        })
        .collect();
    let r = relative_of(&summary(&c, 0), &summary(&b, 0));
    assert_eq!(critical(&r), Condition::Breach, "{r:?}");
    let share = r.evidence.share_beyond_p95.unwrap();
    assert!((0.2..0.3).contains(&share), "{share}");
}

#[test]
fn two_endpoints_slower_together_are_judged_stratified() {
    // Each endpoint has too few requests alone (under min_samples), their
    // sum is enough; the endpoints' own latencies differ tenfold, so
    // pooling raw requests would compare unlike with unlike.
    let fast_b = summary(
        &(0..200)
            .map(|i| 10.0 + f64::from(i % 5))
            .collect::<Vec<_>>(),
        0,
    );
    let slow_b = summary(
        &(0..200)
            .map(|i| 100.0 + f64::from(i % 50))
            .collect::<Vec<_>>(),
        0,
    );
    let fast_c = summary(&[40.0, 42.0, 41.0, 45.0, 43.0, 44.0], 0);
    let slow_c = summary(&[400.0, 420.0, 410.0, 450.0, 430.0, 440.0], 0);
    let rule = RelativeRule::default();
    for (c, b) in [(&fast_c, &fast_b), (&slow_c, &slow_b)] {
        let alone = relative(&rule, &seq(), "v1.2", &[pair(c, b)]);
        assert_eq!(critical(&alone), Condition::Inconclusive);
    }
    let both = relative(
        &rule,
        &seq(),
        "v1.2",
        &[pair(&fast_c, &fast_b), pair(&slow_c, &slow_b)],
    );
    assert_eq!(critical(&both), Condition::Breach, "{both:?}");
    assert!(both.evidence.ratio > 3.0, "{both:?}");
}

#[test]
fn without_a_baseline_errors_hold_to_the_ceiling() {
    // 94% timeouts and nothing to compare with: critical on its own.
    let broken = summary(&[100.0; 50], 47);
    let r = errors(&ErrorsRule::default(), &seq(), &[cand(&broken)], None);
    assert_eq!(critical(&r), Condition::Breach, "{r:?}");
    assert!(
        r.evidence.detail.contains("ceiling"),
        "{}",
        r.evidence.detail
    );
    let healthy = summary(&[100.0; 400], 4);
    let r = errors(&ErrorsRule::default(), &seq(), &[cand(&healthy)], None);
    assert_eq!(r.outcome(), Verdict::Pass, "{r:?}");
}

#[test]
fn fanout_fires_on_many_more_database_calls_and_names_the_counts() {
    let mut c = v12(300);
    c.db_calls = 3_600;
    let mut b = v12(1_000);
    b.db_calls = 2_000;
    let f = fanout(&FanoutRule::default(), &seq(), "v1.2", &[pair(&c, &b)]);
    assert_eq!(critical(&f), Condition::Breach, "{f:?}");
    assert!(
        f.evidence.detail.contains("3600 calls / 300 requests"),
        "{}",
        f.evidence.detail
    );
    assert!(
        f.evidence.detail.contains("2000 / 1000"),
        "{}",
        f.evidence.detail
    );
    assert_eq!(
        (f.evidence.candidate_events, f.evidence.baseline_events),
        (3_600, 2_000)
    );
    // A patched version back at two calls per request is clear.
    let mut patched = v12(300);
    patched.db_calls = 610;
    let f = fanout(
        &FanoutRule::default(),
        &seq(),
        "v1.2",
        &[pair(&patched, &b)],
    );
    assert_eq!(critical(&f), Condition::Clear, "{f:?}");
}

#[test]
fn sla_on_coarse_buckets_fires_only_where_the_bucket_error_cannot_explain_it() {
    let rule = SlaRule::default();
    // v1.2 at about 102 ms in http.server.request.duration's (100, 250]
    // bucket: reported at 142.9 ms, 43% either way: under 150 ms, over the
    // 120 ms warning, or neither: not a breach, not a pass.
    let mut v12 = summary(&[142.857; 200], 0);
    v12.binned = 200;
    v12.resolution = 150.0 / 350.0;
    let r = sla(&rule, &seq(), &[cand(&v12)]);
    assert_eq!(r.conditions, Conditions::all(Condition::Marginal), "{r:?}");
    assert_eq!(r.outcome(), Verdict::Inconclusive);
    assert!(
        r.evidence
            .detail
            .contains("may be on either side of the 150 ms limit"),
        "{}",
        r.evidence.detail
    );
    // v1.3 at 760 ms, in (750, 1000] at 857 ms: over 150 ms whatever the
    // bucket hides.
    let mut v13 = summary(&[857.1; 20], 16);
    v13.binned = 20;
    v13.resolution = 150.0 / 350.0;
    let r = sla(&rule, &seq(), &[cand(&v13)]);
    assert_eq!(critical(&r), Condition::Breach, "{r:?}");
    assert!(
        r.evidence.detail.contains("20 of 20 requests above 214 ms"),
        "{}",
        r.evidence.detail
    );
}

#[test]
fn fanout_on_requests_read_from_histograms_is_inconclusive_never_a_pass() {
    let mut c = v12(300);
    c.binned = 300;
    let mut b = v12(1_000);
    b.db_calls = 2_000;
    let f = fanout(&FanoutRule::default(), &seq(), "v1.2", &[pair(&c, &b)]);
    assert_eq!(
        f.conditions,
        Conditions::all(Condition::Inconclusive),
        "{f:?}"
    );
    assert_eq!(f.outcome(), Verdict::Inconclusive);
    assert_eq!(f.evidence.binned, 300);
    assert!(
        f.evidence
            .detail
            .contains("300 of the 1300 requests compared were read from histogram buckets"),
        "{}",
        f.evidence.detail
    );
}

#[test]
fn a_latency_result_states_how_precise_its_binned_requests_are() {
    let mut c = summary(&V13, 0);
    c.binned = 10;
    c.resolution = 0.4286;
    let b = v12(100);
    let mut r = relative_of(&c, &b);
    state_resolution(&mut r, &[&c, &b]);
    assert_eq!((r.evidence.binned, r.evidence.binned_error), (10, 0.4286));
    assert!(
        r.evidence.detail.ends_with(
            "; 10 of 110 requests read from histogram buckets, their latencies known within 42.9%"
        ),
        "{}",
        r.evidence.detail
    );
    // Spans only: nothing to state.
    let mut r = relative_of(&summary(&V13, 0), &b);
    let before = r.evidence.detail.clone();
    state_resolution(&mut r, &[&summary(&V13, 0), &b]);
    assert_eq!((r.evidence.detail, r.evidence.binned), (before, 0));
}

/// Properties of the `relative` rule over random log-normal latencies
/// (median 20 ms to 500 ms, sigma 0.1 to 1): no false alarm at any severity
/// between two draws of one distribution, and no miss of a 3x slowdown once
/// both sides have a few hundred requests. The runner's seed is fixed so a
/// run is reproducible; each case draws its own data from `seed`.
mod properties {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;
    use rand::{rngs::StdRng, SeedableRng};
    use rand_distr::{Distribution, LogNormal};

    fn draw(rng: &mut StdRng, median_ms: f64, sigma: f64, n: usize, scale: f64) -> Vec<f64> {
        let dist = LogNormal::new(median_ms.ln(), sigma).unwrap();
        (0..n).map(|_| dist.sample(rng) * scale).collect()
    }

    fn judge(candidate: &[f64], baseline: &[f64]) -> RuleResult {
        relative_of(&summary(candidate, 0), &summary(baseline, 0))
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 200,
            rng_seed: RngSeed::Fixed(0x6d6f_6465_6c67_6174),
            ..ProptestConfig::default()
        })]

        #[test]
        fn one_distribution_never_breaches(
            seed in any::<u64>(),
            median_ms in 20.0f64..500.0,
            sigma in 0.1f64..1.0,
            nc in 10usize..400,
            nb in 10usize..1000,
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let baseline = draw(&mut rng, median_ms, sigma, nb, 1.0);
            let candidate = draw(&mut rng, median_ms, sigma, nc, 1.0);
            let r = judge(&candidate, &baseline);
            prop_assert!(r.conditions.breached().is_none(), "{:?}", r);
        }

        #[test]
        fn three_times_slower_always_breaches(
            seed in any::<u64>(),
            median_ms in 20.0f64..500.0,
            sigma in 0.1f64..1.0,
            nc in 200usize..400,
            nb in 300usize..1000,
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let baseline = draw(&mut rng, median_ms, sigma, nb, 1.0);
            let candidate = draw(&mut rng, median_ms, sigma, nc, 3.0);
            let r = judge(&candidate, &baseline);
            prop_assert_eq!(r.conditions.at(Severity::Critical), Condition::Breach, "{:?}", r);
        }
    }
}
