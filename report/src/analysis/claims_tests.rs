//! Every verdict branch of the claim rules, on hand-made paired (and one unpaired) results.

use super::*;
use crate::analysis::compare::compare;
use crate::analysis::compare::tests::{seeded, variant};

const BASELINE: [f64; 5] = [90.0, 90.4, 89.8, 90.2, 90.1];

/// The comparison of a variant at `BASELINE + differences` (seeds 0–4) with the baseline; the
/// claim rules proper apply when it does not train like the baseline by construction.
fn compared(name: &str, differences: [f64; 5], trains_like: bool) -> Comparison {
    let values: Vec<f64> = BASELINE.iter().zip(differences).map(|(b, d)| b + d).collect();
    compare(&variant(name, &seeded(&values)), &variant("normal_lr1e-3", &seeded(&BASELINE)), trains_like)
}

fn shifted(name: &str, differences: [f64; 5]) -> Comparison {
    compared(name, differences, false)
}

fn identical(name: &str) -> Comparison {
    compared(name, [0.0; 5], true)
}

/// Differences with CI (+1.30, +1.70).
const PLUS_1_5: [f64; 5] = [1.4, 1.6, 1.5, 1.3, 1.7];
/// CI (+0.41, +0.59): above 0, below 1.
const PLUS_0_5: [f64; 5] = [0.4, 0.5, 0.6, 0.5, 0.5];
/// CI (+2.91, +3.09): above 2.
const PLUS_3: [f64; 5] = [3.0, 3.1, 2.9, 3.0, 3.0];
/// Mean +0.8, CI (+0.15, +1.45): above 0 and reaching into [1, 2].
const PLUS_0_8_WIDE: [f64; 5] = [0.9, 0.2, 1.6, 0.5, 0.8];
/// CI (−1.20, −0.80).
const MINUS_1: [f64; 5] = [-1.0, -1.2, -0.8, -1.1, -0.9];
/// CI (−0.39, +0.51): includes 0.
const AROUND_0: [f64; 5] = [0.5, -0.4, 0.3, -0.2, 0.1];
/// CI (−1.10, +1.22): includes 0, far beyond ±0.5.
const AROUND_0_WIDE: [f64; 5] = [1.0, -1.2, 0.8, -0.6, 0.3];

fn softmax(differences: [f64; 5]) -> ClaimVerdict {
    judge_better_by_one_to_two(Some(&shifted("natural_softmax", differences)), "normal_lr1e-3")
}

#[test]
fn softmax_supported_when_the_ci_is_above_zero_and_the_estimate_within_one_to_two() {
    let v = softmax(PLUS_1_5);
    assert_eq!(v.verdict, Verdict::Supported, "{}", v.evidence);
    assert!(v.evidence.contains("+1.50 points (95% CI +1.30 to +1.70)"), "{}", v.evidence);
    assert!(v.evidence.contains("paired t") && v.evidence.contains("Wilcoxon"), "{}", v.evidence);
    assert!(v.evidence.contains("seeds 0–4"), "{}", v.evidence);
}

#[test]
fn softmax_estimate_is_judged_at_the_printed_precision() {
    // Δ = +0.998 prints as +1.00 and counts as within 1–2; +0.994 prints as +0.99 and does not.
    let v = softmax([0.898, 1.098, 0.998, 0.948, 1.048]);
    assert_eq!(v.verdict, Verdict::Supported, "{}", v.evidence);
    assert!(v.evidence.contains("= +1.00 points"), "{}", v.evidence);
    assert_eq!(softmax([0.894, 1.094, 0.994, 0.944, 1.044]).verdict, Verdict::PartlySupported);
}

#[test]
fn softmax_partly_supported_when_better_but_the_ci_excludes_one_to_two() {
    for differences in [PLUS_0_5, PLUS_3] {
        let v = softmax(differences);
        assert_eq!(v.verdict, Verdict::PartlySupported, "{}", v.evidence);
        assert!(v.evidence.starts_with("better, but not by 1–2 points"), "{}", v.evidence);
    }
}

#[test]
fn softmax_partly_supported_when_the_ci_reaches_one_to_two_but_the_estimate_does_not() {
    let v = softmax(PLUS_0_8_WIDE);
    assert_eq!(v.verdict, Verdict::PartlySupported, "{}", v.evidence);
    assert!(v.evidence.contains("within the CI but the estimate is outside"), "{}", v.evidence);
}

