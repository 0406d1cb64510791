//! Significance tests and effect estimates the rules use, computed from
//! sketches and counts.
//!
//! Pure functions of their arguments; distributions and special functions
//! come from `statrs`. What is implemented here, with its source:
//! - Mann-Whitney U, one-sided, bucket by bucket (values in one sketch bucket
//!   are ties): exact permutation distribution of the midrank sum when the
//!   samples are small (the network/shift algorithm idea of Streitberg &
//!   Röhmel 1986, as a dynamic programme over tie groups), else the normal
//!   approximation with tie-corrected variance and continuity correction
//!   (Hollander & Wolfe, "Nonparametric Statistical Methods", 3rd ed., 4.1).
//! - Hodges-Lehmann shift estimate (median of pairwise differences) with the
//!   Moses distribution-free confidence interval (Hollander & Wolfe 4.3).
//! - Fisher's exact test, one-sided, as the upper tail of the hypergeometric
//!   distribution; a pooled two-proportion z-test when the counts are large.
//! - The exact binomial upper tail.
//! - E-values for monitoring that may stop at any time (Ville's inequality:
//!   under the null, the chance an e-process ever reaches 1/alpha is at most
//!   alpha): a Bernoulli likelihood ratio mixed over a uniform prior on the
//!   alternative (p0, 1), exact; and the normal-mixture sequential
//!   probability ratio test of Johari et al., "Always Valid Inference"
//!   (Operations Research 2022), on an asymptotically normal statistic.

use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Hypergeometric, Normal};
use statrs::function::beta::{beta_reg, ln_beta};
use statrs::function::erf::erfc;

use serde::{Deserialize, Serialize};

use crate::aggregate::Sketch;

/// Above this many requests in total, the rate test uses the normal
/// approximation: the exact sum costs O(n) and agrees to many digits there.
const FISHER_EXACT_MAX: u64 = 20_000;

/// Up to this many values in both samples together, the rank test is exact
/// (a dynamic programme of about N * n1 * 2N steps: under 100k here).
pub const RANK_EXACT_MAX: u64 = 40;

/// Pairwise bucket differences considered by the Hodges-Lehmann estimate;
/// beyond it the coarser of the two sketches is thinned (about 1% error).
const HL_MAX_PAIRS: usize = 250_000;

/// The standard normal upper tail P(Z > z).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Result of a rank test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankTest {
    /// U statistic of the candidate: pairs (c, b) with c > b, ties as half.
    pub u: f64,
    /// Standardised U.
    pub z: f64,
    /// Tie-corrected variance of U under the null.
    pub variance: f64,
    /// One-sided p-value for "the candidate is slower".
    pub p_value: f64,
    /// Whether `p_value` is exact (small samples) or the normal approximation.
    pub exact: bool,
    /// Candidate values.
    pub n1: f64,
    /// Baseline values.
    pub n2: f64,
}

/// The union of two sketches' buckets in ascending order: (candidate count,
/// baseline count) per distinct value.
fn tie_groups(candidate: &Sketch, baseline: &Sketch) -> Vec<(f64, f64)> {
    let mut cand = candidate.buckets().peekable();
    let mut base = baseline.buckets().peekable();
    let mut groups = Vec::new();
    loop {
        // Walk the union of both bucket lists in ascending value order; equal
        // values are the same bucket, hence ties.
        let (c, b) = match (cand.peek().copied(), base.peek().copied()) {
            (None, None) => break,
            (Some((cv, cc)), Some((bv, bc))) if cv == bv => {
                cand.next();
                base.next();
                (cc as f64, bc as f64)
            }
            (Some((cv, cc)), Some((bv, _))) if cv < bv => {
                cand.next();
                (cc as f64, 0.0)
            }
            (Some((_, cc)), None) => {
                cand.next();
                (cc as f64, 0.0)
            }
            (_, Some((_, bc))) => {
                base.next();
                (0.0, bc as f64)
            }
        };
        groups.push((c, b));
    }
    groups
}

