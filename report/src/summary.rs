//! `summary.md`: job status, per-variant statistics, tests against the baseline, the claim
//! verdicts and a note on methods. The tables are built here as plain string cells so that
//! `html.rs` shows exactly the same numbers.

use std::fmt::Write as _;

use crate::analysis::{ALPHA, Analysis, MIN_SEEDS_FOR_CLAIM, format_p};
use crate::input::ReportInput;
use crate::stats::MANN_WHITNEY_EXACT_MAX_N;

/// A table as header cells and rows of cells.
#[derive(Debug, Clone, PartialEq)]
pub struct TextTable {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

const MISSING: &str = "–";

fn cells<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn fixed(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| MISSING.to_string(), |v| format!("{v:.decimals$}"))
}

/// Per-variant statistics of best validation accuracy (%), finished jobs only.
pub fn variant_table(analysis: &Analysis) -> TextTable {
    let header = cells([
        "variant",
        "n finished",
        "mean",
        "std",
        "median",
        "min",
        "max",
        "95% CI of mean (t)",
        "running: best so far",
    ]);
    let rows = analysis
        .variants
        .iter()
        .map(|v| {
            let d = v.describe.as_ref();
            let running = if v.running_best.is_empty() {
                MISSING.to_string()
            } else {
                v.running_best
                    .iter()
                    .map(|(seed, acc)| format!("{acc:.2} (seed {seed})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                v.name.clone(),
                v.finished_best.len().to_string(),
                fixed(d.map(|d| d.mean), 2),
                fixed(d.and_then(|d| d.std), 2),
                fixed(d.map(|d| d.median), 2),
                fixed(d.map(|d| d.min), 2),
                fixed(d.map(|d| d.max), 2),
                d.and_then(|d| d.ci95)
                    .map_or_else(|| MISSING.to_string(), |(lo, hi)| format!("{lo:.2} – {hi:.2}")),
                running,
            ]
        })
        .collect();
    TextTable { header, rows }
}

/// Each variant against the baseline.
pub fn comparison_table(analysis: &Analysis) -> TextTable {
    let header = cells([
        "variant",
        "n vs baseline",
        "Δ mean (points)",
        "95% CI of Δ",
        "Welch t (df)",
        "Welch p",
        "Mann-Whitney U",
        "MW p (method)",
        "Hedges' g",
        "Cohen's d",
        "Cliff's δ",
    ]);
    let rows = analysis
        .comparisons
        .iter()
        .map(|c| {
            let w = c.welch.as_ref();
            let mw = c.mann_whitney.as_ref();
            vec![
                c.variant.clone(),
                format!("{} vs {}", c.n_variant, c.n_baseline),
                w.map_or_else(|| MISSING.to_string(), |w| format!("{:+.2}", w.mean_difference)),
                w.map_or_else(|| MISSING.to_string(), |w| format!("{:+.2} – {:+.2}", w.ci95.0, w.ci95.1)),
                w.map_or_else(|| MISSING.to_string(), |w| format!("{:.2} ({:.1})", w.t, w.df)),
                w.map_or_else(|| MISSING.to_string(), |w| format_p(w.p_value)),
                mw.map_or_else(|| MISSING.to_string(), |m| format!("{:.1}", m.u)),
                mw.map_or_else(
                    || MISSING.to_string(),
                    |m| format!("{} ({})", format_p(m.p_value), m.method.describe()),
                ),
                fixed(c.hedges_g, 2),
                fixed(c.cohens_d, 2),
                fixed(c.cliffs_delta, 2),
            ]
        })
        .collect();
    TextTable { header, rows }
}

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

/// The methods paragraph (also shown in the HTML page).
pub fn methods_text(baseline: &str) -> Vec<String> {
    vec![
        "Statistics, tests and boxes use succeeded jobs only (one value per job: its best validation accuracy, in %). \
         Running jobs' best-so-far values are listed and plotted separately (crosses in the box plot, thin curves) and enter no statistic."
            .to_string(),
        "std is the sample standard deviation (n − 1); the 95% CI of the mean uses Student's t; quartiles interpolate linearly \
         (NumPy default); box whiskers reach the furthest value within 1.5 IQR of the box."
            .to_string(),
        format!(
            "Each variant is compared with the baseline `{baseline}`: Δ = variant − baseline; Welch's unequal-variance t-test \
             (two-sided, Welch–Satterthwaite df); Mann-Whitney U of the variant (two-sided; exact null distribution when there \
             are no ties and both n ≤ {MANN_WHITNEY_EXACT_MAX_N}, otherwise normal approximation with tie and continuity \
             correction; the table says which); Hedges' g = Cohen's d (pooled sd) × (1 − 3/(4(n₁+n₂) − 9)); Cliff's δ = P(x > y) − P(x < y)."
        ),
        format!(
            "Claims are judged with the Welch p-value at α = {ALPHA}; with fewer than {MIN_SEEDS_FOR_CLAIM} finished seeds in \
             either group a claim is \"too few seeds to say\". The spread claim also uses a one-sided F-test of the variance ratio. \
             No correction for multiple comparisons is applied."
        ),
    ]
}

fn markdown_table(out: &mut String, table: &TextTable) {
    let escape = |s: &String| s.replace('|', "\\|");
    let _ = writeln!(out, "| {} |", table.header.iter().map(escape).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(table.header.len()));
    for row in &table.rows {
        let _ = writeln!(out, "| {} |", row.iter().map(escape).collect::<Vec<_>>().join(" | "));
    }
}

/// The whole `summary.md`.
pub fn render_markdown(input: &ReportInput, analysis: &Analysis) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Sweep report: {}\n", input.sweep);
    let p = &input.provenance;
    let _ = writeln!(out, "Generated {} from commit `{}`.\n", p.generated_at, p.git_commit);
    let _ = writeln!(out, "## Status\n\n{}\n", status_sentence(analysis));
    let _ = writeln!(out, "## Best validation accuracy per variant (%)\n");
    markdown_table(&mut out, &variant_table(analysis));
    let _ = writeln!(out, "\n## Against the baseline `{}`\n", analysis.baseline);
    if analysis.comparisons.is_empty() {
        let _ = writeln!(out, "No other variants.");
    } else {
        markdown_table(&mut out, &comparison_table(analysis));
    }
    let _ = writeln!(out, "\n## The experiment's claims\n");
    for claim in &analysis.claims {
        let _ = writeln!(out, "- **{}**: {} — {}.", claim.claim, claim.verdict.label(), claim.evidence);
    }
    let _ = writeln!(out, "\n## Methods\n");
    for paragraph in methods_text(&analysis.baseline) {
        let _ = writeln!(out, "{paragraph}\n");
    }
    let _ = writeln!(
        out,
        "Figures: `boxplot.svg`/`boxplot.png` (best validation accuracy per variant), `curves.svg`/`curves.png` \
         (mean accuracy per epoch, band = ±1 sd across finished seeds). Data: `results.csv`, `epochs.csv`."
    );
    out
}