#[test]
fn softmax_contradicted_below_zero_and_not_supported_around_zero() {
    assert_eq!(softmax(MINUS_1).verdict, Verdict::Contradicted);
    let v = softmax(AROUND_0);
    assert_eq!(v.verdict, Verdict::NotSupported);
    assert!(v.evidence.starts_with("the CI includes 0"), "{}", v.evidence);
}

#[test]
fn softmax_identical_to_the_baseline_is_not_supported_by_construction() {
    let v = judge_better_by_one_to_two(Some(&identical("natural_softmax")), "normal_lr1e-3");
    assert_eq!(v.verdict, Verdict::NotSupported);
    assert_eq!(
        v.evidence,
        "`natural_softmax` is identical to the baseline seed for seed (by construction, bit for bit)"
    );
}

#[test]
fn softmax_unpaired_uses_welch() {
    let c = compare(
        &variant("natural_softmax", &[(10, 91.4), (11, 91.6), (12, 91.5), (13, 91.3), (14, 91.7)]),
        &variant("normal_lr1e-3", &seeded(&[90.0, 90.2, 89.9, 90.1, 90.0])),
        false,
    );
    let v = judge_better_by_one_to_two(Some(&c), "normal_lr1e-3");
    assert_eq!(v.verdict, Verdict::Supported, "{}", v.evidence);
    assert!(v.evidence.contains("Welch t") && v.evidence.contains("Mann-Whitney"), "{}", v.evidence);
    assert!(v.evidence.contains("unpaired, 5 vs 5 seeds"), "{}", v.evidence);
}

#[test]
fn too_few_seeds_no_variant_and_no_variance() {
    let two = compare(
        &variant("natural_softmax", &seeded(&[91.0, 92.0])),
        &variant("b", &seeded(&[90.0, 90.5])),
        false,
    );
    let v = judge_better_by_one_to_two(Some(&two), "b");
    assert_eq!(v.verdict, Verdict::TooFewSeeds);
    assert!(v.evidence.contains("only 2 `natural_softmax`–baseline pairs"), "{}", v.evidence);
    assert_eq!(judge_better_by_one_to_two(None, "b").verdict, Verdict::NoData);
    // Exactly constant differences (integers) leave the paired t-test undefined.
    let flat = compare(
        &variant("normal_lr1e-2", &seeded(&[91.0, 92.0, 93.0])),
        &variant("b", &seeded(&[90.0, 91.0, 92.0])),
        false,
    );
    let v = judge_worse(CLAIM_LR, "normal_lr1e-2", Some(&flat), "b");
    assert_eq!(v.verdict, Verdict::NoData, "{}", v.evidence);
}

#[test]
fn worse_claims_follow_the_ci() {
    let worse = |differences| {
        judge_worse(CLAIM_LR, "normal_lr1e-2", Some(&shifted("normal_lr1e-2", differences)), "normal_lr1e-3")
    };
    assert_eq!(worse(MINUS_1).verdict, Verdict::Supported);
    assert_eq!(worse(PLUS_0_5).verdict, Verdict::Contradicted);
    let v = worse(AROUND_0);
    assert_eq!(v.verdict, Verdict::NotSupported);
    assert!(v.evidence.starts_with("the CI includes 0"), "{}", v.evidence);
}

#[test]
fn hardmax_identical_to_the_baseline_is_not_supported_by_construction() {
    let c = identical("natural_hardmax");
    let v = judge_worse(CLAIM_HARDMAX, "natural_hardmax", Some(&c), "normal_lr1e-3");
    assert_eq!(v.verdict, Verdict::NotSupported);
    assert!(v.evidence.contains("identical to the baseline seed for seed (by construction, bit for bit)"));
    assert!(!v.evidence.contains("not significant"));
}

#[test]
fn identical_training_with_differing_values_is_judged_as_nondeterminism() {
    // The same differences that support "worse" when the variant's loss could matter.
    let c = compared("natural_hardmax", MINUS_1, true);
    let v = judge_worse(CLAIM_HARDMAX, "natural_hardmax", Some(&c), "normal_lr1e-3");
    assert_eq!(v.verdict, Verdict::IdenticalTraining, "{}", v.evidence);
    assert_eq!(v.verdict.label(), "identical training by construction: the measured Δ is nondeterminism");
    assert!(
        v.evidence
            .starts_with("`natural_hardmax` trains exactly like `normal_lr1e-3` (the gradients of plain")
    );
    assert!(
        v.evidence.contains(
            "its Δ = -1.00 points (sd 0.16, max |Δ| 1.20; 5 pairs, 0 of them bit for bit) measures \
             run-to-run nondeterminism"
        ),
        "{}",
        v.evidence
    );
    assert!(v.evidence.ends_with("not an effect of the loss"), "{}", v.evidence);
    let wider = multi(&compared("multi_softmax", AROUND_0_WIDE, true));
    assert_eq!(wider.verdict, Verdict::IdenticalTraining, "{}", wider.evidence);
    // Too few pairs do not matter: the verdict follows from the construction, not from a test.
    let one =
        compare(&variant("natural_hardmax", &[(0, 90.1)]), &variant("normal_lr1e-3", &[(0, 90.0)]), true);
    let v = judge_worse(CLAIM_HARDMAX, "natural_hardmax", Some(&one), "normal_lr1e-3");
    assert_eq!(v.verdict, Verdict::IdenticalTraining);
    assert!(!shifted("natural_hardmax", MINUS_1).identical_training);
}

