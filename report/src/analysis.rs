//! Groups the input's jobs by variant and computes everything the report states: per-variant
//! statistics, the seed sets they are computed on, comparisons against the baseline, the noise
//! floor of variants that train like the baseline by construction, verdicts on the experiment's
//! four claims and the jobs' attempts. The markdown and HTML renderers only format what this
//! module and its children ([`compare`], [`noise`], [`claims`], [`seed_sets`], [`attempts`])
//! decide.
//!
//! Choice of jobs: statistics, tests and box plots use **succeeded** jobs only, one per seed (a
//! second succeeded job of the same variant and seed trains identically and is ignored). Running
//! jobs that already stored an epoch are kept apart as "running (best so far)" points and rows;
//! queued, failed and cancelled jobs are only counted. Values here are the input's [`Measure`] as
//! shown (accuracies in %, 0–100).

pub mod attempts;
pub mod claims;
pub mod compare;
pub mod noise;
pub mod seed_sets;

use std::collections::{BTreeMap, HashMap};

pub use attempts::{AttemptSummary, JobAttempts};
pub use claims::{ClaimVerdict, Verdict};
pub use compare::{Comparison, Design, Difference, SpreadTest};
pub use noise::{NoiseFloor, NoiseVersusSeeds};
pub use seed_sets::{SeedSetAnalysis, SeedSetKind, Selection};

use crate::construction;
use crate::input::{EpochRow, JobRow, Measure, ReportInput};
use crate::stats::{self, Describe};

/// Significance level for the tests and the spread claim; the 95% CIs the claims use match it.
pub const ALPHA: f64 = 0.05;
/// Fewer finished seeds (or pairs) than this and a claim is "too few seeds to say".
pub const MIN_SEEDS_FOR_CLAIM: usize = 3;
/// Two means count as the same when the 95% CI of their difference lies within ± this many points.
pub const EQUIVALENCE_MARGIN: f64 = 0.5;
/// The "last epochs" summary averages this many final epochs of each job (all, if it has fewer).
pub const LAST_EPOCHS: usize = 10;

/// Job counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub succeeded: usize,
    pub running: usize,
    pub queued: usize,
    /// failed, cancelled or any other state.
    pub failed: usize,
    pub total: usize,
}

impl StateCounts {
    fn add(&mut self, state: &str) {
        self.total += 1;
        match state {
            "succeeded" => self.succeeded += 1,
            "running" => self.running += 1,
            "queued" => self.queued += 1,
            _ => self.failed += 1,
        }
    }
}

/// One succeeded job reduced to its measure (as shown).
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedJob {
    pub seed: u64,
    pub job_id: i64,
    /// Best value of the measure over the epochs: the headline value.
    pub best: f64,
    /// The measure in the last stored epoch; `None` without epoch rows.
    pub final_epoch: Option<f64>,
    /// Mean of the measure over the last [`LAST_EPOCHS`] stored epochs; `None` without rows.
    pub last_epochs_mean: Option<f64>,
}

/// One variant's jobs, reduced to what the report shows.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantResults {
    pub name: String,
    /// Succeeded jobs, one per seed, in seed order.
    pub finished: Vec<FinishedJob>,
    /// Best validation accuracy (%) of each entry of `finished`, in the same order.
    pub finished_best: Vec<f64>,
    /// (seed, best-so-far validation accuracy %) of running jobs that stored an epoch.
    pub running_best: Vec<(u64, f64)>,
    /// Of `finished_best`; `None` without succeeded jobs.
    pub describe: Option<Describe>,
    /// Counts over all of the variant's jobs (not only this seed set's).
    pub states: StateCounts,
}

impl VariantResults {
    fn new(
        name: &str,
        mut finished: Vec<FinishedJob>,
        running_best: Vec<(u64, f64)>,
        states: StateCounts,
    ) -> Self {
        finished.sort_by_key(|j| (j.seed, j.job_id));
        finished.dedup_by_key(|j| j.seed);
        let finished_best: Vec<f64> = finished.iter().map(|j| j.best).collect();
        Self {
            name: name.to_string(),
            describe: stats::describe(&finished_best),
            finished,
            finished_best,
            running_best,
            states,
        }
    }

    /// The same variant keeping only the finished jobs `keep` accepts.
    pub(crate) fn restricted(&self, keep: impl Fn(&FinishedJob) -> bool) -> Self {
        let finished = self.finished.iter().filter(|j| keep(j)).cloned().collect();
        Self::new(&self.name, finished, self.running_best.clone(), self.states)
    }

