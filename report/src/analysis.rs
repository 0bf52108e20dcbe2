//! Groups the input's jobs by variant and computes everything the report states: per-variant
//! statistics of best validation accuracy, comparisons against the baseline, and verdicts on the
//! experiment's four claims. The markdown and HTML renderers only format what this module decides.
//!
//! Choice of jobs: statistics, tests and box plots use **succeeded** jobs only. Running jobs that
//! already stored an epoch are kept apart as "running (best so far)" points and rows; queued,
//! failed and cancelled jobs are only counted. All accuracies here are percentages (0–100).

use crate::input::{JobRow, ReportInput};
use crate::stats::{self, Describe, MannWhitney, WelchTest};

/// Significance level for the claim verdicts (Welch's t-test, two-sided).
pub const ALPHA: f64 = 0.05;
/// Fewer finished seeds than this in either group and a claim is "too few seeds to say".
pub const MIN_SEEDS_FOR_CLAIM: usize = 3;

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

/// One variant's jobs, reduced to what the report shows.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantResults {
    pub name: String,
    /// Best validation accuracy (%) of each succeeded job, in seed order.
    pub finished_best: Vec<f64>,
    /// (seed, best-so-far validation accuracy %) of running jobs that stored an epoch.
    pub running_best: Vec<(u64, f64)>,
    /// `None` without succeeded jobs.
    pub describe: Option<Describe>,
    pub states: StateCounts,
}

/// One variant against the baseline (differences are variant − baseline, in points).
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub variant: String,
    pub n_variant: usize,
    pub n_baseline: usize,
    pub welch: Option<WelchTest>,
    pub mann_whitney: Option<MannWhitney>,
    pub hedges_g: Option<f64>,
    pub cohens_d: Option<f64>,
    pub cliffs_delta: Option<f64>,
}

/// How far the data back a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Supported,
    PartlySupported,
    NotSupported,
    Contradicted,
    TooFewSeeds,
    NoData,
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

/// Everything computed from one [`ReportInput`].
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Display order: the input's variants, then any variant only seen in jobs.
    pub variants: Vec<VariantResults>,
    pub baseline: String,
    /// Every variant except the baseline, in display order.
    pub comparisons: Vec<Comparison>,
    pub claims: Vec<ClaimVerdict>,
    pub states: StateCounts,
}

impl Analysis {
    pub fn variant(&self, name: &str) -> Option<&VariantResults> {
        self.variants.iter().find(|v| v.name == name)
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

fn percent(fraction: f64) -> f64 {
    fraction * 100.0
}

fn variant_results(name: &str, jobs: &[&JobRow]) -> VariantResults {
    let mut states = StateCounts::default();
    let mut finished: Vec<(u64, f64)> = Vec::new();
    let mut running_best = Vec::new();
    for job in jobs {
        states.add(&job.state);
        match (job.state.as_str(), job.best_val_acc) {
            ("succeeded", Some(best)) => finished.push((job.seed, percent(best))),
            ("running", Some(best)) => running_best.push((job.seed, percent(best))),
            _ => {}
        }
    }
    finished.sort_by_key(|(seed, _)| *seed);
    running_best.sort_by_key(|(seed, _)| *seed);
    let finished_best: Vec<f64> = finished.into_iter().map(|(_, acc)| acc).collect();
    VariantResults {
        name: name.to_string(),
        describe: stats::describe(&finished_best),
        finished_best,
        running_best,
        states,
    }
}

fn compare(variant: &VariantResults, baseline: &[f64]) -> Comparison {
    let a = &variant.finished_best;
    Comparison {
        variant: variant.name.clone(),
        n_variant: a.len(),
        n_baseline: baseline.len(),
        welch: stats::welch_t_test(a, baseline),
        mann_whitney: stats::mann_whitney_u(a, baseline),
        hedges_g: stats::hedges_g(a, baseline),
        cohens_d: stats::cohens_d(a, baseline),
        cliffs_delta: stats::cliffs_delta(a, baseline),
    }
}

/// Computes the whole analysis.
pub fn analyse(input: &ReportInput) -> Analysis {
    let variants: Vec<VariantResults> = variant_order(input)
        .iter()
        .map(|name| {
            let jobs: Vec<&JobRow> = input.jobs.iter().filter(|j| &j.variant == name).collect();
            variant_results(name, &jobs)
        })
        .collect();
    let mut states = StateCounts::default();
    input.jobs.iter().for_each(|j| states.add(&j.state));
    let baseline_values =
        variants.iter().find(|v| v.name == input.baseline_variant).map(|v| v.finished_best.clone());
    let comparisons = variants
        .iter()
        .filter(|v| v.name != input.baseline_variant)
        .map(|v| compare(v, baseline_values.as_deref().unwrap_or(&[])))
        .collect();
    let mut analysis = Analysis {
        variants,
        baseline: input.baseline_variant.clone(),
        comparisons,
        claims: Vec::new(),
        states,
    };
    analysis.claims = judge_claims(&analysis);
    analysis
}

/// The comparison of the variant named `key` (exact name first, else the first name containing it).
fn find_comparison<'a>(analysis: &'a Analysis, key: &str) -> Option<&'a Comparison> {
    let lower = |s: &str| s.to_lowercase();
    analysis
        .comparisons
        .iter()
        .find(|c| lower(&c.variant) == key)
        .or_else(|| analysis.comparisons.iter().find(|c| lower(&c.variant).contains(key)))
}

