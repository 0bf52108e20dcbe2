//! The noise floor: the paired differences between the baseline and a variant that trains exactly
//! like it by construction (see [`crate::construction`]). Such differences cannot come from the
//! loss; they measure how far run-to-run nondeterminism alone moves a job's best accuracy.

use super::compare::Comparison;
use super::seed_sets::SeedSetAnalysis;
use crate::stats;

/// `x` with a sign and two decimals; a value that rounds to zero is "+0.00", never "-0.00".
pub fn signed_points(x: f64) -> String {
    let rounded = (x * 100.0).round() / 100.0;
    format!("{:+.2}", if rounded == 0.0 { 0.0 } else { rounded })
}

/// Paired differences Δ = variant − baseline (points) of a variant that trains like the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseFloor {
    pub n_pairs: usize,
    /// Pairs whose values are exactly equal (run with the same kernels).
    pub bit_identical: usize,
    pub mean: f64,
    /// Sample sd of Δ; `None` for a single pair.
    pub sd: Option<f64>,
    pub max_abs: f64,
}

impl NoiseFloor {
    /// From the paired values (%) of the variant and the baseline, in the same seed order;
    /// `None` without pairs.
    pub fn from_pairs(variant: &[f64], baseline: &[f64]) -> Option<Self> {
        let differences: Vec<f64> = variant.iter().zip(baseline).map(|(a, b)| a - b).collect();
        let mean = stats::mean(&differences)?;
        Some(Self {
            n_pairs: differences.len(),
            bit_identical: variant.iter().zip(baseline).filter(|(a, b)| a == b).count(),
            mean,
            sd: stats::sample_std(&differences),
            max_abs: differences.iter().fold(0.0, |max, d| d.abs().max(max)),
        })
    }

    /// "Δ = +0.00 points (sd 0.25, max |Δ| 0.35; 5 pairs, 0 of them bit for bit)".
    pub fn text(&self) -> String {
        let sd = self.sd.map_or_else(String::new, |sd| format!("sd {sd:.2}, "));
        let pairs = if self.n_pairs == 1 { "pair" } else { "pairs" };
        format!(
            "Δ = {} points ({sd}max |Δ| {:.2}; {} {pairs}, {} of them bit for bit)",
            signed_points(self.mean),
            self.max_abs,
            self.n_pairs,
            self.bit_identical
        )
    }
}

/// The set's comparisons of variants that train like the baseline by construction but whose
/// values differ from it: the ones with a noise floor to report.
pub fn nondeterministic(set: &SeedSetAnalysis) -> Vec<&Comparison> {
    set.comparisons
        .iter()
        .filter(|c| c.identical_training && !c.identical && c.noise_floor.is_some())
        .collect()
}

/// The widest noise floor of the set against the baseline's seed-to-seed sd; `None` when the set
/// has no noise floor with an sd, or the baseline has no sd.
pub fn noise_versus_seeds(set: &SeedSetAnalysis, baseline: &str) -> Option<NoiseVersusSeeds> {
    let seed_sd = set.variant(baseline)?.describe.as_ref()?.std?;
    let (variant, noise_sd) = nondeterministic(set)
        .into_iter()
        .filter_map(|c| Some((c.variant.clone(), c.noise_floor?.sd?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    Some(NoiseVersusSeeds { variant, noise_sd, seed_sd })
}

/// How the noise floor compares with the baseline's seed-to-seed spread.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseVersusSeeds {
    /// The variant with the widest noise floor, and that sd (points).
    pub variant: String,
    pub noise_sd: f64,
    /// Sample sd of the baseline's best accuracies across seeds (points).
    pub seed_sd: f64,
}

impl NoiseVersusSeeds {
    /// The sd of the difference between two runs with different seeds: √2 × the seed-to-seed sd.
    pub fn seed_difference_sd(&self) -> f64 {
        std::f64::consts::SQRT_2 * self.seed_sd
    }

    /// noise sd / the sd of a difference between two seeds.
    pub fn ratio(&self) -> f64 {
        self.noise_sd / self.seed_difference_sd()
    }

    /// Nondeterminism is "about as large" as a change of seed from half of it on.
    pub fn comparable(&self) -> bool {
        self.ratio() >= 0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_floor_of_made_up_pairs() {
        let baseline = [89.86, 89.59, 89.85, 89.88, 89.63];
        let variant = [89.88, 89.68, 89.57, 89.70, 89.98];
        let n = NoiseFloor::from_pairs(&variant, &baseline).unwrap();
        assert_eq!((n.n_pairs, n.bit_identical), (5, 0));
        // Δ = +0.02, +0.09, −0.28, −0.18, +0.35: mean 0, sd √(0.2418 / 4).
        assert!(n.mean.abs() < 1e-9, "{}", n.mean);
        assert!((n.sd.unwrap() - (0.2418f64 / 4.0).sqrt()).abs() < 1e-9);
        assert!((n.max_abs - 0.35).abs() < 1e-9);
        assert_eq!(n.text(), "Δ = +0.00 points (sd 0.25, max |Δ| 0.35; 5 pairs, 0 of them bit for bit)");
    }

    #[test]
    fn bit_identical_pairs_are_counted_and_one_pair_has_no_sd() {
        let n = NoiseFloor::from_pairs(&[90.0, 90.1, 90.2], &[90.0, 90.1, 90.0]).unwrap();
        assert_eq!((n.n_pairs, n.bit_identical), (3, 2));
        assert!((n.max_abs - 0.2).abs() < 1e-9 && (n.mean - 0.2 / 3.0).abs() < 1e-9);
        let one = NoiseFloor::from_pairs(&[90.0], &[89.5]).unwrap();
        assert_eq!(one.sd, None);
        assert_eq!(one.text(), "Δ = +0.50 points (max |Δ| 0.50; 1 pair, 0 of them bit for bit)");
        assert_eq!(NoiseFloor::from_pairs(&[], &[]), None);
    }

    #[test]
    fn a_mean_that_rounds_to_zero_is_never_negative() {
        assert_eq!(signed_points(-1e-15), "+0.00");
        assert_eq!(signed_points(-0.004), "+0.00");
        assert_eq!(signed_points(-0.006), "-0.01");
        assert_eq!(signed_points(0.349), "+0.35");
    }

    #[test]
    fn noise_is_compared_with_the_difference_between_two_seeds() {
        let v = NoiseVersusSeeds { variant: "natural_hardmax".into(), noise_sd: 0.25, seed_sd: 0.14 };
        assert!((v.seed_difference_sd() - 0.19799).abs() < 1e-4);
        assert!(v.comparable() && v.ratio() > 1.0);
        let small = NoiseVersusSeeds { noise_sd: 0.05, ..v };
        assert!(!small.comparable());
    }
}
