//! One variant against the baseline: pairs runs by seed where it can, picks the design (paired or
//! unpaired) and runs that design's tests.
//!
//! Jobs with equal seeds share initial weights and data order, so their results are paired. A
//! comparison is **paired** when the variant's and the baseline's seeds all pair up (at least one
//! pair), or when at least [`MIN_SEEDS_FOR_CLAIM`] seeds pair up; in the second case only the
//! paired seeds enter it and the unpaired ones are listed as left out. Otherwise it is
//! **unpaired** and uses every value. Paired: paired t-test, Wilcoxon signed-rank, Pitman-Morgan for
//! the spread. Unpaired: Welch's t-test, Mann-Whitney U, the F-test for the spread.
//!
//! When every pair is exactly equal (the variant reproduces the baseline bit for bit, as zero
//! gradient terms do with shared seeds) the comparison is **identical** and no test is run. A
//! paired variant that trains like the baseline by construction ([`crate::construction`]) gets
//! no test either: its differences are run-to-run nondeterminism, reported as a [`NoiseFloor`].

use std::collections::BTreeMap;

use super::noise::NoiseFloor;
use super::{MIN_SEEDS_FOR_CLAIM, VariantResults, format_seeds, p_clause};
use crate::stats::{self, MannWhitney, PairedTTest, WelchTest, Wilcoxon};

/// Whether a comparison pairs runs by seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    Paired,
    Unpaired,
}

/// The difference variant − baseline (points) as the design's t-test gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    pub mean_difference: f64,
    pub ci95: (f64, f64),
    /// Two-sided p-value of the t-test.
    pub p_value: f64,
}

/// One-sided test that the variant's spread is larger than the baseline's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpreadTest {
    /// var(variant) / var(baseline).
    pub variance_ratio: f64,
    pub p_value: f64,
    /// "Pitman-Morgan" (paired) or "F-test" (unpaired).
    pub test: &'static str,
}

/// One variant against the baseline (differences are variant − baseline, in points).
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub variant: String,
    pub design: Design,
    /// Values of the variant that enter the comparison (the pairs, when paired).
    pub n_variant: usize,
    pub n_baseline: usize,
    /// Seeds of the pairs; empty when unpaired.
    pub paired_seeds: Vec<u64>,
    /// Finished seeds without a partner, left out of a paired comparison.
    pub left_out_variant_seeds: Vec<u64>,
    pub left_out_baseline_seeds: Vec<u64>,
    /// Every pair exactly equal: identical to the baseline seed for seed; no test is run.
    pub identical: bool,
    /// Paired, and the variant trains exactly like the baseline by construction: no test is run,
    /// the differences are a noise floor.
    pub identical_training: bool,
    /// The paired differences when `identical_training`.
    pub noise_floor: Option<NoiseFloor>,
    pub paired_t: Option<PairedTTest>,
    pub wilcoxon: Option<Wilcoxon>,
    pub welch: Option<WelchTest>,
    pub mann_whitney: Option<MannWhitney>,
    pub spread: Option<SpreadTest>,
    /// Sample sds of the values that enter the comparison: (variant, baseline).
    pub sd: (Option<f64>, Option<f64>),
    pub hedges_g: Option<f64>,
    pub cohens_d: Option<f64>,
    pub cliffs_delta: Option<f64>,
}

impl Comparison {
    /// Said wherever a test result would stand when the pairs are all equal.
    pub const IDENTICAL_TEXT: &'static str =
        "identical to the baseline seed for seed (by construction, bit for bit)";
    /// Said wherever a test result would stand when the variant trains like the baseline but its
    /// values differ.
    pub const NONDETERMINISM_TEXT: &'static str =
        "identical training by construction; Δ is run-to-run nondeterminism, not an effect of the loss";

    /// The mean difference, its 95% CI and p from the design's t-test (paired t or Welch).
    pub fn difference(&self) -> Option<Difference> {
        match self.design {
            Design::Paired => self.paired_t.map(|t| Difference {
                mean_difference: t.mean_difference,
                ci95: t.ci95,
                p_value: t.p_value,
            }),
            Design::Unpaired => self.welch.map(|w| Difference {
                mean_difference: w.mean_difference,
                ci95: w.ci95,
                p_value: w.p_value,
            }),
        }
    }