/// Mann-Whitney U test of `candidate` > `baseline` on the sketches' buckets:
/// exact when both samples together hold at most [`RANK_EXACT_MAX`] values.
/// `None` when either side is empty.
pub fn mann_whitney_greater(candidate: &Sketch, baseline: &Sketch) -> Option<RankTest> {
    mann_whitney(candidate, baseline, RANK_EXACT_MAX)
}

/// [`mann_whitney_greater`], exact up to `exact_max` pooled values.
fn mann_whitney(candidate: &Sketch, baseline: &Sketch, exact_max: u64) -> Option<RankTest> {
    let n1 = candidate.count() as f64;
    let n2 = baseline.count() as f64;
    if n1 == 0.0 || n2 == 0.0 {
        return None;
    }
    let groups = tie_groups(candidate, baseline);
    let mut u = 0.0;
    let mut baseline_below = 0.0;
    let mut tie_term = 0.0;
    for &(c, b) in &groups {
        u += c * (baseline_below + 0.5 * b);
        baseline_below += b;
        let t = c + b;
        tie_term += t * t * t - t;
    }
    let n = n1 + n2;
    let mean = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if variance <= 0.0 {
        // Every value tied: no evidence of any difference.
        return Some(RankTest {
            u,
            z: 0.0,
            variance: 0.0,
            p_value: 1.0,
            exact: false,
            n1,
            n2,
        });
    }
    let z = (u - mean) / variance.sqrt();
    let exact = candidate.count() + baseline.count() <= exact_max;
    let p_value = if exact {
        exact_rank_sum_tail(&groups, candidate.count() as usize)
    } else {
        // Continuity correction towards the mean.
        normal_sf((u - mean - 0.5) / variance.sqrt())
    };
    Some(RankTest {
        u,
        z,
        variance,
        p_value: p_value.clamp(0.0, 1.0),
        exact,
        n1,
        n2,
    })
}

/// P(candidate midrank sum >= observed) over all equally likely ways to pick
/// the candidate's `n1` values out of the pooled sample, ties kept as tied.
fn exact_rank_sum_tail(groups: &[(f64, f64)], n1: usize) -> f64 {
    // Midranks doubled are integers: 2 * (values below) + group size + 1.
    let mut below = 0usize;
    let mut ranked: Vec<(usize, usize, usize)> = Vec::with_capacity(groups.len());
    let mut observed = 0usize;
    for &(c, b) in groups {
        let t = (c + b) as usize;
        let rank2 = 2 * below + t + 1;
        observed += c as usize * rank2;
        ranked.push((t, rank2, c as usize));
        below += t;
    }
    let n = below;
    let max_sum = 2 * n * n1 + 1;
    // ways[k][s]: ways to choose k values so far with doubled rank sum s.
    let mut ways = vec![vec![0.0f64; max_sum + 1]; n1 + 1];
    ways[0][0] = 1.0;
    let mut seen = 0usize;
    for &(t, rank2, _) in &ranked {
        let top = n1.min(seen + t);
        for k in (0..=top).rev() {
            for s in (0..=max_sum).rev() {
                let mut total = 0.0;
                let mut binom = 1.0;
                for j in 0..=t.min(k) {
                    if j > 0 {
                        binom = binom * (t + 1 - j) as f64 / j as f64;
                    }
                    let add = j * rank2;
                    if add <= s && (k - j) <= seen {
                        total += binom * ways[k - j][s - add];
                    }
                }
                ways[k][s] = total;
            }
        }
        seen += t;
    }
    let all: f64 = ways[n1].iter().sum();
    let tail: f64 = ways[n1][observed.min(max_sum)..].iter().sum();
    if all > 0.0 {
        tail / all
    } else {
        1.0
    }
}

/// A location shift with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shift {
    /// Hodges-Lehmann estimate: median of candidate - baseline differences.
    pub estimate: f64,
    /// Lower bound of the interval.
    pub low: f64,
    /// Upper bound of the interval.
    pub high: f64,
}

