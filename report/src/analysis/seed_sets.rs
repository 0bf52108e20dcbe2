//! The seed sets the statistics are computed on: a balanced main set every variant is shown on,
//! and, when some variants have more finished seeds, an extended set with all of theirs.
//!
//! Main (balanced) set: the seeds shared by every variant that has finished jobs, when that
//! intersection is substantial (it holds all seeds of the smallest variant, or at least
//! [`MIN_SEEDS_FOR_CLAIM`] seeds). Otherwise (independent seeds, where seeds rarely coincide) each
//! variant's n lowest finished seeds, n being the smallest variant's count. Extended set: the
//! variants with finished seeds outside the main set, with all their finished seeds, plus the
//! baseline so that they can be compared with it (the protocol sweep's 15-seed natural_softmax and
//! normal_lr1e-3). A balanced sweep has only the main set. A running job is shown in one set: the
//! extended set when its variant is in it, else the main set.

use std::collections::BTreeSet;

use super::claims::{ClaimVerdict, judge_claims};
use super::compare::{Comparison, compare};
use super::{MIN_SEEDS_FOR_CLAIM, StateCounts, VariantResults, format_seeds};

/// Which of the two sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedSetKind {
    /// Equal seeds (or equal counts) for every variant; the main box plot.
    Balanced,
    /// All finished seeds of the variants that have more than the balanced set.
    Extended,
}

/// How a set's seeds were chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The seeds shared by every variant with finished jobs.
    CommonSeeds(Vec<u64>),
    /// Each variant's n lowest finished seeds: the variants share too few seeds.
    LowestSeeds(usize),
    /// Every finished seed of the named variants.
    AllSeeds(Vec<String>),
}

/// The statistics, comparisons and claims on one seed set.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedSetAnalysis {
    pub kind: SeedSetKind,
    pub selection: Selection,
    /// True when the set holds every finished seed of every variant (a balanced sweep).
    pub complete: bool,
    /// The set's variants in display order, restricted to the set's seeds.
    pub variants: Vec<VariantResults>,
    /// Every variant of the set except the baseline, against the baseline.
    pub comparisons: Vec<Comparison>,
    /// The claims about variants of the set (all four for the balanced set).
    pub claims: Vec<ClaimVerdict>,
}

impl SeedSetAnalysis {
    pub fn variant(&self, name: &str) -> Option<&VariantResults> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// Heading, e.g. "Balanced set: seeds 0–4 of every variant".
    pub fn title(&self) -> String {
        match (self.kind, self.complete) {
            (SeedSetKind::Balanced, true) => "Results: every finished seed".to_string(),
            (SeedSetKind::Balanced, false) => format!("Balanced set: {}", self.description()),
            (SeedSetKind::Extended, _) => format!("Extended set: {}", self.description()),
        }
    }

    /// Which seeds the set holds, as a phrase.
    pub fn description(&self) -> String {
        match &self.selection {
            Selection::CommonSeeds(seeds) if seeds.is_empty() => "no finished seeds yet".to_string(),
            Selection::CommonSeeds(seeds) => {
                format!("seeds {} of every variant (n = {} each)", format_seeds(seeds), seeds.len())
            }
            Selection::LowestSeeds(n) => format!(
                "the {n} lowest finished seeds of each variant (the variants share too few seeds to use common ones)"
            ),
            Selection::AllSeeds(names) => {
                let counts: Vec<String> = self
                    .variants
                    .iter()
                    .filter(|v| names.contains(&v.name))
                    .map(|v| format!("`{}` (n = {})", v.name, v.finished.len()))
                    .collect();
                format!("every finished seed of {}", counts.join(", "))
            }
        }
    }
}

/// The main set and, for an unbalanced sweep, the extended set; `trains_like` names the variants
/// that train exactly like the baseline by construction.
pub(crate) fn analyse_seed_sets(
    variants: &[VariantResults],
    baseline: &str,
    trains_like: &[String],
) -> Vec<SeedSetAnalysis> {
    let (selection, balanced) = balanced_set(variants);
    let grown: Vec<&str> = variants
        .iter()
        .zip(&balanced)
        .filter(|(all, set)| all.finished.len() > set.finished.len())
        .map(|(all, _)| all.name.as_str())
        .collect();
    let set = |kind, selection, complete, variants| {
        seed_set(kind, selection, complete, variants, baseline, trains_like)
    };
    let in_extended =
        |v: &VariantResults| !grown.is_empty() && (grown.contains(&v.name.as_str()) || v.name == baseline);
    let mut balanced = balanced;
    for v in balanced.iter_mut().filter(|v| in_extended(v)) {
        // Its running jobs (seeds beyond the main set's) are shown with the extended set.
        v.running_best.clear();
    }
    let mut sets = vec![set(SeedSetKind::Balanced, selection, grown.is_empty(), balanced)];
    if !grown.is_empty() {
        let extended: Vec<VariantResults> = variants.iter().filter(|v| in_extended(v)).cloned().collect();
        let names = extended.iter().map(|v| v.name.clone()).collect();
        sets.push(set(SeedSetKind::Extended, Selection::AllSeeds(names), false, extended));
    }
    sets
}

