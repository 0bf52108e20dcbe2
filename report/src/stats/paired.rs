//! Paired two-sample statistics: the paired t-test, the Wilcoxon signed-rank test and the
//! Pitman-Morgan test of a larger variance, for samples whose values pair up one to one.
//!
//! Every function takes two equally long slices with `a[i]` paired to `b[i]` and works on the
//! differences `a[i] − b[i]`; it returns `None` where the statistic is undefined, never NaN.
//!
//! Conventions (chosen to match SciPy so results can be checked there):
//! - paired t: `scipy.stats.ttest_rel(a, b)`, df = n − 1, two-sided p; the 95% CI of the mean
//!   difference uses Student's t;
//! - Wilcoxon signed-rank, two-sided: zero differences are **dropped** before ranking (SciPy's
//!   default `zero_method="wilcox"`), so n counts non-zero differences only; ranks of |d| are
//!   averaged over ties; the statistic is min(W+, W−). The p-value is exact (SciPy
//!   `method="exact"`) when n ≤ [`WILCOXON_EXACT_MAX_N`], nothing was dropped and no |d| ties;
//!   otherwise the normal approximation with tie correction and continuity correction (SciPy
//!   `method="approx", correction=True`);
//! - Pitman-Morgan: var(a) > var(b) exactly when the sums a + b and differences a − b correlate
//!   positively, so the one-sided test is the t-test of that correlation (df = n − 2). Unlike the
//!   F-test it allows for the correlation that shared seeds create between paired runs.

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

use super::{average_ranks, mean, sample_std, sample_variance};

/// Largest number of non-zero differences for which [`wilcoxon_signed_rank`] enumerates the exact
/// null distribution (SciPy's `method="auto"` threshold).
pub const WILCOXON_EXACT_MAX_N: usize = 50;

fn differences(a: &[f64], b: &[f64]) -> Option<Vec<f64>> {
    (a.len() == b.len()).then(|| a.iter().zip(b).map(|(x, y)| x - y).collect())
}

/// Paired t-test of mean(a − b).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedTTest {
    /// Number of pairs.
    pub n: usize,
    /// mean(a − b).
    pub mean_difference: f64,
    /// Sample sd of the differences (n − 1).
    pub sd_difference: f64,
    pub t: f64,
    /// n − 1.
    pub df: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// 95% confidence interval of the mean difference.
    pub ci95: (f64, f64),
}

/// Paired t-test; needs two pairs and differences that are not all equal.
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Option<PairedTTest> {
    let d = differences(a, b)?;
    let n = d.len();
    let (mean_difference, sd_difference) = (mean(&d)?, sample_std(&d)?);
    let se = sd_difference / (n as f64).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return None;
    }
    let t = mean_difference / se;
    let df = (n - 1) as f64;
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    let p_value = (2.0 * dist.sf(t.abs())).min(1.0);
    let half = dist.inverse_cdf(0.975) * se;
    Some(PairedTTest {
        n,
        mean_difference,
        sd_difference,
        t,
        df,
        p_value,
        ci95: (mean_difference - half, mean_difference + half),
    })
}

/// How a Wilcoxon p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WilcoxonMethod {
    /// Exact null distribution (no zeros dropped, no ties, n ≤ [`WILCOXON_EXACT_MAX_N`]).
    Exact,
    /// Normal approximation with tie correction and continuity correction.
    NormalApproximation,
}

impl WilcoxonMethod {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::NormalApproximation => "normal approx.",
        }
    }
}

/// Two-sided Wilcoxon signed-rank test of the differences a − b.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wilcoxon {
    /// Non-zero differences ranked.
    pub n: usize,
    /// Zero differences dropped before ranking.
    pub zeros_dropped: usize,
    /// Rank sum of the positive differences.
    pub w_plus: f64,
    /// Rank sum of the negative differences.
    pub w_minus: f64,
    /// min(W+, W−), SciPy's two-sided statistic.
    pub statistic: f64,
    pub p_value: f64,
    pub method: WilcoxonMethod,
}

