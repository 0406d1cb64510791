//! Significance tests the rules use, computed from sketches and counts.
//!
//! Pure functions of their arguments; distributions come from `statrs`. What
//! is implemented here is the bookkeeping around them:
//! - Mann-Whitney U, one-sided, with the tie correction of the variance and a
//!   continuity correction (normal approximation; Hollander & Wolfe,
//!   "Nonparametric Statistical Methods", 3rd ed., §4.1), computed bucket by
//!   bucket: values in one sketch bucket are ties.
//! - Fisher's exact test, one-sided, as the upper tail of the hypergeometric
//!   distribution; a pooled two-proportion z-test when the counts are large.
//! - The exact binomial upper tail.

use statrs::distribution::{Binomial, DiscreteCDF, Hypergeometric};
use statrs::function::erf::erfc;

use crate::aggregate::Sketch;

/// Above this many requests in total, the rate test uses the normal
/// approximation: the exact sum costs O(n) and agrees to many digits there.
const FISHER_EXACT_MAX: u64 = 20_000;

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
    /// One-sided p-value for "the candidate is slower".
    pub p_value: f64,
}

/// Mann-Whitney U test of `candidate` > `baseline` on the sketches' buckets.
/// `None` when either side is empty.
pub fn mann_whitney_greater(candidate: &Sketch, baseline: &Sketch) -> Option<RankTest> {
    let n1 = candidate.count() as f64;
    let n2 = baseline.count() as f64;
    if n1 == 0.0 || n2 == 0.0 {
        return None;
    }
    let mut cand = candidate.buckets().peekable();
    let mut base = baseline.buckets().peekable();
    let mut u = 0.0;
    let mut baseline_below = 0.0;
    let mut tie_term = 0.0;
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
            p_value: 1.0,
        });
    }
    // Continuity correction towards the mean.
    let z = (u - mean - 0.5) / variance.sqrt();
    Some(RankTest {
        u,
        z,
        p_value: normal_sf(z).clamp(0.0, 1.0),
    })
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
    fn mann_whitney_matches_scipy_asymptotic_with_ties() {
        // scipy.stats.mannwhitneyu(x, y, alternative="greater",
        //   method="asymptotic", use_continuity=True) on these data gives
        //   U = 34.5, p = 0.030739764386779955 (values are far apart relative
        //   to the sketch's 1% buckets, so ranks and ties are exact).
        let x = [120.0, 150.0, 150.0, 200.0, 260.0, 300.0, 90.0];
        let y = [100.0, 90.0, 110.0, 150.0, 95.0, 105.0];
        let t = mann_whitney_greater(&sketch(&x), &sketch(&y)).unwrap();
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
