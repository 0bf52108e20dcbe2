//! Descriptive statistics and two-sample tests used by the report, exported for reuse; the paired
//! tests (paired t, Wilcoxon signed-rank, Pitman-Morgan) live in [`paired`].
//!
//! Every function takes plain `&[f64]` samples and returns `None` where the statistic is undefined
//! (empty sample, too few values, zero variance), never NaN.
//!
//! Conventions (chosen to match SciPy/NumPy defaults so results can be checked there):
//! - standard deviation and variance are the sample ones (divisor n − 1);
//! - quantiles interpolate linearly between order statistics (NumPy's default, R type 7);
//! - confidence intervals and Welch's test use Student's t;
//! - Mann-Whitney U is exact when both samples have at most [`MANN_WHITNEY_EXACT_MAX_N`] values and
//!   there are no ties, otherwise the normal approximation with tie and continuity correction
//!   (SciPy's `method="exact"` / `method="asymptotic"`).

pub mod paired;

pub use paired::{
    PairedTTest, PitmanMorgan, WILCOXON_EXACT_MAX_N, Wilcoxon, WilcoxonMethod, paired_t_test, pitman_morgan,
    wilcoxon_signed_rank,
};
use statrs::distribution::{ContinuousCDF, FisherSnedecor, Normal, StudentsT};

/// Largest per-sample size for which [`mann_whitney_u`] enumerates the exact null distribution.
pub const MANN_WHITNEY_EXACT_MAX_N: usize = 30;

/// Arithmetic mean.
pub fn mean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    Some(xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Sample variance (divisor n − 1); needs at least two values.
pub fn sample_variance(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs)?;
    Some(xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64)
}

/// Sample standard deviation (divisor n − 1); needs at least two values.
pub fn sample_std(xs: &[f64]) -> Option<f64> {
    sample_variance(xs).map(f64::sqrt)
}

fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Quantile `q` in [0, 1] with linear interpolation between order statistics (NumPy default).
pub fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let v = sorted(xs);
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

/// Median (the 0.5 quantile).
pub fn median(xs: &[f64]) -> Option<f64> {
    quantile(xs, 0.5)
}

/// Two-sided Student-t confidence interval for the mean at `level` (e.g. 0.95); needs n ≥ 2.
pub fn t_confidence_interval(xs: &[f64], level: f64) -> Option<(f64, f64)> {
    let n = xs.len();
    let (m, s) = (mean(xs)?, sample_std(xs)?);
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64).ok()?.inverse_cdf(0.5 + level / 2.0);
    let half = t * s / (n as f64).sqrt();
    Some((m - half, m + half))
}

/// Box-plot numbers: quartiles and Tukey whiskers (furthest values within 1.5 IQR of the box).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxStats {
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
    pub whisker_low: f64,
    pub whisker_high: f64,
}

/// Quartiles and 1.5 IQR whiskers of a non-empty sample.
pub fn box_stats(xs: &[f64]) -> Option<BoxStats> {
    let (q1, median, q3) = (quantile(xs, 0.25)?, median(xs)?, quantile(xs, 0.75)?);
    let iqr = q3 - q1;
    let (lo_fence, hi_fence) = (q1 - 1.5 * iqr, q3 + 1.5 * iqr);
    let inside = || xs.iter().copied().filter(|x| *x >= lo_fence && *x <= hi_fence);
    let whisker_low = inside().fold(f64::INFINITY, f64::min);
    let whisker_high = inside().fold(f64::NEG_INFINITY, f64::max);
    Some(BoxStats { q1, median, q3, whisker_low, whisker_high })
}

/// Welch's unequal-variance t-test of mean(a) − mean(b).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WelchTest {
    /// mean(a) − mean(b).
    pub mean_difference: f64,
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// 95% confidence interval of the difference of means.
    pub ci95: (f64, f64),
}

/// Welch's t-test; needs two values per sample and a non-zero combined variance.
pub fn welch_t_test(a: &[f64], b: &[f64]) -> Option<WelchTest> {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (va, vb) = (sample_variance(a)? / na, sample_variance(b)? / nb);
    let se = (va + vb).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return None;
    }
    let mean_difference = mean(a)? - mean(b)?;
    let t = mean_difference / se;
    let df = (va + vb).powi(2) / (va.powi(2) / (na - 1.0) + vb.powi(2) / (nb - 1.0));
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    let p_value = (2.0 * dist.sf(t.abs())).min(1.0);
    let half = dist.inverse_cdf(0.975) * se;
    Some(WelchTest {
        mean_difference,
        t,
        df,
        p_value,
        ci95: (mean_difference - half, mean_difference + half),
    })
}

/// How a Mann-Whitney p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MannWhitneyMethod {
    /// Exact null distribution (no ties, both n ≤ [`MANN_WHITNEY_EXACT_MAX_N`]).
    Exact,
    /// Normal approximation with tie correction and continuity correction.
    NormalApproximation,
}

impl MannWhitneyMethod {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::NormalApproximation => "normal approx.",
        }
    }
}

/// Two-sided Mann-Whitney U test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U statistic of the first sample: pairs (x in a, y in b) with x > y, ties counting ½.
    pub u: f64,
    pub p_value: f64,
    pub method: MannWhitneyMethod,
}