    /// Number of independent units: pairs when paired, the smaller group when unpaired.
    pub fn n_units(&self) -> usize {
        match self.design {
            Design::Paired => self.paired_seeds.len(),
            Design::Unpaired => self.n_variant.min(self.n_baseline),
        }
    }

    /// The tests this comparison runs, e.g. "paired t + Wilcoxon signed-rank".
    pub fn tests(&self) -> &'static str {
        match (self.identical, self.design) {
            (true, _) => "none (identical by construction)",
            (false, _) if self.identical_training => "none (identical training by construction)",
            (false, Design::Paired) => "paired t + Wilcoxon signed-rank",
            (false, Design::Unpaired) => "Welch t + Mann-Whitney U",
        }
    }

    /// Which seeds enter, e.g. "paired, seeds 0–4" or "unpaired, 5 vs 5 seeds".
    pub fn seeds_text(&self) -> String {
        match self.design {
            Design::Paired => {
                let mut text = format!("paired, seeds {}", format_seeds(&self.paired_seeds));
                let left_out = |who: &str, seeds: &[u64]| {
                    (!seeds.is_empty()).then(|| format!("{who} seeds {} left out", format_seeds(seeds)))
                };
                let notes: Vec<String> = [
                    left_out(&self.variant, &self.left_out_variant_seeds),
                    left_out("baseline", &self.left_out_baseline_seeds),
                ]
                .into_iter()
                .flatten()
                .collect();
                if !notes.is_empty() {
                    text.push_str(&format!(" ({})", notes.join("; ")));
                }
                text
            }
            Design::Unpaired => format!("unpaired, {} vs {} seeds", self.n_variant, self.n_baseline),
        }
    }

    /// The rank test as text: "Wilcoxon W = 0.0, p = 0.062 (exact)" or the Mann-Whitney one.
    pub fn rank_test_text(&self) -> Option<String> {
        match self.design {
            Design::Paired => self.wilcoxon.map(|w| {
                format!("Wilcoxon W = {:.1}, {} ({})", w.statistic, p_clause(w.p_value), w.method.describe())
            }),
            Design::Unpaired => self.mann_whitney.map(|m| {
                format!("Mann-Whitney U = {:.1}, {} ({})", m.u, p_clause(m.p_value), m.method.describe())
            }),
        }
    }
}

