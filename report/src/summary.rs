//! `summary.md`: job status and attempts, the sweep's design, then per seed set the per-variant
//! statistics, the epoch-based accuracies, the comparisons against the baseline, the noise floor
//! and the claim verdicts, and a note on methods. The sentences and tables here are shared with
//! `html.rs`.

pub mod notes;
pub mod text_tables;

use std::fmt::Write as _;

pub use notes::{
    attempts_sentence, failed_jobs_sentence, noise_floor_intro, noise_versus_seeds_sentence,
    nondeterminism_note,
};
pub use text_tables::{
    TextTable, comparison_table, epoch_table, failed_jobs_table, noise_floor_table, variant_table,
};

use crate::analysis::{
    ALPHA, Analysis, EQUIVALENCE_MARGIN, LAST_EPOCHS, MIN_SEEDS_FOR_CLAIM, SeedSetAnalysis, SeedSetKind,
    SweepDesign,
};
use crate::construction::ZERO_GRADIENT_TERM_VARIANTS;
use crate::input::{Measure, Provenance, ReportInput};
use crate::plots::boxplot::MIN_N_FOR_BOX;
use crate::stats::{MANN_WHITNEY_EXACT_MAX_N, WILCOXON_EXACT_MAX_N};

/// One sentence on how many jobs are finished, running, queued and failed.
pub fn status_sentence(analysis: &Analysis) -> String {
    let s = analysis.states;
    let mut text = format!(
        "{} of {} jobs finished (succeeded), {} running, {} queued, {} failed or cancelled.",
        s.succeeded, s.total, s.running, s.queued, s.failed
    );
    if s.succeeded == 0 {
        text.push_str(" No finished jobs yet: statistics, box plot and claims wait for succeeded jobs.");
    } else if s.succeeded < s.total {
        text.push_str(" This is a partial report: the sweep has not finished.");
    }
    text
}

/// Which design the sweep holds and what that means for the tests.
pub fn design_sentence(analysis: &Analysis) -> String {
    let what = match analysis.design() {
        SweepDesign::Paired => {
            "jobs with equal seeds share initial weights and data order, so every variant is compared with the \
             baseline seed for seed (paired t-test and Wilcoxon signed-rank test)"
        }
        SweepDesign::Unpaired => {
            "seeds differ between variants, so the comparisons are unpaired (Welch's t-test and Mann-Whitney U)"
        }
        SweepDesign::Mixed => {
            "comparisons are paired by seed where the seeds match and unpaired otherwise; the tables say which \
             tests each comparison used"
        }
        SweepDesign::Undetermined => "no comparison can be made yet",
    };
    format!("Design: {}. Here {what}.", analysis.design().label())
}

/// Which seed sets the report holds (and why there are two).
pub fn seed_sets_sentence(analysis: &Analysis) -> String {
    let main = analysis.main_set();
    match analysis.extended_set() {
        None => format!("Seed set: {}; the sweep is balanced, so there is one box plot.", main.description()),
        Some(extended) => format!(
            "The sweep is unbalanced. Main (balanced) set: {}; it is used for the main box plot and every \
             variant's statistics. Extended set: {}; `boxplot_extended.svg` shows it and its statistics and \
             claims are given separately below.",
            main.description(),
            extended.description()
        ),
    }
}

/// The note on variants identical to the baseline, if any.
pub fn identical_note(analysis: &Analysis) -> Option<String> {
    let names = analysis.identical_to_baseline();
    if names.is_empty() {
        return None;
    }
    let listed: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    let verb = if names.len() == 1 { "is" } else { "are" };
    Some(format!(
        "{} {verb} identical to the baseline `{}` seed for seed (by construction, bit for bit), so {} points \
         coincide with the baseline's in the box plot and {} curves with its curves.",
        listed.join(" and "),
        analysis.baseline,
        if names.len() == 1 { "its" } else { "their" },
        if names.len() == 1 { "its" } else { "their" },
    ))
}

