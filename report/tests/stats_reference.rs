//! The statistics against reference values computed independently with SciPy 1.17 / NumPy 2.4
//! (`scipy.stats.ttest_ind(equal_var=False)`, `mannwhitneyu(method="exact"|"asymptotic")`,
//! `t.interval`, `f.sf`, `numpy.quantile`); the effect sizes from their textbook formulas in Python.
//!
//! The paired references were derived by hand: Wilcoxon exact p-values by counting subsets of
//! {1, …, n} (the exact null distribution), the normal approximation and the t-based values from
//! their formulas evaluated with mpmath at 40 digits (Student-t tail as a regularized incomplete
//! beta function), which is what `scipy.stats.ttest_rel` and `wilcoxon` compute.

use report::stats::{self, MannWhitneyMethod, WilcoxonMethod};

const A: [f64; 5] = [0.912, 0.905, 0.921, 0.899, 0.917];
const B: [f64; 6] = [0.894, 0.901, 0.889, 0.897, 0.892, 0.903];

fn close(actual: f64, expected: f64, tolerance: f64) {
    assert!((actual - expected).abs() <= tolerance, "got {actual}, expected {expected} (± {tolerance})");
}

#[test]
fn descriptive_statistics_match_numpy() {
    close(stats::mean(&A).unwrap(), 0.9108, 1e-12);
    close(stats::sample_std(&A).unwrap(), 0.0088994381845148, 1e-12);
    close(stats::median(&A).unwrap(), 0.912, 1e-12);
    close(stats::median(&B).unwrap(), 0.8955, 1e-12);
    close(stats::quantile(&B, 0.25).unwrap(), 0.8925, 1e-12);
    close(stats::quantile(&B, 0.75).unwrap(), 0.9, 1e-12);
    close(stats::quantile(&A, 0.1).unwrap(), 0.9014, 1e-12);
    assert_eq!(stats::mean(&[]), None);
    assert_eq!(stats::sample_std(&[1.0]), None);
}

#[test]
fn t_confidence_interval_matches_scipy() {
    let (lo, hi) = stats::t_confidence_interval(&A, 0.95).unwrap();
    close(lo, 0.899749888002048, 1e-9);
    close(hi, 0.921850111997952, 1e-9);
}

#[test]
fn box_stats_whiskers_stop_at_last_value_within_one_and_a_half_iqr() {
    // q1 = 2.25, q3 = 4.75 (IQR 2.5): fences at -1.5 and 8.5, so 20 lies beyond the upper whisker.
    let b = stats::box_stats(&[1.0, 2.0, 3.0, 4.0, 5.0, 20.0]).unwrap();
    close(b.q1, 2.25, 1e-12);
    close(b.median, 3.5, 1e-12);
    close(b.q3, 4.75, 1e-12);
    close(b.whisker_low, 1.0, 1e-12);
    close(b.whisker_high, 5.0, 1e-12);
}

#[test]
fn welch_t_test_matches_scipy() {
    let w = stats::welch_t_test(&A, &B).unwrap();
    close(w.t, 3.25766835340476, 1e-9);
    close(w.df, 6.3267750213858, 1e-9);
    close(w.p_value, 0.0160399438324093, 1e-7);
    close(w.ci95.0, 0.00382107729045026, 1e-9);
    close(w.ci95.1, 0.0257789227095494, 1e-9);
    close(w.mean_difference, 0.9108 - 0.896, 1e-12);
    assert!(stats::welch_t_test(&[1.0, 1.0], &[1.0, 1.0]).is_none(), "zero variance has no test");
}

#[test]
fn mann_whitney_exact_matches_scipy() {
    let m = stats::mann_whitney_u(&A, &B).unwrap();
    assert_eq!(m.method, MannWhitneyMethod::Exact);
    close(m.u, 28.0, 1e-12);
    close(m.p_value, 0.0173160173160173, 1e-12);

    let m = stats::mann_whitney_u(&[0.1, 0.4, 0.5], &[0.2, 0.3, 0.6, 0.7]).unwrap();
    assert_eq!(m.method, MannWhitneyMethod::Exact);
    close(m.u, 4.0, 1e-12);
    close(m.p_value, 0.628571428571429, 1e-12);
}

#[test]
fn mann_whitney_with_ties_uses_corrected_normal_approximation_like_scipy() {
    let m =
        stats::mann_whitney_u(&[1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0], &[2.0, 3.0, 3.0, 4.0, 6.0, 7.0]).unwrap();
    assert_eq!(m.method, MannWhitneyMethod::NormalApproximation);
    close(m.u, 14.0, 1e-12);
    close(m.p_value, 0.345033375529806, 1e-9);
}

#[test]
fn effect_sizes_match_formulas() {
    close(stats::cohens_d(&A, &B).unwrap(), 2.06836287918728, 1e-9);
    close(stats::hedges_g(&A, &B).unwrap(), 1.8910746323998, 1e-9);
    close(stats::cliffs_delta(&A, &B).unwrap(), 26.0 / 30.0, 1e-12);
    close(
        stats::cliffs_delta(&[1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0], &[2.0, 3.0, 3.0, 4.0, 6.0, 7.0]).unwrap(),
        -0.333333333333333,
        1e-12,
    );
}

#[test]
fn variance_ratio_f_test_matches_scipy() {
    let (ratio, p) = stats::variance_ratio_f_test(&B, &A).unwrap();
    close(ratio, 0.363636363636364, 1e-9);
    close(p, 0.851579350248351, 1e-9);
}