/// Compares `variant` with `baseline` on the finished jobs both carry; `trains_like` says whether
/// the variant trains exactly like the baseline at equal seeds ([`crate::construction`]).
pub fn compare(variant: &VariantResults, baseline: &VariantResults, trains_like: bool) -> Comparison {
    let by_seed =
        |v: &VariantResults| -> BTreeMap<u64, f64> { v.finished.iter().map(|j| (j.seed, j.best)).collect() };
    let (ours, theirs) = (by_seed(variant), by_seed(baseline));
    let paired_seeds: Vec<u64> = ours.keys().filter(|s| theirs.contains_key(s)).copied().collect();
    let all_pair = paired_seeds.len() == ours.len() && paired_seeds.len() == theirs.len();
    let paired = !paired_seeds.is_empty() && (all_pair || paired_seeds.len() >= MIN_SEEDS_FOR_CLAIM);
    let left_out = |map: &BTreeMap<u64, f64>| -> Vec<u64> {
        map.keys().filter(|s| !paired_seeds.contains(s)).copied().collect()
    };
    let mut c = Comparison {
        variant: variant.name.clone(),
        design: if paired { Design::Paired } else { Design::Unpaired },
        n_variant: 0,
        n_baseline: 0,
        paired_seeds: Vec::new(),
        left_out_variant_seeds: Vec::new(),
        left_out_baseline_seeds: Vec::new(),
        identical: false,
        identical_training: false,
        noise_floor: None,
        paired_t: None,
        wilcoxon: None,
        welch: None,
        mann_whitney: None,
        spread: None,
        sd: (None, None),
        hedges_g: None,
        cohens_d: None,
        cliffs_delta: None,
    };
    let (a, b): (Vec<f64>, Vec<f64>) = if paired {
        c.left_out_variant_seeds = left_out(&ours);
        c.left_out_baseline_seeds = left_out(&theirs);
        let pairs = paired_seeds.iter().map(|s| (ours[s], theirs[s])).unzip();
        c.paired_seeds = paired_seeds;
        pairs
    } else {
        (ours.values().copied().collect(), theirs.values().copied().collect())
    };
    (c.n_variant, c.n_baseline) = (a.len(), b.len());
    c.sd = (stats::sample_std(&a), stats::sample_std(&b));
    c.identical = paired && a.iter().zip(&b).all(|(x, y)| x == y);
    c.identical_training = paired && trains_like;
    if c.identical_training {
        c.noise_floor = NoiseFloor::from_pairs(&a, &b);
    }
    if c.identical || c.identical_training {
        return c;
    }
    if paired {
        c.paired_t = stats::paired_t_test(&a, &b);
        c.wilcoxon = stats::wilcoxon_signed_rank(&a, &b);
        c.spread = stats::pitman_morgan(&a, &b).map(|pm| SpreadTest {
            variance_ratio: pm.variance_ratio,
            p_value: pm.p_value,
            test: "Pitman-Morgan",
        });
    } else {
        c.welch = stats::welch_t_test(&a, &b);
        c.mann_whitney = stats::mann_whitney_u(&a, &b);
        c.spread = stats::variance_ratio_f_test(&a, &b).map(|(variance_ratio, p_value)| SpreadTest {
            variance_ratio,
            p_value,
            test: "F-test",
        });
    }
    c.hedges_g = stats::hedges_g(&a, &b);
    c.cohens_d = stats::cohens_d(&a, &b);
    c.cliffs_delta = stats::cliffs_delta(&a, &b);
    c
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analysis::{FinishedJob, StateCounts};

    /// A variant with the given (seed, best %) finished jobs.
    pub(crate) fn variant(name: &str, values: &[(u64, f64)]) -> VariantResults {
        let finished = values
            .iter()
            .enumerate()
            .map(|(i, &(seed, best))| FinishedJob {
                seed,
                job_id: i as i64,
                best,
                final_epoch: None,
                last_epochs_mean: None,
            })
            .collect();
        VariantResults::new(name, finished, Vec::new(), StateCounts::default())
    }

    /// Seeds 0, 1, 2, … for the values.
    pub(crate) fn seeded(values: &[f64]) -> Vec<(u64, f64)> {
        values.iter().enumerate().map(|(i, &v)| (i as u64, v)).collect()
    }

    #[test]
    fn equal_seeds_give_a_paired_comparison_with_paired_tests() {
        let c = compare(
            &variant("v", &seeded(&[91.2, 90.5, 92.1, 89.9, 91.7])),
            &variant("b", &seeded(&[90.1, 90.4, 90.3, 89.0, 90.2])),
            false,
        );
        assert_eq!((c.design, c.n_units(), c.identical), (Design::Paired, 5, false));
        assert!(c.welch.is_none() && c.mann_whitney.is_none());
        let d = c.difference().unwrap();
        assert!((d.mean_difference - 1.08).abs() < 1e-9);
        assert_eq!(c.paired_t.unwrap().p_value, d.p_value);
        assert_eq!(c.spread.unwrap().test, "Pitman-Morgan");
        assert_eq!(c.seeds_text(), "paired, seeds 0–4");
        assert!(c.rank_test_text().unwrap().contains("(exact)"));
    }

    #[test]
    fn disjoint_seeds_give_an_unpaired_comparison() {
        let c = compare(
            &variant("v", &[(10, 91.0), (11, 92.0), (12, 91.5)]),
            &variant("b", &[(0, 90.0), (1, 90.5), (2, 89.5), (3, 90.2)]),
            false,
        );
        assert_eq!((c.design, c.n_variant, c.n_baseline), (Design::Unpaired, 3, 4));
        assert!(c.paired_t.is_none() && c.welch.is_some() && c.mann_whitney.is_some());
        assert_eq!(c.difference().unwrap().p_value, c.welch.unwrap().p_value);
        assert_eq!(c.spread.unwrap().test, "F-test");
        assert_eq!(c.seeds_text(), "unpaired, 3 vs 4 seeds");
    }

    #[test]
    fn enough_pairs_restrict_the_comparison_to_the_paired_seeds() {
        let baseline: Vec<(u64, f64)> = (0..15).map(|s| (s, 90.0 + (s % 4) as f64 * 0.3)).collect();
        let c = compare(
            &variant("v", &[(0, 91.0), (1, 91.5), (2, 90.9), (3, 91.8), (20, 99.0)]),
            &variant("b", &baseline),
            false,
        );
        assert_eq!(c.design, Design::Paired);
        assert_eq!(c.paired_seeds, [0, 1, 2, 3]);
        assert_eq!(c.left_out_variant_seeds, [20]);
        assert_eq!(c.left_out_baseline_seeds, (4..15).collect::<Vec<_>>());
        assert_eq!(c.seeds_text(), "paired, seeds 0–3 (v seeds 20 left out; baseline seeds 4–14 left out)");
    }

    #[test]
    fn too_few_pairs_of_partly_matching_seeds_stay_unpaired() {
        let c = compare(
            &variant("v", &[(0, 91.0), (1, 91.5), (7, 90.0)]),
            &variant("b", &[(0, 90.0), (1, 90.4), (2, 90.1)]),
            false,
        );
        assert_eq!((c.design, c.n_variant, c.n_baseline), (Design::Unpaired, 3, 3));
        // Two seeds that fully pair up are paired, even if too few for a claim.
        let c = compare(&variant("v", &seeded(&[91.0, 91.5])), &variant("b", &seeded(&[90.0, 90.4])), false);
        assert_eq!((c.design, c.n_units()), (Design::Paired, 2));
    }

    #[test]
    fn equal_pairs_are_identical_and_run_no_test() {
        let values = seeded(&[90.1, 90.4, 90.3, 89.0, 90.2]);
        let c = compare(&variant("v", &values), &variant("b", &values), false);
        assert!(c.identical);
        assert_eq!(c.tests(), "none (identical by construction)");
        assert!(c.difference().is_none() && c.wilcoxon.is_none() && c.spread.is_none());
        // A single pair is enough to be identical.
        let one = compare(&variant("v", &[(3, 88.0)]), &variant("b", &[(3, 88.0)]), false);
        assert!(one.identical);
        // Same values under different seeds are not "seed for seed".
        let shifted =
            compare(&variant("v", &[(1, 88.0), (2, 89.0)]), &variant("b", &[(2, 88.0), (1, 89.0)]), false);
        assert!(!shifted.identical);
    }

    #[test]
    fn identical_training_gets_a_noise_floor_instead_of_tests() {
        let base = seeded(&[89.86, 89.59, 89.85, 89.88, 89.63]);
        let drifted = seeded(&[89.88, 89.68, 89.57, 89.70, 89.98]);
        let c = compare(&variant("natural_hardmax", &drifted), &variant("normal_lr1e-3", &base), true);
        assert!(c.identical_training && !c.identical);
        assert_eq!(c.tests(), "none (identical training by construction)");
        assert!(c.paired_t.is_none() && c.wilcoxon.is_none() && c.spread.is_none() && c.hedges_g.is_none());
        let noise = c.noise_floor.unwrap();
        assert_eq!((noise.n_pairs, noise.bit_identical), (5, 0));
        assert!((noise.max_abs - 0.35).abs() < 1e-9);
        // Bit for bit: identical, with an all-zero noise floor.
        let same = compare(&variant("multi_softmax", &base), &variant("normal_lr1e-3", &base), true);
        assert!(same.identical && same.identical_training);
        assert_eq!(same.noise_floor.map(|n| (n.bit_identical, n.max_abs)), Some((5, 0.0)));
        // Without pairs there is no shared seed, hence no identical training: the tests run.
        let apart = compare(
            &variant("natural_hardmax", &[(10, 89.9), (11, 89.6), (12, 89.7)]),
            &variant("normal_lr1e-3", &base),
            true,
        );
        assert!(!apart.identical_training && apart.noise_floor.is_none() && apart.welch.is_some());
        // The same values without identical training by construction are tested as usual.
        let tested = compare(&variant("natural_hardmax", &drifted), &variant("normal_lr1e-3", &base), false);
        assert!(!tested.identical_training && tested.paired_t.is_some());
    }
}