/// Wilcoxon signed-rank test; needs at least one non-zero difference.
pub fn wilcoxon_signed_rank(a: &[f64], b: &[f64]) -> Option<Wilcoxon> {
    let all = differences(a, b)?;
    let d: Vec<f64> = all.iter().copied().filter(|x| *x != 0.0).collect();
    let (n, zeros_dropped) = (d.len(), all.len() - d.len());
    if n == 0 {
        return None;
    }
    let ranks = average_ranks(d.iter().map(|x| x.abs()).collect());
    // `+ 0.0` turns the empty sum's −0.0 into 0.0.
    let w_plus: f64 =
        d.iter().zip(&ranks.ranks).filter(|(x, _)| **x > 0.0).map(|(_, r)| r).sum::<f64>() + 0.0;
    let w_minus = (n * (n + 1)) as f64 / 2.0 - w_plus;
    let statistic = w_plus.min(w_minus);
    let exact = zeros_dropped == 0 && ranks.tie_term == 0.0 && n <= WILCOXON_EXACT_MAX_N;
    let (p, method) = if exact {
        let counts = signed_rank_null_counts(n);
        let total: f64 = counts.iter().sum();
        // Without ties every rank sum is an integer; the distribution is symmetric.
        let lower: f64 = counts[..=statistic.round() as usize].iter().sum();
        (2.0 * lower / total, WilcoxonMethod::Exact)
    } else {
        let nf = n as f64;
        let centre = nf * (nf + 1.0) / 4.0;
        let var = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - ranks.tie_term / 48.0;
        if var <= 0.0 {
            (1.0, WilcoxonMethod::NormalApproximation)
        } else {
            let correction = 0.5 * (w_plus - centre).signum() * f64::from(w_plus != centre);
            let z = (w_plus - centre - correction) / var.sqrt();
            (2.0 * Normal::new(0.0, 1.0).ok()?.sf(z.abs()), WilcoxonMethod::NormalApproximation)
        }
    };
    Some(Wilcoxon { n, zeros_dropped, w_plus, w_minus, statistic, p_value: p.min(1.0), method })
}

/// counts[s] = number of subsets of {1, …, n} whose sum is s (the null distribution of W+).
fn signed_rank_null_counts(n: usize) -> Vec<f64> {
    let mut counts = vec![0.0; n * (n + 1) / 2 + 1];
    counts[0] = 1.0;
    for k in 1..=n {
        // Downwards, so each rank k enters a subset at most once.
        for s in (k..counts.len()).rev() {
            counts[s] += counts[s - k];
        }
    }
    counts
}

/// One-sided Pitman-Morgan test that paired sample `a` has a larger variance than `b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PitmanMorgan {
    /// var(a) / var(b).
    pub variance_ratio: f64,
    /// Correlation of a + b with a − b.
    pub correlation: f64,
    pub t: f64,
    /// n − 2.
    pub df: f64,
    /// One-sided p-value of var(a) > var(b).
    pub p_value: f64,
}