/// Two-sided Mann-Whitney U test of `a` against `b`; needs a value in each sample.
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let ranks = average_ranks(a.iter().chain(b).copied().collect());
    let rank_sum_a: f64 = ranks.ranks[..n1].iter().sum();
    let u = rank_sum_a - (n1 * (n1 + 1)) as f64 / 2.0;
    let u_max = (n1 * n2) as f64;
    // Both tails are symmetric, so work with the larger of U and its mirror.
    let u_big = u.max(u_max - u);
    let exact = ranks.tie_term == 0.0 && n1 <= MANN_WHITNEY_EXACT_MAX_N && n2 <= MANN_WHITNEY_EXACT_MAX_N;
    let (p, method) = if exact {
        let counts = mann_whitney_null_counts(n1, n2);
        let total: f64 = counts.iter().sum();
        let upper: f64 = counts[u_big.round() as usize..].iter().sum();
        (2.0 * upper / total, MannWhitneyMethod::Exact)
    } else {
        let n = (n1 + n2) as f64;
        let var = (n1 * n2) as f64 / 12.0 * ((n + 1.0) - ranks.tie_term / (n * (n - 1.0)));
        if var <= 0.0 {
            return Some(MannWhitney { u, p_value: 1.0, method: MannWhitneyMethod::NormalApproximation });
        }
        let z = (u_big - u_max / 2.0 - 0.5) / var.sqrt();
        (2.0 * Normal::new(0.0, 1.0).ok()?.sf(z), MannWhitneyMethod::NormalApproximation)
    };
    Some(MannWhitney { u, p_value: p.min(1.0), method })
}

struct Ranks {
    ranks: Vec<f64>,
    /// Σ (t³ − t) over groups of tied values.
    tie_term: f64,
}

fn average_ranks(values: Vec<f64>) -> Ranks {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut tie_term = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let average = (start + end + 1) as f64 / 2.0; // mean of ranks start+1 ..= end
        for &i in &order[start..end] {
            ranks[i] = average;
        }
        let t = (end - start) as f64;
        tie_term += t * t * t - t;
        start = end;
    }
    Ranks { ranks, tie_term }
}

/// counts[u] = number of orderings of n1 + n2 distinct values giving U = u for the first sample.
fn mann_whitney_null_counts(n1: usize, n2: usize) -> Vec<f64> {
    // f[i][j][u] via f(i, j, u) = f(i − 1, j, u − j) + f(i, j − 1, u), stored per (i, j).
    let mut table: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); n2 + 1]; n1 + 1];
    for i in 0..=n1 {
        for j in 0..=n2 {
            let mut counts = vec![0.0; i * j + 1];
            if i == 0 || j == 0 {
                counts[0] = 1.0;
            } else {
                for (u, slot) in counts.iter_mut().enumerate() {
                    let from_a =
                        if u >= j { table[i - 1][j].get(u - j).copied().unwrap_or(0.0) } else { 0.0 };
                    let from_b = table[i][j - 1].get(u).copied().unwrap_or(0.0);
                    *slot = from_a + from_b;
                }
            }
            table[i][j] = counts;
        }
    }
    std::mem::take(&mut table[n1][n2])
}

/// Cohen's d of a against b with the pooled sample standard deviation.
pub fn cohens_d(a: &[f64], b: &[f64]) -> Option<f64> {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let pooled =
        (((na - 1.0) * sample_variance(a)? + (nb - 1.0) * sample_variance(b)?) / (na + nb - 2.0)).sqrt();
    if pooled <= 0.0 {
        return None;
    }
    Some((mean(a)? - mean(b)?) / pooled)
}

/// Hedges' g: Cohen's d times the small-sample correction 1 − 3 / (4(n_a + n_b) − 9).
pub fn hedges_g(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = (a.len() + b.len()) as f64;
    Some(cohens_d(a, b)? * (1.0 - 3.0 / (4.0 * n - 9.0)))
}

/// Cliff's delta: P(x > y) − P(x < y) over all pairs (x in a, y in b), in [−1, 1].
pub fn cliffs_delta(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let score: i64 = a.iter().flat_map(|x| b.iter().map(move |y| (x > y) as i64 - (x < y) as i64)).sum();
    Some(score as f64 / (a.len() * b.len()) as f64)
}

/// One-sided F-test that `a` has a larger variance than `b`: (var(a) / var(b), p-value).
pub fn variance_ratio_f_test(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    let (va, vb) = (sample_variance(a)?, sample_variance(b)?);
    if vb <= 0.0 {
        return None;
    }
    let ratio = va / vb;
    let dist = FisherSnedecor::new((a.len() - 1) as f64, (b.len() - 1) as f64).ok()?;
    Some((ratio, dist.sf(ratio)))
}

/// The numbers a report shows for one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Describe {
    pub n: usize,
    pub mean: f64,
    /// `None` for n < 2.
    pub std: Option<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// 95% t-based interval of the mean; `None` for n < 2.
    pub ci95: Option<(f64, f64)>,
}

/// Summary of a non-empty sample.
pub fn describe(xs: &[f64]) -> Option<Describe> {
    Some(Describe {
        n: xs.len(),
        mean: mean(xs)?,
        std: sample_std(xs),
        median: median(xs)?,
        min: xs.iter().copied().fold(f64::INFINITY, f64::min),
        max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ci95: t_confidence_interval(xs, 0.95),
    })
}