/// Hodges-Lehmann shift of `candidate` over `baseline` (milliseconds) with a
/// two-sided `confidence` interval (Moses; normal approximation of the rank
/// distribution's critical value). `None` when either side is empty.
pub fn hodges_lehmann(candidate: &Sketch, baseline: &Sketch, confidence: f64) -> Option<Shift> {
    let (n1, n2) = (candidate.count(), baseline.count());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let c: Vec<(f64, u64)> = candidate.buckets().collect();
    let b: Vec<(f64, u64)> = baseline.buckets().collect();
    let mut diffs: Vec<(f64, u64)> = Vec::with_capacity((c.len() * b.len()).min(HL_MAX_PAIRS));
    // Thin the longer list so that the pair count stays bounded.
    let stride = (c.len() * b.len()).div_ceil(HL_MAX_PAIRS).max(1);
    for (i, (cv, cc)) in c.iter().enumerate() {
        if stride > 1 && i % stride != 0 {
            continue;
        }
        let weight = if stride > 1 {
            c[i..(i + stride).min(c.len())].iter().map(|x| x.1).sum()
        } else {
            *cc
        };
        for (bv, bc) in &b {
            diffs.push((cv - bv, weight * bc));
        }
    }
    diffs.sort_by(|x, y| x.0.total_cmp(&y.0));
    let pairs = (n1 * n2) as f64;
    // The i-th (0-based) smallest difference, counting weights.
    let order = |i: f64| -> f64 {
        let mut seen = 0.0;
        for (d, w) in &diffs {
            seen += *w as f64;
            if seen > i {
                return *d;
            }
        }
        diffs.last().map_or(0.0, |x| x.0)
    };
    let estimate = if (n1 * n2) % 2 == 1 {
        order((pairs - 1.0) / 2.0)
    } else {
        (order(pairs / 2.0 - 1.0) + order(pairs / 2.0)) / 2.0
    };
    let z = Normal::standard().inverse_cdf(0.5 + confidence.clamp(0.0, 0.999_999) / 2.0);
    let n = (n1 + n2) as f64;
    let k = (pairs / 2.0 - z * (pairs * (n + 1.0) / 12.0).sqrt()).floor();
    let (low, high) = if k < 0.0 {
        (
            diffs.first().map_or(0.0, |x| x.0),
            diffs.last().map_or(0.0, |x| x.0),
        )
    } else {
        (order(k), order(pairs - k - 1.0))
    };
    Some(Shift {
        estimate,
        low,
        high,
    })
}

/// E-value against "P(success) <= p0" after `k` successes in `n` trials: the
/// likelihood ratio of a uniform mixture over p in (p0, 1) to p0. Exact; an
/// e-process, so it may be checked after every trial.
pub fn bernoulli_e_value(k: u64, n: u64, p0: f64) -> f64 {
    if n == 0 || k == 0 {
        return if n == 0 {
            1.0
        } else {
            bernoulli_e_value_raw(0, n, p0)
        };
    }
    bernoulli_e_value_raw(k.min(n), n, p0)
}

fn bernoulli_e_value_raw(k: u64, n: u64, p0: f64) -> f64 {
    let p0 = p0.clamp(1e-12, 1.0 - 1e-12);
    let (a, b) = ((k + 1) as f64, (n - k + 1) as f64);
    let tail = 1.0 - beta_reg(a, b, p0);
    if tail <= 0.0 {
        return 0.0;
    }
    let ln = ln_beta(a, b) + tail.ln()
        - (-p0).ln_1p()
        - k as f64 * p0.ln()
        - (n - k) as f64 * (-p0).ln_1p();
    ln.exp().min(f64::MAX)
}

/// E-value of the normal-mixture SPRT: an estimate `theta` of an effect with
/// variance `variance` under the null (effect 0), mixed over a N(0, tau^2)
/// prior on the effect. Valid asymptotically (the estimate's normality).
pub fn normal_mixture_e_value(theta: f64, variance: f64, tau: f64) -> f64 {
    if variance <= 0.0 || !theta.is_finite() {
        return 1.0;
    }
    let t2 = tau * tau;
    let ln = 0.5 * (variance / (variance + t2)).ln()
        + t2 * theta * theta / (2.0 * variance * (variance + t2));
    ln.exp().min(f64::MAX)
}

