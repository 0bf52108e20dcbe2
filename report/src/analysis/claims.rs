//! Verdicts on the experiment's four claims, from the comparisons against the baseline.
//!
//! Every rule reads the 95% confidence interval (CI) of Δ = variant − baseline (points) from the
//! comparison's t-test (paired t when paired, Welch when unpaired), not the point estimate alone.
//! Before any rule: no such variant → "no data"; every pair exactly equal → "not supported",
//! because the variant is identical to the baseline seed for seed by construction; a variant that
//! trains like the baseline by construction ([`crate::construction`]) but whose pairs differ →
//! "identical training by construction": its Δ measures run-to-run nondeterminism, not the loss,
//! so it can neither support nor contradict a claim about the loss; fewer than
//! [`MIN_SEEDS_FOR_CLAIM`] pairs (paired) or seeds per group (unpaired) → "too few seeds to say";
//! no t-test possible (no variance) → "no data".
//!
//! - "Natural SoftMax beats Normal by 1–2 points": supported if the CI lies above 0 and Δ, at the
//!   two decimals the report prints, is in [1, 2]; partly supported if the CI lies above 0 but Δ
//!   is outside [1, 2] (the evidence says whether the CI still reaches [1, 2]); contradicted if
//!   the CI lies below 0; otherwise not supported (the CI includes 0).
//! - "… is worse than the baseline": supported if the CI lies below 0; contradicted if it lies
//!   above 0; otherwise not supported.
//! - "Multiple SoftMax only widens the spread": contradicted if the CI excludes 0 (the mean
//!   differs); supported if the CI lies within ±[`EQUIVALENCE_MARGIN`] (same mean) and the spread
//!   is significantly wider (one-sided Pitman-Morgan when paired, F-test when unpaired, at
//!   [`ALPHA`]); not supported if the mean is the same but the spread not significantly wider, or if
//!   the CI includes 0 but reaches beyond the margin (the data cannot establish "same mean").

use super::compare::{Comparison, Design, Difference};
use super::{ALPHA, EQUIVALENCE_MARGIN, MIN_SEEDS_FOR_CLAIM, p_clause};
use crate::construction::{WHY_IDENTICAL, WHY_THEY_DIFFER};

pub const CLAIM_SOFTMAX: &str = "Natural SoftMax beats Normal by 1–2 points";
pub const CLAIM_LR: &str = "lr 1e-2 is worse than the baseline";
pub const CLAIM_HARDMAX: &str = "Natural HardMax is worse than the baseline";
pub const CLAIM_MULTI: &str = "Multiple SoftMax only widens the spread (same mean, larger variance)";

/// Each claim with the (lower-case) variant name it is about.
const CLAIMS: [(&str, &str); 4] = [
    (CLAIM_SOFTMAX, "natural_softmax"),
    (CLAIM_LR, "normal_lr1e-2"),
    (CLAIM_HARDMAX, "natural_hardmax"),
    (CLAIM_MULTI, "multi_softmax"),
];

/// How far the data back a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Supported,
    PartlySupported,
    NotSupported,
    Contradicted,
    TooFewSeeds,
    NoData,
    /// The variant trains exactly like the baseline; its measured Δ is nondeterminism.
    IdenticalTraining,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Self::Supported => "supported",
            Self::PartlySupported => "partly supported",
            Self::NotSupported => "not supported by this data",
            Self::Contradicted => "contradicted",
            Self::TooFewSeeds => "too few seeds to say",
            Self::NoData => "no data",
            Self::IdenticalTraining => "identical training by construction: the measured Δ is nondeterminism",
        }
    }
}

/// One of the experiment's claims with the verdict and a sentence of evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimVerdict {
    pub claim: &'static str,
    pub verdict: Verdict,
    pub evidence: String,
}

/// The comparison of the variant named `key` (exact name first, else the first name containing it).
pub fn find_comparison<'a>(comparisons: &'a [Comparison], key: &str) -> Option<&'a Comparison> {
    let lower = |s: &str| s.to_lowercase();
    comparisons
        .iter()
        .find(|c| lower(&c.variant) == key)
        .or_else(|| comparisons.iter().find(|c| lower(&c.variant).contains(key)))
}