    /// Seeds of the finished jobs, ascending.
    pub fn seeds(&self) -> Vec<u64> {
        self.finished.iter().map(|j| j.seed).collect()
    }

    /// Final-epoch validation accuracies (%) of the finished jobs that stored epochs.
    pub fn final_epoch_values(&self) -> Vec<f64> {
        self.finished.iter().filter_map(|j| j.final_epoch).collect()
    }

    /// Last-[`LAST_EPOCHS`]-epoch mean validation accuracies (%) of the finished jobs.
    pub fn last_epochs_values(&self) -> Vec<f64> {
        self.finished.iter().filter_map(|j| j.last_epochs_mean).collect()
    }
}

/// Which design the sweep's comparisons hold (judged on the main seed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepDesign {
    /// Every comparison pairs runs by seed.
    Paired,
    /// No comparison pairs runs.
    Unpaired,
    /// Some comparisons pair, others do not.
    Mixed,
    /// No comparison has data on both sides yet.
    Undetermined,
}

impl SweepDesign {
    pub fn label(self) -> &'static str {
        match self {
            Self::Paired => "shared seeds: paired",
            Self::Unpaired => "independent seeds: unpaired",
            Self::Mixed => "partly shared seeds: paired where seeds match, unpaired otherwise",
            Self::Undetermined => "not yet known (no comparison has finished jobs on both sides)",
        }
    }
}

/// Everything computed from one [`ReportInput`].
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Display order: the input's variants, then any variant only seen in jobs; every finished seed.
    pub variants: Vec<VariantResults>,
    pub baseline: String,
    /// The main (balanced) seed set first, then the extended one if the sweep is unbalanced.
    pub seed_sets: Vec<SeedSetAnalysis>,
    pub states: StateCounts,
    /// Variants that train exactly like the baseline by construction ([`crate::construction`]).
    pub trains_like_baseline: Vec<String>,
    pub attempts: AttemptSummary,
}

impl Analysis {
    /// A variant with every finished seed.
    pub fn variant(&self, name: &str) -> Option<&VariantResults> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// The balanced seed set every variant is shown on (the only one for a balanced sweep).
    pub fn main_set(&self) -> &SeedSetAnalysis {
        &self.seed_sets[0]
    }

    /// The variants with more finished seeds than the balanced set, with all of them.
    pub fn extended_set(&self) -> Option<&SeedSetAnalysis> {
        self.seed_sets.get(1)
    }

    /// The main set's comparisons against the baseline.
    pub fn comparisons(&self) -> &[Comparison] {
        &self.main_set().comparisons
    }

    /// The main set's claim verdicts.
    pub fn claims(&self) -> &[ClaimVerdict] {
        &self.main_set().claims
    }

    /// Paired, unpaired or mixed, from the main set's comparisons that have data.
    pub fn design(&self) -> SweepDesign {
        let designs: Vec<Design> = self
            .comparisons()
            .iter()
            .filter(|c| c.n_variant > 0 && c.n_baseline > 0)
            .map(|c| c.design)
            .collect();
        match (designs.contains(&Design::Paired), designs.contains(&Design::Unpaired)) {
            (true, false) => SweepDesign::Paired,
            (false, true) => SweepDesign::Unpaired,
            (true, true) => SweepDesign::Mixed,
            (false, false) => SweepDesign::Undetermined,
        }
    }

    /// Variants whose results equal the baseline's seed for seed in the main set.
    pub fn identical_to_baseline(&self) -> Vec<&str> {
        self.comparisons().iter().filter(|c| c.identical).map(|c| c.variant.as_str()).collect()
    }

    /// Variants that train like the baseline by construction but whose results differ from its
    /// in the main set: their differences are run-to-run nondeterminism.
    pub fn nondeterministic(&self) -> Vec<&str> {
        noise::nondeterministic(self.main_set()).iter().map(|c| c.variant.as_str()).collect()
    }

    /// Total succeeded jobs across variants.
    pub fn finished_jobs(&self) -> usize {
        self.states.succeeded
    }
}

/// Variant names in display order: the input's list, then unknown ones from the jobs.
pub fn variant_order(input: &ReportInput) -> Vec<String> {
    let mut names = input.variants.clone();
    for job in &input.jobs {
        if !names.contains(&job.variant) {
            names.push(job.variant.clone());
        }
    }
    names
}