/// E-value that the candidate ranks above the baseline: the normal-mixture
/// SPRT on P(C > B) - 1/2, estimated as U / (n1 n2) - 1/2; 1 when the
/// candidate is not ahead (one-sided use of the two-sided mixture).
pub fn rank_e_value(test: &RankTest, n1: u64, n2: u64, tau: f64) -> f64 {
    let pairs = (n1 * n2) as f64;
    if pairs == 0.0 {
        return 1.0;
    }
    let theta = test.u / pairs - 0.5;
    if theta <= 0.0 {
        return 1.0;
    }
    normal_mixture_e_value(theta, test.variance / (pairs * pairs), tau)
}

/// P(X >= k) for X ~ Binomial(n, p).
pub fn binomial_at_least(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    match Binomial::new(p.clamp(0.0, 1.0), n) {
        Ok(dist) => dist.sf(k - 1).clamp(0.0, 1.0),
        Err(_) => 1.0,
    }
}

/// One-sided test that the candidate's failure rate exceeds the baseline's:
/// Fisher's exact test for small counts, a pooled z-test for large ones.
pub fn rate_greater(cand_fail: u64, cand_n: u64, base_fail: u64, base_n: u64) -> f64 {
    if cand_n == 0 || base_n == 0 {
        return 1.0;
    }
    let total = cand_n + base_n;
    let failures = cand_fail + base_fail;
    if total <= FISHER_EXACT_MAX {
        if cand_fail == 0 {
            return 1.0;
        }
        return match Hypergeometric::new(total, failures, cand_n) {
            Ok(dist) => dist.sf(cand_fail - 1).clamp(0.0, 1.0),
            Err(_) => 1.0,
        };
    }
    let pooled = failures as f64 / total as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / cand_n as f64 + 1.0 / base_n as f64)).sqrt();
    if se == 0.0 {
        return 1.0;
    }
    let diff = cand_fail as f64 / cand_n as f64 - base_fail as f64 / base_n as f64;
    normal_sf(diff / se).clamp(0.0, 1.0)
}

/// Van Elteren's stratified rank test: per-stratum Mann-Whitney statistics
/// weighted by 1 / (n1 + n2 + 1) and summed, normal approximation
/// (Hollander & Wolfe 4.4). One-sided p-value for "the candidate is
/// slower across strata"; 1 when no stratum has both sides.
pub fn van_elteren_greater(strata: &[RankTest]) -> f64 {
    let (mut num, mut var) = (0.0, 0.0);
    for t in strata {
        let w = 1.0 / (t.n1 + t.n2 + 1.0);
        num += w * (t.u - t.n1 * t.n2 / 2.0);
        var += w * w * t.variance;
    }
    if var <= 0.0 {
        return 1.0;
    }
    normal_sf(num / var.sqrt()).clamp(0.0, 1.0)
}

/// The Cochran-Mantel-Haenszel test that the candidate's failure rate
/// exceeds the baseline's across strata, one-sided, with continuity
/// correction (Agresti, "Categorical Data Analysis", 3rd ed., 6.4). Each
/// stratum is (candidate failures, candidate n, baseline failures,
/// baseline n); 1 when no stratum is informative.
pub fn cmh_greater(strata: &[(u64, u64, u64, u64)]) -> f64 {
    let (mut excess, mut var) = (0.0, 0.0);
    for &(a, n1, c, n2) in strata {
        let (n1, n2) = (n1 as f64, n2 as f64);
        let n = n1 + n2;
        let failures = (a + c) as f64;
        if n < 2.0 {
            continue;
        }
        excess += a as f64 - n1 * failures / n;
        var += n1 * n2 * failures * (n - failures) / (n * n * (n - 1.0));
    }
    if var <= 0.0 {
        return 1.0;
    }
    normal_sf((excess - 0.5) / var.sqrt()).clamp(0.0, 1.0)
}