/// Why a comparison cannot decide anything, if it cannot.
fn undecidable(analysis: &Analysis, comparison: Option<&Comparison>, key: &str) -> Option<ClaimVerdict> {
    let no_data = |evidence: String| Some(ClaimVerdict { claim: "", verdict: Verdict::NoData, evidence });
    let Some(c) = comparison else {
        return no_data(format!("no variant named like `{key}` in this sweep"));
    };
    if c.n_variant < MIN_SEEDS_FOR_CLAIM || c.n_baseline < MIN_SEEDS_FOR_CLAIM {
        return Some(ClaimVerdict {
            claim: "",
            verdict: Verdict::TooFewSeeds,
            evidence: format!(
                "only {} finished `{}` vs {} finished `{}` jobs (need {MIN_SEEDS_FOR_CLAIM} each)",
                c.n_variant, c.variant, c.n_baseline, analysis.baseline
            ),
        });
    }
    if c.welch.is_none() {
        return no_data(format!(
            "`{}` and `{}` show no variance; no test possible",
            c.variant, analysis.baseline
        ));
    }
    None
}

fn difference_text(c: &Comparison, welch: &WelchTest) -> String {
    format!(
        "`{}` − baseline = {:+.2} points (95% CI {:+.2} to {:+.2}), Welch {}, n = {} vs {}",
        c.variant,
        welch.mean_difference,
        welch.ci95.0,
        welch.ci95.1,
        p_clause(welch.p_value),
        c.n_variant,
        c.n_baseline
    )
}

/// p-value as text: three decimals, or "< 0.001".
pub fn format_p(p: f64) -> String {
    if p < 0.001 { "< 0.001".to_string() } else { format!("{p:.3}") }
}

/// "p = 0.016" or "p < 0.001".
pub fn p_clause(p: f64) -> String {
    if p < 0.001 { "p < 0.001".to_string() } else { format!("p = {p:.3}") }
}

fn judge_better_by_one_to_two(analysis: &Analysis) -> ClaimVerdict {
    let claim = "Natural SoftMax beats Normal by 1–2 points";
    let c = find_comparison(analysis, "natural_softmax");
    if let Some(v) = undecidable(analysis, c, "natural_softmax") {
        return ClaimVerdict { claim, ..v };
    }
    let (c, w) = (c.unwrap(), c.unwrap().welch.unwrap());
    let diff = difference_text(c, &w);
    let (verdict, evidence) = match (w.p_value < ALPHA, w.mean_difference > 0.0) {
        (true, true) if (1.0..=2.0).contains(&w.mean_difference) => (Verdict::Supported, diff),
        (true, true) => (Verdict::PartlySupported, format!("better, but not by 1–2 points: {diff}")),
        (true, false) => (Verdict::Contradicted, format!("significantly worse: {diff}")),
        (false, _) => (Verdict::NotSupported, format!("difference not significant at {ALPHA}: {diff}")),
    };
    ClaimVerdict { claim, verdict, evidence }
}