/// The methods paragraphs (also shown in the HTML page); the experiment's own (identical training,
/// claims) only where the report measures validation accuracy.
pub fn methods_text(baseline: &str, measure: &Measure) -> Vec<String> {
    let accuracy = measure.is_validation_accuracy();
    let headline = if accuracy {
        format!(
            "The headline value of a job is its best validation accuracy over all epochs (in %). The validation set \
             is CIFAR-10's test set, so choosing the best epoch on it is optimistic, as in the original experiment; \
             the final-epoch accuracy and the mean of the last {LAST_EPOCHS} epochs (all epochs if fewer) are shown \
             beside it as less optimistic measures."
        )
    } else {
        format!(
            "The headline value of a job is its {} over all epochs (`{}`, {} is better{}), the sweep's objective. \
             Choosing the best epoch on a validation set is optimistic; the value in the final epoch and the mean \
             of the last {LAST_EPOCHS} epochs (all epochs if fewer) are shown beside it as less optimistic measures.",
            measure.best_label(),
            measure.metric,
            if measure.maximize { "higher" } else { "lower" },
            if measure.percent { ", in %" } else { "" },
        )
    };
    let bounds = if measure.percent {
        "the 95% CI of the mean uses Student's t and is clipped to 0–100 %"
    } else {
        "the 95% CI of the mean uses Student's t"
    };
    let chance = if measure.percent { "; the dashed line marks chance (10 %)" } else { "" };
    let points = match (measure.percent, measure.maximize) {
        (true, _) => "in points",
        (false, true) => "(positive: the variant is higher, better)",
        (false, false) => "(negative: the variant is lower, better)",
    };
    let mut paragraphs = vec![
        "Statistics, tests and boxes use succeeded jobs only, one per seed. Running jobs' best-so-far values are \
         listed and plotted separately (crosses in the box plot, thin curves) and enter no statistic."
            .to_string(),
        headline,
        format!(
            "std is the sample standard deviation (n − 1); {bounds}; quartiles interpolate linearly (NumPy \
             default); boxes are drawn for n ≥ {MIN_N_FOR_BOX} only, whiskers reach the furthest value within \
             1.5 IQR of the box{chance}."
        ),
        format!(
            "Each variant is compared with the baseline `{baseline}`, Δ = variant − baseline {points}. Jobs with \
             equal seeds share initial weights and data order, so a comparison is paired when all seeds of both \
             groups pair up, or when at least {MIN_SEEDS_FOR_CLAIM} do (then only the paired seeds enter and the \
             others are listed as left out). Paired: paired t-test (df = n − 1) and Wilcoxon signed-rank test \
             (two-sided; zero differences are dropped before ranking, SciPy's zero_method=\"wilcox\"; exact null \
             distribution for n ≤ {WILCOXON_EXACT_MAX_N} without ties or zeros, otherwise normal approximation with \
             tie and continuity correction). Unpaired: Welch's t-test (Welch–Satterthwaite df) and Mann-Whitney U \
             (exact for n ≤ {MANN_WHITNEY_EXACT_MAX_N} without ties, otherwise normal approximation with tie and \
             continuity correction). A variant whose values equal the baseline's seed for seed is identical by \
             construction (bit for bit) and no test is run. Effect sizes: Hedges' g = Cohen's d (pooled sd) × \
             (1 − 3/(4(n₁+n₂) − 9)); Cliff's δ = P(x > y) − P(x < y)."
        ),
    ];
    if accuracy {
        paragraphs.extend([
            format!(
                "Identical training by construction: {} add to the cross-entropy a term with zero gradient, so with \
                 shared seeds (same initial weights and data order) and the same learning rate as the baseline they \
                 take exactly its steps in exact arithmetic. Any difference from it can only be run-to-run \
                 nondeterminism, so it is not tested: GPU kernels are chosen by autotuning, so runs on different \
                 machines or builds, or jobs that start while a machine is still tuning, can sum in a different order \
                 and drift apart from the first epochs on, while runs with the same kernels agree bit for bit. The paired differences Δ (mean, sd, \
                 max |Δ|, number of pairs and of pairs equal bit for bit) are reported as the noise floor of this \
                 run-to-run nondeterminism, and its sd is set against √2 × the baseline's seed-to-seed sd (the sd of the difference between two runs with \
                 different seeds). A variant counts as such only when its learning rate is known to equal the \
                 baseline's and its seeds pair up with the baseline's.",
                ZERO_GRADIENT_TERM_VARIANTS.map(|v| format!("`{v}`")).join(" and ")
            ),
            format!(
                "Claims are judged on the 95% CI of Δ from the t-test (paired or Welch), at α = {ALPHA}. \"Natural \
                 SoftMax beats Normal by 1–2 points\": supported if the whole CI is above 0 and Δ (to two decimals) is within \
                 1–2; partly supported if the CI is above 0 but Δ is outside 1–2; contradicted if the whole CI is below 0; otherwise \
                 not supported. \"… is worse than the baseline\": supported if the whole CI is below 0, contradicted if \
                 above 0, otherwise not supported. \"Multiple SoftMax only widens the spread\": contradicted if the CI \
                 excludes 0; supported only if the CI lies within ±{EQUIVALENCE_MARGIN} points (same mean) and the spread \
                 is significantly wider (one-sided Pitman-Morgan test when paired, F-test when unpaired); otherwise not \
                 supported. A variant identical to the baseline bit for bit supports none of them; a claim about a \
                 variant that trains like the baseline by construction but differs from it is judged \"identical \
                 training by construction: the measured Δ is nondeterminism\", whatever its Δ. With fewer than \
                 {MIN_SEEDS_FOR_CLAIM} pairs (or seeds per group) a claim is \"too few seeds to say\". No correction \
                 for multiple comparisons is applied."
            ),
        ]);
    }
    paragraphs.push(
        "Seed sets: the main set holds the seeds every variant shares (or, when seeds are independent, each \
         variant's lowest seeds, as many as the smallest variant has); when some variants have more finished seeds, \
         an extended set repeats their statistics and claims with all of them, against the baseline."
            .to_string()
    );
    paragraphs
}

