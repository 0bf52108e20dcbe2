//! The statistics against reference values computed independently with SciPy 1.17 / NumPy 2.4
//! (`scipy.stats.ttest_ind(equal_var=False)`, `mannwhitneyu(method="exact"|"asymptotic")`,
//! `t.interval`, `f.sf`, `numpy.quantile`); the effect sizes from their textbook formulas in Python.

use report::stats::{self, MannWhitneyMethod};

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