/// Every variant restricted to the balanced seeds (see the module docs).
fn balanced_set(variants: &[VariantResults]) -> (Selection, Vec<VariantResults>) {
    let with: Vec<BTreeSet<u64>> =
        variants.iter().filter(|v| !v.finished.is_empty()).map(|v| v.seeds().into_iter().collect()).collect();
    let Some(smallest) = with.iter().map(BTreeSet::len).min() else {
        return (Selection::CommonSeeds(Vec::new()), variants.to_vec());
    };
    let common: BTreeSet<u64> = with.iter().skip(1).fold(with[0].clone(), |acc, s| &acc & s);
    if !common.is_empty() && (common.len() == smallest || common.len() >= MIN_SEEDS_FOR_CLAIM) {
        let set = variants.iter().map(|v| v.restricted(|j| common.contains(&j.seed))).collect();
        return (Selection::CommonSeeds(common.into_iter().collect()), set);
    }
    let set = variants
        .iter()
        .map(|v| {
            let lowest: BTreeSet<u64> = v.seeds().into_iter().take(smallest).collect();
            v.restricted(|j| lowest.contains(&j.seed))
        })
        .collect();
    (Selection::LowestSeeds(smallest), set)
}

fn seed_set(
    kind: SeedSetKind,
    selection: Selection,
    complete: bool,
    variants: Vec<VariantResults>,
    baseline: &str,
    trains_like: &[String],
) -> SeedSetAnalysis {
    let present = variants.iter().any(|v| v.name == baseline);
    let empty = VariantResults::new(baseline, Vec::new(), Vec::new(), StateCounts::default());
    let base = variants.iter().find(|v| v.name == baseline).unwrap_or(&empty);
    let comparisons: Vec<Comparison> = variants
        .iter()
        .filter(|v| v.name != baseline)
        .map(|v| compare(v, base, trains_like.contains(&v.name)))
        .collect();
    let claims = judge_claims(&comparisons, baseline, present, kind == SeedSetKind::Extended);
    SeedSetAnalysis { kind, selection, complete, variants, comparisons, claims }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Design;
    use crate::analysis::claims::CLAIM_SOFTMAX;
    use crate::analysis::compare::tests::variant;

    const NAMES: [&str; 5] =
        ["natural_hardmax", "natural_softmax", "multi_softmax", "normal_lr1e-3", "normal_lr1e-2"];

    /// Each variant with the given seeds; values differ by variant and seed.
    fn variants(seeds: [&[u64]; 5]) -> Vec<VariantResults> {
        NAMES
            .iter()
            .zip(seeds)
            .enumerate()
            .map(|(i, (name, seeds))| {
                let values: Vec<(u64, f64)> = seeds
                    .iter()
                    .map(|&s| (s, 90.0 + i as f64 * 0.1 + (s % 3) as f64 * 0.2 + s as f64 * 0.01))
                    .collect();
                variant(name, &values)
            })
            .collect()
    }

    #[test]
    fn the_protocol_sweep_gets_a_balanced_and_an_extended_set() {
        let five: Vec<u64> = (0..5).collect();
        let fifteen: Vec<u64> = (0..15).collect();
        let sets =
            analyse_seed_sets(&variants([&five, &fifteen, &five, &fifteen, &five]), "normal_lr1e-3", &[]);
        assert_eq!(sets.len(), 2);
        let (main, extended) = (&sets[0], &sets[1]);
        assert_eq!(main.selection, Selection::CommonSeeds(five.clone()));
        assert!(main.variants.iter().all(|v| v.seeds() == five));
        assert!(!main.complete);
        assert_eq!(main.title(), "Balanced set: seeds 0–4 of every variant (n = 5 each)");
        assert_eq!(main.claims.len(), 4);
        let names: Vec<&str> = extended.variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["natural_softmax", "normal_lr1e-3"]);
        assert!(extended.variants.iter().all(|v| v.seeds() == fifteen));
        assert_eq!(extended.comparisons.len(), 1);
        assert_eq!((extended.comparisons[0].design, extended.comparisons[0].n_units()), (Design::Paired, 15));
        assert_eq!(extended.claims.iter().map(|c| c.claim).collect::<Vec<_>>(), [CLAIM_SOFTMAX]);
        assert!(extended.description().contains("`natural_softmax` (n = 15), `normal_lr1e-3` (n = 15)"));
    }

    #[test]
    fn a_running_job_is_shown_with_the_extended_set_when_its_variant_is_in_it() {
        let (five, twelve): (Vec<u64>, Vec<u64>) = ((0..5).collect(), (0..12).collect());
        let fifteen: Vec<u64> = (0..15).collect();
        let mut all = variants([&five, &fifteen, &five, &twelve, &five]);
        all[3].running_best = vec![(12, 89.4)];
        all[0].running_best = vec![(5, 88.0)];
        let sets = analyse_seed_sets(&all, "normal_lr1e-3", &[]);
        let running = |set: &SeedSetAnalysis, name: &str| set.variant(name).unwrap().running_best.clone();
        assert_eq!(running(&sets[0], "normal_lr1e-3"), [], "seed 12 is not in the main set's seeds");
        assert_eq!(running(&sets[1], "normal_lr1e-3"), [(12, 89.4)]);
        assert_eq!(running(&sets[0], "natural_hardmax"), [(5, 88.0)], "its variant has no other set");
    }

    #[test]
    fn a_balanced_sweep_has_one_complete_set() {
        let five: Vec<u64> = (0..5).collect();
        let sets = analyse_seed_sets(&variants([&five, &five, &five, &five, &five]), "normal_lr1e-3", &[]);
        assert_eq!(sets.len(), 1);
        assert!(sets[0].complete);
        assert_eq!(sets[0].title(), "Results: every finished seed");
        assert_eq!(sets[0].comparisons.len(), 4);
    }

    #[test]
    fn independent_seeds_fall_back_to_each_variants_lowest_seeds() {
        let offset = |o: u64, n: u64| (o..o + n).collect::<Vec<u64>>();
        let (a, b, c, d, e) = (offset(100, 5), offset(200, 7), offset(300, 5), offset(0, 5), offset(400, 6));
        let sets = analyse_seed_sets(&variants([&a, &b, &c, &d, &e]), "normal_lr1e-3", &[]);
        assert_eq!(sets[0].selection, Selection::LowestSeeds(5));
        assert_eq!(sets[0].variant("natural_softmax").unwrap().seeds(), offset(200, 5));
        assert!(sets[0].comparisons.iter().all(|c| c.design == Design::Unpaired));
        // Seeds 205, 206 and 405 are left out of the balanced set: the extended set has them.
        let names: Vec<&str> = sets[1].variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["natural_softmax", "normal_lr1e-3", "normal_lr1e-2"]);
    }

    #[test]
    fn a_small_accidental_overlap_is_not_a_common_seed_set() {
        // Seeds shifted by one per variant share only seed 4.
        let s: Vec<Vec<u64>> = (0..5).map(|i| (i..i + 5).collect()).collect();
        let sets = analyse_seed_sets(&variants([&s[0], &s[1], &s[2], &s[3], &s[4]]), "normal_lr1e-3", &[]);
        assert_eq!(sets[0].selection, Selection::LowestSeeds(5));
        assert_eq!(sets.len(), 1, "every seed is in the balanced set");
    }

    #[test]
    fn the_baseline_joins_an_extended_set_it_has_no_extra_seeds_for() {
        let five: Vec<u64> = (0..5).collect();
        let eight: Vec<u64> = (0..8).collect();
        let sets = analyse_seed_sets(&variants([&five, &eight, &five, &five, &five]), "normal_lr1e-3", &[]);
        let names: Vec<&str> = sets[1].variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["natural_softmax", "normal_lr1e-3"]);
        let c = &sets[1].comparisons[0];
        assert_eq!(
            (c.design, c.n_units(), c.left_out_variant_seeds.clone()),
            (Design::Paired, 5, vec![5, 6, 7])
        );
    }

    #[test]
    fn variants_without_finished_jobs_do_not_empty_the_common_set() {
        let two: Vec<u64> = vec![0, 1];
        let sets = analyse_seed_sets(&variants([&two, &two, &two, &two, &[]]), "normal_lr1e-3", &[]);
        assert_eq!(sets[0].selection, Selection::CommonSeeds(two));
        assert_eq!(sets.len(), 1);
        let none = analyse_seed_sets(&variants([&[], &[], &[], &[], &[]]), "normal_lr1e-3", &[]);
        assert_eq!(none[0].description(), "no finished seeds yet");
    }
}