/// "Generated … from commit `…`, built with rustc …; burn 0.21.0, …."
pub fn provenance_sentence(p: &Provenance) -> String {
    let mut text = format!("Generated {} from commit `{}`", p.generated_at, p.git_commit);
    if !p.rustc_version.is_empty() {
        text.push_str(&format!(", built with {}", p.rustc_version));
    }
    if !p.crate_versions.is_empty() {
        let crates: Vec<String> = p.crate_versions.iter().map(|(c, v)| format!("{c} {v}")).collect();
        text.push_str(&format!("; {}", crates.join(", ")));
    }
    text.push('.');
    text
}

fn markdown_table(out: &mut String, table: &TextTable) {
    let escape = |s: &String| s.replace('|', "\\|");
    let _ = writeln!(out, "| {} |", table.header.iter().map(escape).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(table.header.len()));
    for row in &table.rows {
        let _ = writeln!(out, "| {} |", row.iter().map(escape).collect::<Vec<_>>().join(" | "));
    }
}

/// Headings of a seed set's two value tables.
pub fn value_headings(measure: &Measure) -> [String; 2] {
    let name = &measure.label;
    let unit = measure.unit();
    [
        format!("{}{unit} per variant", capitalised(&measure.best_label())),
        format!("The {name} at the best epoch, the final epoch and over the last {LAST_EPOCHS} epochs{unit}"),
    ]
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}

/// Why a seed set has no claims section when the report measures another metric.
pub fn no_claims_text(measure: &Measure) -> String {
    format!(
        "The experiment's claims are about validation accuracy; this report measures the {} (`{}`).",
        measure.label, measure.metric
    )
}