/// Pitman-Morgan test; needs three pairs, var(b) > 0, and sums and differences that vary.
pub fn pitman_morgan(a: &[f64], b: &[f64]) -> Option<PitmanMorgan> {
    let d = differences(a, b)?;
    let s: Vec<f64> = a.iter().zip(b).map(|(x, y)| x + y).collect();
    let n = d.len();
    let (var_a, var_b) = (sample_variance(a)?, sample_variance(b)?);
    let (var_s, var_d) = (sample_variance(&s)?, sample_variance(&d)?);
    if n < 3 || var_b <= 0.0 || var_s <= 0.0 || var_d <= 0.0 {
        return None;
    }
    let (ms, md) = (mean(&s)?, mean(&d)?);
    let cov = s.iter().zip(&d).map(|(x, y)| (x - ms) * (y - md)).sum::<f64>() / (n - 1) as f64;
    let correlation = (cov / (var_s * var_d).sqrt()).clamp(-1.0, 1.0);
    let df = (n - 2) as f64;
    let (t, p_value) = if correlation >= 1.0 {
        (f64::INFINITY, 0.0)
    } else if correlation <= -1.0 {
        (f64::NEG_INFINITY, 1.0)
    } else {
        let t = correlation * df.sqrt() / (1.0 - correlation * correlation).sqrt();
        (t, StudentsT::new(0.0, 1.0, df).ok()?.sf(t))
    };
    Some(PitmanMorgan { variance_ratio: var_a / var_b, correlation, t, df, p_value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_counts_are_the_subset_sums_of_one_to_n() {
        // n = 3: subsets {}, {1}, {2}, {3}, {1,2}, {1,3}, {2,3}, {1,2,3} → sums 0,1,2,3,3,4,5,6.
        assert_eq!(signed_rank_null_counts(3), [1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0]);
        let counts = signed_rank_null_counts(20);
        assert_eq!(counts.iter().sum::<f64>(), 2f64.powi(20));
        assert!(counts.iter().zip(counts.iter().rev()).all(|(x, y)| x == y), "symmetric");
    }

    #[test]
    fn mismatched_lengths_and_degenerate_inputs_give_none() {
        assert!(paired_t_test(&[1.0, 2.0], &[1.0]).is_none());
        assert!(paired_t_test(&[1.0], &[0.0]).is_none(), "one pair has no sd");
        assert!(paired_t_test(&[2.0, 3.0, 4.0], &[1.0, 2.0, 3.0]).is_none(), "constant difference");
        assert!(wilcoxon_signed_rank(&[1.0, 2.0], &[1.0, 2.0]).is_none(), "only zero differences");
        assert!(wilcoxon_signed_rank(&[], &[]).is_none());
        assert!(pitman_morgan(&[1.0, 2.0], &[0.0, 1.5]).is_none(), "needs three pairs");
        assert!(pitman_morgan(&[2.0, 3.0, 4.0], &[1.0, 2.0, 3.0]).is_none(), "differences do not vary");
    }

    #[test]
    fn wilcoxon_sign_follows_the_direction_and_the_statistic_is_the_smaller_sum() {
        let up = wilcoxon_signed_rank(&[2.0, 3.0, 5.0], &[1.0, 1.0, 1.0]).unwrap();
        assert_eq!((up.w_plus, up.w_minus, up.statistic), (6.0, 0.0, 0.0));
        let down = wilcoxon_signed_rank(&[1.0, 1.0, 1.0], &[2.0, 3.0, 5.0]).unwrap();
        assert_eq!((down.w_plus, down.w_minus, down.statistic), (0.0, 6.0, 0.0));
        assert!(down.statistic.is_sign_positive(), "no −0 to print");
        assert_eq!(up.p_value, down.p_value);
        // n = 3, all positive: p = 2 · 1/8.
        assert_eq!((up.p_value, up.method), (0.25, WilcoxonMethod::Exact));
    }

    #[test]
    fn a_dropped_zero_forces_the_normal_approximation() {
        let w = wilcoxon_signed_rank(&[1.0, 2.0, 3.5, 4.0], &[1.0, 1.0, 1.0, 1.0]).unwrap();
        assert_eq!((w.n, w.zeros_dropped, w.method), (3, 1, WilcoxonMethod::NormalApproximation));
    }

    #[test]
    fn pitman_morgan_direction_follows_the_wider_sample() {
        let narrow = [10.0, 10.1, 9.9, 10.05, 9.95];
        let wide = [10.0, 10.5, 9.4, 10.3, 9.7];
        let wider = pitman_morgan(&wide, &narrow).unwrap();
        assert!(wider.variance_ratio > 1.0 && wider.correlation > 0.0 && wider.p_value < 0.05, "{wider:?}");
        let narrower = pitman_morgan(&narrow, &wide).unwrap();
        assert!(narrower.p_value > 0.95, "{narrower:?}");
        // Perfectly proportional deviations: correlation 1, p = 0 rather than a division by zero.
        let exact = pitman_morgan(&[0.0, 3.0, 6.0], &[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((exact.correlation, exact.p_value), (1.0, 0.0));
    }
}