/// All four verdicts; with `only_present`, just the claims whose variant is among `comparisons`
/// (for a seed set holding some of the variants).
pub fn judge_claims(
    comparisons: &[Comparison],
    baseline: &str,
    baseline_present: bool,
    only_present: bool,
) -> Vec<ClaimVerdict> {
    let present = |key: &str| !only_present || find_comparison(comparisons, key).is_some();
    CLAIMS
        .into_iter()
        .filter(|(_, key)| present(key))
        .map(|(claim, key)| {
            if !baseline_present {
                let evidence = format!("baseline `{baseline}` is not in this sweep");
                return ClaimVerdict { claim, verdict: Verdict::NoData, evidence };
            }
            let c = find_comparison(comparisons, key);
            match claim {
                CLAIM_SOFTMAX => judge_better_by_one_to_two(c, baseline),
                CLAIM_MULTI => judge_only_wider_spread(c, baseline),
                _ => judge_worse(claim, key, c, baseline),
            }
        })
        .collect()
}

/// The comparison and its difference, or the verdict that stops the judging first.
fn decidable<'a>(
    claim: &'static str,
    key: &str,
    comparison: Option<&'a Comparison>,
    identical_evidence: &str,
    baseline: &str,
) -> Result<(&'a Comparison, Difference), ClaimVerdict> {
    let verdict = |verdict, evidence| ClaimVerdict { claim, verdict, evidence };
    let Some(c) = comparison else {
        return Err(verdict(Verdict::NoData, format!("no variant named like `{key}` in this sweep")));
    };
    if c.identical {
        return Err(verdict(Verdict::NotSupported, format!("`{}` is {identical_evidence}", c.variant)));
    }
    if let (true, Some(noise)) = (c.identical_training, c.noise_floor) {
        let evidence = format!(
            "`{}` trains exactly like `{baseline}` ({WHY_IDENTICAL}); its {} measures {WHY_THEY_DIFFER}, \
             not an effect of the loss",
            c.variant,
            noise.text()
        );
        return Err(verdict(Verdict::IdenticalTraining, evidence));
    }
    if c.n_units() < MIN_SEEDS_FOR_CLAIM {
        let evidence = match c.design {
            Design::Paired => format!(
                "only {} `{}`–baseline pairs (need {MIN_SEEDS_FOR_CLAIM})",
                c.paired_seeds.len(),
                c.variant
            ),
            Design::Unpaired => format!(
                "only {} finished `{}` vs {} finished baseline jobs (need {MIN_SEEDS_FOR_CLAIM} each)",
                c.n_variant, c.variant, c.n_baseline
            ),
        };
        return Err(verdict(Verdict::TooFewSeeds, evidence));
    }
    match c.difference() {
        Some(d) => Ok((c, d)),
        None => Err(verdict(
            Verdict::NoData,
            format!(
                "`{}` and the baseline show no variance in their difference; no test possible",
                c.variant
            ),
        )),
    }
}

/// "`v` − `base` = +1.52 points (95% CI +1.01 to +2.03); paired t p = 0.003; …; paired, seeds 0–4".
pub fn difference_text(c: &Comparison, d: &Difference, baseline: &str) -> String {
    let t_name = match c.design {
        Design::Paired => "paired t",
        Design::Unpaired => "Welch t",
    };
    let mut text = format!(
        "`{}` − `{baseline}` = {:+.2} points (95% CI {:+.2} to {:+.2}); {t_name} {}",
        c.variant,
        d.mean_difference,
        d.ci95.0,
        d.ci95.1,
        p_clause(d.p_value)
    );
    if let Some(rank) = c.rank_test_text() {
        text.push_str(&format!("; {rank}"));
    }
    text.push_str(&format!("; {}", c.seeds_text()));
    text
}

fn includes_zero(d: &Difference) -> bool {
    d.ci95.0 <= 0.0 && d.ci95.1 >= 0.0
}