fn seed_set_markdown(out: &mut String, set: &SeedSetAnalysis, baseline: &str, measure: &Measure) {
    let _ = writeln!(out, "## {}\n", set.title());
    let figure = match set.kind {
        SeedSetKind::Balanced => "`boxplot.svg`/`boxplot.png`",
        SeedSetKind::Extended => "`boxplot_extended.svg`/`boxplot_extended.png`",
    };
    let _ = writeln!(out, "Box plot: {figure}.\n");
    let [best, epochs] = value_headings(measure);
    let _ = writeln!(out, "### {best}\n");
    markdown_table(out, &variant_table(set, measure));
    let _ = writeln!(out, "\n### {epochs}\n");
    let _ = writeln!(out, "Mean ± sample sd over the set's seeds.\n");
    markdown_table(out, &epoch_table(set, measure));
    let _ = writeln!(out, "\n### Against the baseline `{baseline}`\n");
    if set.comparisons.is_empty() {
        let _ = writeln!(out, "No other variants.");
    } else {
        markdown_table(out, &comparison_table(set, measure));
    }
    if let Some(table) = noise_floor_table(set) {
        let _ = writeln!(out, "\n### Run-to-run nondeterminism: the noise floor\n");
        let _ = writeln!(out, "{}\n", noise_floor_intro());
        markdown_table(out, &table);
        if let Some(sentence) = noise_versus_seeds_sentence(set, baseline) {
            let _ = writeln!(out, "\n{sentence}");
        }
    }
    let _ = writeln!(out, "\n### The experiment's claims\n");
    if !measure.is_validation_accuracy() {
        let _ = writeln!(out, "{}", no_claims_text(measure));
    } else if set.claims.is_empty() {
        let _ = writeln!(out, "No claim is about the variants of this set.");
    }
    for claim in &set.claims {
        let _ = writeln!(out, "- **{}**: {} — {}.", claim.claim, claim.verdict.label(), claim.evidence);
    }
    out.push('\n');
}

/// The whole `summary.md`.
pub fn render_markdown(input: &ReportInput, analysis: &Analysis) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Sweep report: {}\n", input.sweep);
    let _ = writeln!(out, "{}\n", provenance_sentence(&input.provenance));
    let _ = writeln!(out, "## Status\n\n{}\n\n{}\n", status_sentence(analysis), attempts_sentence(analysis));
    if let Some(note) = notes::plumbing_note(&input.spec_json) {
        let _ = writeln!(out, "**{note}**\n");
    }
    if let (Some(sentence), Some(table)) =
        (failed_jobs_sentence(analysis), failed_jobs_table(&analysis.attempts))
    {
        let _ = writeln!(out, "{sentence}\n");
        markdown_table(&mut out, &table);
        out.push('\n');
    }
    let _ = writeln!(out, "## Design\n\n{}\n\n{}\n", design_sentence(analysis), seed_sets_sentence(analysis));
    for note in [identical_note(analysis), nondeterminism_note(analysis)].into_iter().flatten() {
        let _ = writeln!(out, "{note}\n");
    }
    for set in &analysis.seed_sets {
        seed_set_markdown(&mut out, set, &analysis.baseline, &input.measure);
    }
    let _ = writeln!(out, "## Methods\n");
    for paragraph in methods_text(&analysis.baseline, &input.measure) {
        let _ = writeln!(out, "{paragraph}\n");
    }
    let _ = writeln!(
        out,
        "Figures: `boxplot.svg`/`boxplot.png` ({} per variant, main seed set){}, \
         `curves.svg`/`curves.png` (mean {} per epoch, band = ±1 sd across finished seeds), `curves.gif` \
         (every run's {}, growing epoch by epoch). Data: `results.csv`, `epochs.csv`.",
        input.measure.best_label(),
        if analysis.extended_set().is_some() {
            ", `boxplot_extended.svg`/`boxplot_extended.png` (extended set)"
        } else {
            ""
        },
        input.measure.label,
        input.measure.label,
    );
    out
}