fn judge_worse(analysis: &Analysis, claim: &'static str, key: &str) -> ClaimVerdict {
    let c = find_comparison(analysis, key);
    if let Some(v) = undecidable(analysis, c, key) {
        return ClaimVerdict { claim, ..v };
    }
    let (c, w) = (c.unwrap(), c.unwrap().welch.unwrap());
    let diff = difference_text(c, &w);
    let (verdict, evidence) = match (w.p_value < ALPHA, w.mean_difference < 0.0) {
        (true, true) => (Verdict::Supported, diff),
        (true, false) => (Verdict::Contradicted, format!("significantly better, not worse: {diff}")),
        (false, _) => (Verdict::NotSupported, format!("difference not significant at {ALPHA}: {diff}")),
    };
    ClaimVerdict { claim, verdict, evidence }
}

fn judge_only_wider_spread(analysis: &Analysis) -> ClaimVerdict {
    let claim = "Multiple SoftMax only widens the spread (same mean, larger variance)";
    let c = find_comparison(analysis, "multi_softmax");
    if let Some(v) = undecidable(analysis, c, "multi_softmax") {
        return ClaimVerdict { claim, ..v };
    }
    let (c, w) = (c.unwrap(), c.unwrap().welch.unwrap());
    let variant = analysis.variant(&c.variant).map(|v| v.finished_best.clone()).unwrap_or_default();
    let baseline = analysis.variant(&analysis.baseline).map(|v| v.finished_best.clone()).unwrap_or_default();
    let spread = stats::variance_ratio_f_test(&variant, &baseline);
    let sd = |xs: &[f64]| stats::sample_std(xs).unwrap_or(0.0);
    let spread_text = match spread {
        Some((ratio, p)) => format!(
            "sd {:.2} vs {:.2} points, variance ratio {ratio:.2} (one-sided F-test {})",
            sd(&variant),
            sd(&baseline),
            p_clause(p)
        ),
        None => format!("sd {:.2} vs {:.2} points (baseline has no variance)", sd(&variant), sd(&baseline)),
    };
    let wider = spread.is_some_and(|(ratio, p)| ratio > 1.0 && p < ALPHA);
    let diff = difference_text(c, &w);
    let (verdict, evidence) = match (w.p_value < ALPHA, wider) {
        (false, true) => (
            Verdict::Supported,
            format!("no significant mean difference, spread wider: {diff}; {spread_text}"),
        ),
        (false, false) => (
            Verdict::PartlySupported,
            format!(
                "no significant mean difference, but spread not significantly wider: {diff}; {spread_text}"
            ),
        ),
        (true, _) => (Verdict::Contradicted, format!("the mean itself differs: {diff}; {spread_text}")),
    };
    ClaimVerdict { claim, verdict, evidence }
}

fn judge_claims(analysis: &Analysis) -> Vec<ClaimVerdict> {
    if analysis.variant(&analysis.baseline).is_none() {
        let evidence = format!("baseline `{}` is not in this sweep", analysis.baseline);
        return [
            "Natural SoftMax beats Normal by 1–2 points",
            "lr 1e-2 is worse than the baseline",
            "Natural HardMax is worse than the baseline",
            "Multiple SoftMax only widens the spread (same mean, larger variance)",
        ]
        .into_iter()
        .map(|claim| ClaimVerdict { claim, verdict: Verdict::NoData, evidence: evidence.clone() })
        .collect();
    }
    vec![
        judge_better_by_one_to_two(analysis),
        judge_worse(analysis, "lr 1e-2 is worse than the baseline", "normal_lr1e-2"),
        judge_worse(analysis, "Natural HardMax is worse than the baseline", "natural_hardmax"),
        judge_only_wider_spread(analysis),
    ]
}