fn multi(c: &Comparison) -> ClaimVerdict {
    judge_only_wider_spread(Some(c), "normal_lr1e-3")
}

#[test]
fn spread_supported_only_with_an_equivalent_mean_and_a_significantly_wider_spread() {
    // Baseline deviations e, variant 4·e plus a little noise: Δ CI ±0.30, variance ratio 16.7.
    let e = [0.1, -0.1, 0.05, -0.05, 0.0];
    let noise = [0.01, -0.02, 0.0, 0.02, -0.01];
    let base: Vec<f64> = e.iter().map(|x| 90.0 + x).collect();
    let wide: Vec<f64> = e.iter().zip(noise).map(|(x, n)| 90.0 + 4.0 * x + n).collect();
    let c =
        compare(&variant("multi_softmax", &seeded(&wide)), &variant("normal_lr1e-3", &seeded(&base)), false);
    let v = multi(&c);
    assert_eq!(v.verdict, Verdict::Supported, "{}", v.evidence);
    assert!(v.evidence.contains("Pitman-Morgan"), "{}", v.evidence);
}

#[test]
fn spread_same_mean_without_a_wider_spread_is_not_supported() {
    let v = multi(&shifted("multi_softmax", [0.05, -0.05, 0.02, -0.02, 0.0]));
    assert_eq!(v.verdict, Verdict::NotSupported, "{}", v.evidence);
    assert!(
        v.evidence.starts_with("same mean (CI within ±0.5 points), but the spread is not"),
        "{}",
        v.evidence
    );
}

#[test]
fn spread_with_a_ci_beyond_the_margin_cannot_establish_the_same_mean() {
    let v = multi(&shifted("multi_softmax", AROUND_0_WIDE));
    assert_eq!(v.verdict, Verdict::NotSupported, "{}", v.evidence);
    assert!(v.evidence.starts_with("the data cannot establish the same mean"), "{}", v.evidence);
}

#[test]
fn spread_with_a_different_mean_is_contradicted() {
    for differences in [PLUS_1_5, MINUS_1] {
        let v = multi(&shifted("multi_softmax", differences));
        assert_eq!(v.verdict, Verdict::Contradicted, "{}", v.evidence);
        assert!(v.evidence.starts_with("the mean itself differs"), "{}", v.evidence);
    }
}

#[test]
fn spread_identical_to_the_baseline_is_not_supported_by_construction() {
    let v = multi(&identical("multi_softmax"));
    assert_eq!(v.verdict, Verdict::NotSupported);
    assert_eq!(
        v.evidence,
        "`multi_softmax` is identical to the baseline seed for seed (by construction, bit for bit): same mean, \
         same spread"
    );
}

#[test]
fn judge_claims_orders_filters_and_handles_a_missing_baseline() {
    let comparisons = vec![shifted("natural_softmax", PLUS_1_5), identical("multi_softmax")];
    let all = judge_claims(&comparisons, "normal_lr1e-3", true, false);
    let claims: Vec<&str> = all.iter().map(|c| c.claim).collect();
    assert_eq!(claims, [CLAIM_SOFTMAX, CLAIM_LR, CLAIM_HARDMAX, CLAIM_MULTI]);
    assert_eq!(all[1].verdict, Verdict::NoData, "no lr 1e-2 variant");
    let present = judge_claims(&comparisons, "normal_lr1e-3", true, true);
    assert_eq!(present.iter().map(|c| c.claim).collect::<Vec<_>>(), [CLAIM_SOFTMAX, CLAIM_MULTI]);
    let no_baseline = judge_claims(&comparisons, "normal_lr1e-3", false, false);
    assert!(
        no_baseline.iter().all(|c| c.verdict == Verdict::NoData && c.evidence.contains("not in this sweep"))
    );
}