/// (final-epoch, last-epochs mean) value of the measure in one job's stored epochs.
fn epoch_summaries(epochs: Option<&Vec<&EpochRow>>, measure: &Measure) -> (Option<f64>, Option<f64>) {
    let Some(epochs) = epochs.filter(|e| !e.is_empty()) else {
        return (None, None);
    };
    let mut sorted: Vec<&EpochRow> = epochs.clone();
    sorted.sort_by_key(|e| e.epoch);
    let shown = |e: &&EpochRow| measure.show(e.measured());
    let last: Vec<f64> = sorted.iter().rev().take(LAST_EPOCHS).map(shown).collect();
    (sorted.last().map(shown), stats::mean(&last))
}

fn variant_results(
    name: &str,
    jobs: &[&JobRow],
    epochs_by_job: &HashMap<i64, Vec<&EpochRow>>,
    measure: &Measure,
) -> VariantResults {
    let mut states = StateCounts::default();
    let mut finished = Vec::new();
    let mut running_best = Vec::new();
    for job in jobs {
        states.add(&job.state);
        match (job.state.as_str(), job.best_value) {
            ("succeeded", Some(best)) => {
                let (final_epoch, last_epochs_mean) =
                    epoch_summaries(epochs_by_job.get(&job.job_id), measure);
                finished.push(FinishedJob {
                    seed: job.seed,
                    job_id: job.job_id,
                    best: measure.show(best),
                    final_epoch,
                    last_epochs_mean,
                });
            }
            ("running", Some(best)) => running_best.push((job.seed, measure.show(best))),
            _ => {}
        }
    }
    running_best.sort_by_key(|(seed, _)| *seed);
    VariantResults::new(name, finished, running_best, states)
}

/// Computes the whole analysis.
pub fn analyse(input: &ReportInput) -> Analysis {
    let mut epochs_by_job: HashMap<i64, Vec<&EpochRow>> = HashMap::new();
    for e in &input.epochs {
        epochs_by_job.entry(e.job_id).or_default().push(e);
    }
    let mut jobs_by_variant: BTreeMap<&str, Vec<&JobRow>> = BTreeMap::new();
    for job in &input.jobs {
        jobs_by_variant.entry(job.variant.as_str()).or_default().push(job);
    }
    let order = variant_order(input);
    let variants: Vec<VariantResults> = order
        .iter()
        .map(|name| {
            let jobs = jobs_by_variant.get(name.as_str()).map_or(&[][..], |j| j.as_slice());
            variant_results(name, jobs, &epochs_by_job, &input.measure)
        })
        .collect();
    let mut states = StateCounts::default();
    input.jobs.iter().for_each(|j| states.add(&j.state));
    let baseline = &input.baseline_variant;
    let trains_like_baseline: Vec<String> = order
        .iter()
        .filter(|v| construction::trains_like(v, baseline, &input.learning_rates))
        .cloned()
        .collect();
    let mut seed_sets = seed_sets::analyse_seed_sets(&variants, baseline, &trains_like_baseline);
    if !input.measure.is_validation_accuracy() {
        // The experiment's claims are about accuracy points.
        seed_sets.iter_mut().for_each(|set| set.claims.clear());
    }
    let attempts = attempts::summarise(input, &order);
    Analysis { variants, baseline: baseline.clone(), seed_sets, states, trains_like_baseline, attempts }
}

/// p-value as text: three decimals, or "< 0.001".
pub fn format_p(p: f64) -> String {
    if p < 0.001 { "< 0.001".to_string() } else { format!("{p:.3}") }
}

/// "p = 0.016" or "p < 0.001".
pub fn p_clause(p: f64) -> String {
    if p < 0.001 { "p < 0.001".to_string() } else { format!("p = {p:.3}") }
}

/// Seeds as ascending runs: "0–4, 7, 9–14"; "none" if empty.
pub fn format_seeds(seeds: &[u64]) -> String {
    let mut sorted = seeds.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for seed in sorted {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == seed => *end = seed,
            _ => runs.push((seed, seed)),
        }
    }
    if runs.is_empty() {
        return "none".to_string();
    }
    let text = |(a, b): &(u64, u64)| if a == b { a.to_string() } else { format!("{a}–{b}") };
    runs.iter().map(text).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