/// "Natural SoftMax beats Normal by 1–2 points" (rule in the module docs).
pub fn judge_better_by_one_to_two(comparison: Option<&Comparison>, baseline: &str) -> ClaimVerdict {
    let claim = CLAIM_SOFTMAX;
    let (c, d) = match decidable(claim, "natural_softmax", comparison, Comparison::IDENTICAL_TEXT, baseline) {
        Ok(found) => found,
        Err(verdict) => return verdict,
    };
    let diff = difference_text(c, &d, baseline);
    let (lo, hi) = d.ci95;
    // Judged at the printed precision, so that "+1.00" never reads as outside 1–2.
    let printed = (d.mean_difference * 100.0).round() / 100.0;
    let in_range = (1.0..=2.0).contains(&printed);
    let (verdict, evidence) = if lo > 0.0 && in_range {
        (Verdict::Supported, format!("better, by 1–2 points: {diff}"))
    } else if lo > 0.0 && (hi < 1.0 || lo > 2.0) {
        (Verdict::PartlySupported, format!("better, but not by 1–2 points (the CI excludes 1–2): {diff}"))
    } else if lo > 0.0 {
        (
            Verdict::PartlySupported,
            format!("better; 1–2 points is within the CI but the estimate is outside it: {diff}"),
        )
    } else if hi < 0.0 {
        (Verdict::Contradicted, format!("worse, not better (the whole CI is below 0): {diff}"))
    } else {
        (Verdict::NotSupported, format!("the CI includes 0: {diff}"))
    };
    ClaimVerdict { claim, verdict, evidence }
}

/// "`key` is worse than the baseline" (rule in the module docs).
pub fn judge_worse(
    claim: &'static str,
    key: &str,
    comparison: Option<&Comparison>,
    baseline: &str,
) -> ClaimVerdict {
    let (c, d) = match decidable(claim, key, comparison, Comparison::IDENTICAL_TEXT, baseline) {
        Ok(found) => found,
        Err(verdict) => return verdict,
    };
    let diff = difference_text(c, &d, baseline);
    let (verdict, evidence) = if d.ci95.1 < 0.0 {
        (Verdict::Supported, format!("worse (the whole CI is below 0): {diff}"))
    } else if d.ci95.0 > 0.0 {
        (Verdict::Contradicted, format!("better, not worse (the whole CI is above 0): {diff}"))
    } else {
        (Verdict::NotSupported, format!("the CI includes 0: {diff}"))
    };
    ClaimVerdict { claim, verdict, evidence }
}

/// "Multiple SoftMax only widens the spread (same mean, larger variance)" (rule in the module docs).
pub fn judge_only_wider_spread(comparison: Option<&Comparison>, baseline: &str) -> ClaimVerdict {
    let claim = CLAIM_MULTI;
    let identical = format!("{}: same mean, same spread", Comparison::IDENTICAL_TEXT);
    let (c, d) = match decidable(claim, "multi_softmax", comparison, &identical, baseline) {
        Ok(found) => found,
        Err(verdict) => return verdict,
    };
    let sd = |x: Option<f64>| x.map_or_else(|| "–".to_string(), |x| format!("{x:.2}"));
    let spread_text = match c.spread {
        Some(s) => format!(
            "sd {} vs {} points, variance ratio {:.2} (one-sided {} {})",
            sd(c.sd.0),
            sd(c.sd.1),
            s.variance_ratio,
            s.test,
            p_clause(s.p_value)
        ),
        None => format!("sd {} vs {} points (no spread test possible)", sd(c.sd.0), sd(c.sd.1)),
    };
    let wider = c.spread.is_some_and(|s| s.variance_ratio > 1.0 && s.p_value < ALPHA);
    let equivalent = d.ci95.0 >= -EQUIVALENCE_MARGIN && d.ci95.1 <= EQUIVALENCE_MARGIN;
    let diff = difference_text(c, &d, baseline);
    let margin = format!("±{EQUIVALENCE_MARGIN}");
    let (verdict, evidence) = if !includes_zero(&d) {
        (Verdict::Contradicted, format!("the mean itself differs (the CI excludes 0): {diff}; {spread_text}"))
    } else if equivalent && wider {
        (
            Verdict::Supported,
            format!(
                "same mean (CI within {margin} points) and a significantly wider spread: {diff}; {spread_text}"
            ),
        )
    } else if equivalent {
        (
            Verdict::NotSupported,
            format!(
                "same mean (CI within {margin} points), but the spread is not significantly wider: {diff}; {spread_text}"
            ),
        )
    } else {
        (
            Verdict::NotSupported,
            format!(
                "the data cannot establish the same mean: the CI includes 0 but reaches beyond {margin} points: {diff}; {spread_text}"
            ),
        )
    };
    ClaimVerdict { claim, verdict, evidence }
}

#[cfg(test)]
#[path = "claims_tests.rs"]
mod tests;