/// P(sum of independent Binomial(n_i, p_i) >= sum of k_i), normal
/// approximation with continuity correction; with one term, exact.
pub fn binomials_at_least(terms: &[(u64, u64, f64)]) -> f64 {
    if let [(k, n, p)] = terms {
        return binomial_at_least(*k, *n, *p);
    }
    let (mut k, mut mean, mut var) = (0.0, 0.0, 0.0);
    for &(ki, ni, pi) in terms {
        let p = pi.clamp(0.0, 1.0);
        k += ki as f64;
        mean += ni as f64 * p;
        var += ni as f64 * p * (1.0 - p);
    }
    if var <= 0.0 {
        return if k > mean { 0.0 } else { 1.0 };
    }
    normal_sf((k - 0.5 - mean) / var.sqrt()).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch(values: &[f64]) -> Sketch {
        let mut s = Sketch::new();
        for v in values {
            s.record(*v);
        }
        s
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn exact_rank_test_matches_scipy_exact_without_ties() {
        // scipy.stats.mannwhitneyu(x, y, alternative="greater", method="exact")
        // gives U = 24, p = 0.06277056277056277.
        let x = [12.0, 15.0, 19.0, 22.0, 30.0];
        let y = [10.0, 11.0, 13.0, 14.0, 16.0, 17.0];
        let t = mann_whitney_greater(&sketch(&x), &sketch(&y)).unwrap();
        assert!(t.exact);
        assert_eq!(t.u, 24.0);
        assert!(close(t.p_value, 0.062_770_562_770_562_77, 1e-9), "{t:?}");
    }

    #[test]
    fn exact_rank_test_with_ties_matches_brute_force_permutation() {
        // All 126 ways of choosing 4 of the 9 pooled values, midranks
        // (scipy.stats.rankdata), counting rank sums >= the observed: 10/126.
        let x = [5.0, 7.0, 7.0, 9.0];
        let y = [3.0, 5.0, 7.0, 4.0, 5.0];
        let t = mann_whitney_greater(&sketch(&x), &sketch(&y)).unwrap();
        assert!(t.exact);
        assert_eq!(t.u, 17.0);
        assert!(close(t.p_value, 10.0 / 126.0, 1e-12), "{t:?}");
    }

    #[test]
    fn hodges_lehmann_matches_pairwise_differences() {
        // numpy: median of the 42 pairwise differences x[i] - y[j] = 57.5;
        // k = floor(42/2 - 1.96 sqrt(42 * 14 / 12)) = 7, so the 95% interval
        // is (d[7], d[34]) of the sorted differences = (0, 160).
        let x = [120.0, 150.0, 160.0, 200.0, 260.0, 300.0, 90.0];
        let y = [100.0, 90.0, 110.0, 150.0, 95.0, 105.0];
        let s = hodges_lehmann(&sketch(&x), &sketch(&y), 0.95).unwrap();
        // Bucket values are within 0.55% of the data.
        assert!((s.estimate - 57.5).abs() < 2.0, "{s:?}");
        assert!(s.low.abs() < 2.0, "{s:?}");
        assert!((s.high - 160.0).abs() < 2.5, "{s:?}");
    }

    #[test]
    fn bernoulli_e_value_matches_scipy() {
        // exp(betaln(k+1, n-k+1) + log1p(-betainc(k+1, n-k+1, p0))
        //     - log1p(-p0) - k log p0 - (n-k) log1p(-p0)) with scipy.special:
        for (k, n, p0, want) in [
            (3, 3, 0.05, 2_105.250_000_000_001),
            (1, 1, 0.05, 10.5),
            (2, 2, 0.05, 140.333_333_333_333_26),
            (30, 300, 0.05, 22.420_608_647_616_56),
            (8, 10, 0.005, 5_250_075_200_341_657.0),
        ] {
            let got = bernoulli_e_value(k, n, p0);
            assert!(
                close(got, want, 1e-8),
                "k={k} n={n} p0={p0}: {got} vs {want}"
            );
        }
        // Below the null rate there is no evidence.
        assert!(bernoulli_e_value(0, 100, 0.05) < 0.1);
        assert_eq!(bernoulli_e_value(0, 0, 0.05), 1.0);
    }

    #[test]
    fn normal_mixture_e_value_matches_its_closed_form() {
        // sqrt(V/(V+t^2)) exp(t^2 x^2 / (2 V (V+t^2))) at x=0.2, V=0.001, t=0.1:
        // sqrt(0.001/0.011) * exp(0.0004 / (2 * 0.001 * 0.011)) = 0.30151 * e^18.1818
        let want = (0.001f64 / 0.011).sqrt() * (0.0004f64 / (2.0 * 0.001 * 0.011)).exp();
        assert!(close(normal_mixture_e_value(0.2, 0.001, 0.1), want, 1e-12));
        assert!(normal_mixture_e_value(0.0, 0.001, 0.1) < 1.0);
    }

    #[test]
    fn mann_whitney_matches_scipy_asymptotic_with_ties() {
        // scipy.stats.mannwhitneyu(x, y, alternative="greater",
        //   method="asymptotic", use_continuity=True) on these data gives
        //   U = 34.5, p = 0.030739764386779955 (values are far apart relative
        //   to the sketch's 1% buckets, so ranks and ties are exact).
        let x = [120.0, 150.0, 150.0, 200.0, 260.0, 300.0, 90.0];
        let y = [100.0, 90.0, 110.0, 150.0, 95.0, 105.0];
        let t = mann_whitney(&sketch(&x), &sketch(&y), 0).unwrap();
        assert!(!t.exact);
        assert_eq!(t.u, 34.5);
        assert!(
            close(t.p_value, 0.030_739_764_386_779_955, 1e-9),
            "p = {}",
            t.p_value
        );
    }

    #[test]
    fn mann_whitney_of_identical_samples_is_not_significant() {
        let x: Vec<f64> = (1..=50).map(|i| f64::from(i) * 3.0).collect();
        let t = mann_whitney_greater(&sketch(&x), &sketch(&x)).unwrap();
        assert!(!t.exact);
        assert_eq!(t.u, 1250.0);
        assert!(t.p_value > 0.4, "{t:?}");
    }

    #[test]
    fn mann_whitney_all_tied_gives_p_one() {
        let t = mann_whitney_greater(&sketch(&[5.0; 4]), &sketch(&[5.0; 3])).unwrap();
        assert_eq!(t.p_value, 1.0);
        assert!(mann_whitney_greater(&Sketch::new(), &sketch(&[1.0])).is_none());
    }

    #[test]
    fn binomial_tail_matches_closed_form() {
        // P(X >= 3), n = 3, p = 0.05 is 0.05^3.
        assert!(close(binomial_at_least(3, 3, 0.05), 1.25e-4, 1e-9));
        // P(X >= 2) = 3 p^2 (1-p) + p^3.
        assert!(close(binomial_at_least(2, 3, 0.05), 0.007_25, 1e-9));
        assert_eq!(binomial_at_least(0, 3, 0.05), 1.0);
        assert_eq!(binomial_at_least(4, 3, 0.05), 0.0);
    }

    #[test]
    fn fisher_matches_the_tea_tasting_table() {
        // Fisher's lady tasting tea: 3 of 4 right vs 1 of 4: one-sided p = 17/70
        // (scipy.stats.fisher_exact([[3,1],[1,3]], alternative="greater")
        // gives 0.24285714285714283).
        assert!(close(rate_greater(3, 4, 1, 4), 17.0 / 70.0, 1e-9));
        // 8 of 10 failures vs 0 of 200 is overwhelming.
        assert!(rate_greater(8, 10, 0, 200) < 1e-9);
        assert_eq!(rate_greater(0, 10, 0, 200), 1.0);
    }

    #[test]
    fn large_counts_use_the_z_test_consistently() {
        // 2% vs 1% on 20k each: z = 8.2, p about 1e-16.
        let p = rate_greater(400, 20_000, 200, 20_000);
        assert!(p < 1e-12, "{p}");
        let same = rate_greater(200, 20_000, 200, 20_000);
        assert!((same - 0.5).abs() < 1e-9, "{same}");
    }
}