#[test]
fn describe_collects_the_summary_numbers() {
    let d = stats::describe(&A).unwrap();
    assert_eq!(d.n, 5);
    close(d.min, 0.899, 1e-12);
    close(d.max, 0.921, 1e-12);
    close(d.ci95.unwrap().0, 0.899749888002048, 1e-9);
    let single = stats::describe(&[0.5]).unwrap();
    assert_eq!((single.std, single.ci95), (None, None));
    assert!(stats::describe(&[]).is_none());
}

/// Paired runs: differences 1.1, 0.1, 1.8, 0.9, 1.5 (no zeros, no ties).
const X: [f64; 5] = [91.2, 90.5, 92.1, 89.9, 91.7];
const Y: [f64; 5] = [90.1, 90.4, 90.3, 89.0, 90.2];

#[test]
fn paired_t_test_matches_the_formula() {
    let t = stats::paired_t_test(&X, &Y).unwrap();
    assert_eq!((t.n, t.df), (5, 4.0));
    close(t.mean_difference, 1.08, 1e-12);
    close(t.sd_difference, 0.649615270756469, 1e-12);
    close(t.t, 3.71751331043618, 1e-9);
    close(t.p_value, 0.0205189888197291, 1e-9);
    // Mean ± t(0.975, 4) · sd / √5 with t(0.975, 4) = 2.77644510519779.
    close(t.ci95.0, 0.273396105618302, 1e-9);
    close(t.ci95.1, 1.88660389438170, 1e-9);
    // Swapping the samples mirrors everything.
    let back = stats::paired_t_test(&Y, &X).unwrap();
    close(back.t, -t.t, 1e-12);
    close(back.p_value, t.p_value, 1e-12);
}

#[test]
fn paired_t_test_without_an_effect_has_a_large_p() {
    let a = [90.0, 91.5, 88.7, 90.9, 89.4];
    let b = [90.1, 90.6, 89.8, 90.4, 89.9];
    let t = stats::paired_t_test(&a, &b).unwrap();
    close(t.mean_difference, -0.06, 1e-12);
    close(t.t, -0.169299794394930, 1e-9);
    close(t.p_value, 0.873777702653790, 1e-9);
    assert!(t.ci95.0 < 0.0 && t.ci95.1 > 0.0);
}

#[test]
fn wilcoxon_exact_counts_subsets() {
    // All five differences positive: W− = 0, P(W ≤ 0) = 1/32, p = 2/32.
    let w = stats::wilcoxon_signed_rank(&X, &Y).unwrap();
    assert_eq!(w.method, WilcoxonMethod::Exact);
    assert_eq!((w.n, w.zeros_dropped, w.w_plus, w.w_minus, w.statistic), (5, 0, 15.0, 0.0, 0.0));
    close(w.p_value, 0.0625, 1e-15);

    // d = 1.2, −0.3, 2.5, 0.7, 1.9: W− = rank(0.3) = 1; sums ≤ 1 are {} and {1}: p = 2 · 2/32.
    let w = stats::wilcoxon_signed_rank(&[1.2, -0.3, 2.5, 0.7, 1.9], &[0.0; 5]).unwrap();
    assert_eq!((w.w_plus, w.statistic, w.method), (14.0, 1.0, WilcoxonMethod::Exact));
    close(w.p_value, 0.125, 1e-15);

    // n = 6 with W− = 1 + 2 = 3; sums ≤ 3: {}, {1}, {2}, {3}, {1,2}: p = 2 · 5/64.
    let w = stats::wilcoxon_signed_rank(&[-0.3, -0.4, 0.6, 0.8, 0.9, 1.1], &[0.0; 6]).unwrap();
    assert_eq!((w.w_minus, w.statistic), (3.0, 3.0));
    close(w.p_value, 0.15625, 1e-15);
}

#[test]
fn wilcoxon_with_a_zero_and_ties_uses_the_corrected_normal_approximation() {
    // d = 0, 1, −1, 2, 2, 3, −4, 5: the zero is dropped (n = 7); ranks 1.5, 1.5, 3.5, 3.5, 5, 6, 7;
    // W+ = 20.5, W− = 7.5; var = 7·8·15/24 − (6 + 6)/48 = 34.75; z = (20.5 − 14 − 0.5)/√34.75.
    let d = [0.0, 1.0, -1.0, 2.0, 2.0, 3.0, -4.0, 5.0];
    let w = stats::wilcoxon_signed_rank(&d, &[0.0; 8]).unwrap();
    assert_eq!(w.method, WilcoxonMethod::NormalApproximation);
    assert_eq!((w.n, w.zeros_dropped, w.w_plus, w.w_minus, w.statistic), (7, 1, 20.5, 7.5, 7.5));
    close(w.p_value, 0.308760313527533, 1e-9);
}

#[test]
fn pitman_morgan_matches_the_formula() {
    // Paired samples, the first with the wider spread: corr(a + b, a − b) = 0.99652, df = 3.
    let a = [90.0, 91.5, 88.7, 90.9, 89.4];
    let b = [90.1, 90.6, 89.8, 90.4, 89.9];
    let pm = stats::pitman_morgan(&a, &b).unwrap();
    close(pm.variance_ratio, 11.1946902654867, 1e-9);
    close(pm.correlation, 0.996521895458380, 1e-12);
    close(pm.t, 20.7128146241686, 1e-7);
    assert_eq!(pm.df, 3.0);
    close(pm.p_value, 0.000123052686909651, 1e-10);
}
