//! The report's tables as plain string cells, built once so that `summary.md` and `index.html`
//! show exactly the same numbers: per-variant statistics, the epoch-based accuracies, the
//! comparisons against the baseline and the noise floor, each for one seed set; and the jobs that
//! failed, with their reasons.

use crate::analysis::noise::{nondeterministic, signed_points};
use crate::analysis::{
    AttemptSummary, Comparison, Design, LAST_EPOCHS, SeedSetAnalysis, format_p, format_seeds, p_clause,
};
use crate::input::Measure;
use crate::stats;
use crate::tables::is_unsafe_char;

/// A table as header cells and rows of cells.
#[derive(Debug, Clone, PartialEq)]
pub struct TextTable {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

pub(crate) const MISSING: &str = "–";

fn cells<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn fixed(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| MISSING.to_string(), |v| format!("{v:.decimals$}"))
}

/// A CI of a mean clipped to the measure's bounds (0–100 % for an accuracy): a mean cannot leave them.
fn mean_ci(ci: Option<(f64, f64)>, measure: &Measure) -> String {
    let (min, max) = measure.bounds();
    let d = measure.decimals();
    ci.map_or_else(
        || MISSING.to_string(),
        |(lo, hi)| format!("{:.d$} – {:.d$}", lo.clamp(min, max), hi.clamp(min, max)),
    )
}

/// "90.12 ± 0.34" (mean ± sample sd), "90.12" for one value, "–" for none.
fn mean_sd(values: &[f64], d: usize) -> String {
    match (stats::mean(values), stats::sample_std(values)) {
        (Some(m), Some(sd)) => format!("{m:.d$} ± {sd:.d$}"),
        (Some(m), None) => format!("{m:.d$}"),
        _ => MISSING.to_string(),
    }
}

/// Per-variant statistics of the measure's best value, finished jobs of the set only.
pub fn variant_table(set: &SeedSetAnalysis, measure: &Measure) -> TextTable {
    let d = measure.decimals();
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
    let rows = set
        .variants
        .iter()
        .map(|v| {
            let s = v.describe.as_ref();
            let running = if v.running_best.is_empty() {
                MISSING.to_string()
            } else {
                v.running_best
                    .iter()
                    .map(|(seed, best)| format!("{best:.d$} (seed {seed})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                v.name.clone(),
                v.finished_best.len().to_string(),
                fixed(s.map(|s| s.mean), d),
                fixed(s.and_then(|s| s.std), d),
                fixed(s.map(|s| s.median), d),
                fixed(s.map(|s| s.min), d),
                fixed(s.map(|s| s.max), d),
                mean_ci(s.and_then(|s| s.ci95), measure),
                running,
            ]
        })
        .collect();
    TextTable { header, rows }
}

/// The measure at the best epoch, the final epoch and over the last epochs, mean ± sd over the
/// set's seeds.
pub fn epoch_table(set: &SeedSetAnalysis, measure: &Measure) -> TextTable {
    let d = measure.decimals();
    let last = format!("mean of last {LAST_EPOCHS} epochs");
    let header = cells(["variant", "n finished", "best epoch (headline)", "final epoch", &last]);
    let rows = set
        .variants
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.finished.len().to_string(),
                mean_sd(&v.finished_best, d),
                mean_sd(&v.final_epoch_values(), d),
                mean_sd(&v.last_epochs_values(), d),
            ]
        })
        .collect();
    TextTable { header, rows }
}

fn t_cells(c: &Comparison, d: usize) -> [String; 3] {
    let missing = || [MISSING.to_string(), MISSING.to_string(), MISSING.to_string()];
    match c.design {
        Design::Paired => c.paired_t.map_or_else(missing, |t| {
            [
                format!("{:+.d$} – {:+.d$}", t.ci95.0, t.ci95.1),
                format!("{:.2} ({:.0})", t.t, t.df),
                format_p(t.p_value),
            ]
        }),
        Design::Unpaired => c.welch.map_or_else(missing, |w| {
            [
                format!("{:+.d$} – {:+.d$}", w.ci95.0, w.ci95.1),
                format!("{:.2} ({:.1})", w.t, w.df),
                format_p(w.p_value),
            ]
        }),
    }
}

/// Each variant of the set against the baseline.
pub fn comparison_table(set: &SeedSetAnalysis, measure: &Measure) -> TextTable {
    let d = measure.decimals();
    let delta_header = if measure.percent { "Δ mean (points)" } else { "Δ mean" };
    let header = cells([
        "variant",
        "seeds",
        "tests",
        delta_header,
        "95% CI of Δ",
        "t (df)",
        "t-test p",
        "rank test",
        "spread: variance ratio (one-sided p)",
        "Hedges' g",
        "Cohen's d",
        "Cliff's δ",
    ]);
    let rows = set
        .comparisons
        .iter()
        .map(|c| {
            let [ci, t, p] = t_cells(c, d);
            let delta = match (c.identical, c.noise_floor, c.difference()) {
                (true, _, _) => format!("{:.d$}", 0.0),
                (false, Some(noise), _) => signed_points(noise.mean),
                (false, None, Some(diff)) => format!("{:+.d$}", diff.mean_difference),
                (false, None, None) => MISSING.to_string(),
            };
            let tests = if c.identical {
                format!("none: {}", Comparison::IDENTICAL_TEXT)
            } else if c.identical_training {
                format!("none: {}", Comparison::NONDETERMINISM_TEXT)
            } else {
                c.tests().to_string()
            };
            let spread = c.spread.map_or_else(
                || MISSING.to_string(),
                |s| format!("{:.2} ({} {})", s.variance_ratio, s.test, p_clause(s.p_value)),
            );
            vec![
                c.variant.clone(),
                c.seeds_text(),
                tests,
                delta,
                ci,
                t,
                p,
                c.rank_test_text().unwrap_or_else(|| MISSING.to_string()),
                spread,
                fixed(c.hedges_g, 2),
                fixed(c.cohens_d, 2),
                fixed(c.cliffs_delta, 2),
            ]
        })
        .collect();
    TextTable { header, rows }
}

/// The paired differences of the set's variants that train like the baseline by construction
/// but differ from it; `None` when there are none.
pub fn noise_floor_table(set: &SeedSetAnalysis) -> Option<TextTable> {
    let rows: Vec<Vec<String>> = nondeterministic(set)
        .into_iter()
        .filter_map(|c| {
            let n = c.noise_floor?;
            Some(vec![
                c.variant.clone(),
                format_seeds(&c.paired_seeds),
                n.n_pairs.to_string(),
                n.bit_identical.to_string(),
                signed_points(n.mean),
                fixed(n.sd, 2),
                format!("{:.2}", n.max_abs),
            ])
        })
        .collect();
    let header =
        cells(["variant", "paired seeds", "n pairs", "bit for bit", "mean Δ (points)", "sd of Δ", "max |Δ|"]);
    (!rows.is_empty()).then_some(TextTable { header, rows })
}

/// Most characters of a failure reason a table shows.
pub const REASON_CHARS: usize = 300;

/// A failure reason as one table cell: line breaks and runs of blanks become one space, unsafe
/// characters U+FFFD, and it is cut to [`REASON_CHARS`] characters (`…` marks the cut).
pub fn reason_cell(error: &str) -> String {
    if error.trim().is_empty() {
        return "no reason recorded".to_string();
    }
    let one_line = error.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String =
        one_line.chars().take(REASON_CHARS).map(|c| if is_unsafe_char(c) { '\u{fffd}' } else { c }).collect();
    if one_line.chars().count() > REASON_CHARS {
        out.push('…');
    }
    out
}

/// Failed (or cancelled) jobs with their reasons; `None` when every job is fine.
pub fn failed_jobs_table(attempts: &AttemptSummary) -> Option<TextTable> {
    let rows: Vec<Vec<String>> = attempts
        .failed
        .iter()
        .map(|j| {
            vec![
                j.variant.clone(),
                j.seed.to_string(),
                j.job_id.to_string(),
                j.state.clone(),
                j.attempts.to_string(),
                reason_cell(&j.error),
            ]
        })
        .collect();
    let header = cells(["variant", "seed", "job", "state", "attempts", "reason"]);
    (!rows.is_empty()).then_some(TextTable { header, rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::compare::tests::{seeded, variant};
    use crate::analysis::{FinishedJob, seed_sets};

    #[test]
    fn mean_ci_is_clipped_to_accuracy_range() {
        let accuracy = Measure::default();
        assert_eq!(mean_ci(Some((-3.0, 104.5)), &accuracy), "0.00 – 100.00");
        assert_eq!(mean_ci(None, &accuracy), MISSING);
        assert_eq!(mean_ci(Some((-3.0, 104.5)), &Measure::of("val_loss", false)), "-3.0000 – 104.5000");
    }

    #[test]
    fn a_loss_is_shown_with_four_decimals_and_no_points() {
        let set = &seed_sets::analyse_seed_sets(
            &[
                variant("a", &seeded(&[0.3121, 0.3125, 0.3130])),
                variant("b", &seeded(&[0.3011, 0.3020, 0.3019])),
            ],
            "a",
            &[],
        )[0];
        let loss = Measure::of("val_loss", false);
        assert_eq!(variant_table(set, &loss).rows[0][2], "0.3125");
        assert_eq!(comparison_table(set, &loss).header[3], "Δ mean");
        assert_eq!(comparison_table(set, &loss).rows[0][3], "-0.0109");
        assert_eq!(comparison_table(set, &Measure::default()).header[3], "Δ mean (points)");
    }

    #[test]
    fn identical_rows_say_so_instead_of_a_test() {
        let values = seeded(&[90.0, 90.4, 89.8]);
        let vs = [variant("natural_hardmax", &values), variant("normal_lr1e-3", &values)];
        let set = &seed_sets::analyse_seed_sets(&vs, "normal_lr1e-3", &[])[0];
        let row = &comparison_table(set, &Measure::default()).rows[0];
        assert_eq!(row[2], "none: identical to the baseline seed for seed (by construction, bit for bit)");
        assert_eq!((row[3].as_str(), row[4].as_str()), ("0.00", MISSING));
    }

    #[test]
    fn epoch_table_shows_mean_and_sd_over_seeds() {
        let mut v = variant("a", &seeded(&[90.0, 92.0]));
        let epochs = [(Some(88.0), Some(87.0)), (Some(90.0), None)];
        for (job, (final_epoch, last)) in v.finished.iter_mut().zip(epochs) {
            *job = FinishedJob { final_epoch, last_epochs_mean: last, ..job.clone() };
        }
        let set = &seed_sets::analyse_seed_sets(&[v], "b", &[])[0];
        let table = epoch_table(set, &Measure::default());
        assert_eq!(table.header[4], "mean of last 10 epochs");
        assert_eq!(table.rows[0][1..], ["2", "91.00 ± 1.41", "89.00 ± 1.41", "87.00"]);
    }

    #[test]
    fn noise_floor_table_holds_the_paired_differences_of_identical_training() {
        let base = [89.86, 89.59, 89.85, 89.88, 89.63];
        let vs = [
            variant("natural_hardmax", &seeded(&[89.88, 89.68, 89.57, 89.70, 89.98])),
            variant("multi_softmax", &seeded(&[89.88, 89.59, 89.85, 89.88, 89.63])),
            variant("natural_softmax", &seeded(&[89.41, 89.25, 89.71, 89.74, 89.66])),
            variant("normal_lr1e-3", &seeded(&base)),
            variant("normal_lr1e-2", &seeded(&base)),
        ];
        let like = ["natural_hardmax", "multi_softmax", "normal_lr1e-2"].map(String::from);
        let set = &seed_sets::analyse_seed_sets(&vs, "normal_lr1e-3", &like)[0];
        let table = noise_floor_table(set).unwrap();
        // multi_softmax: seeds 1–4 bit for bit, seed 0 run elsewhere; normal_lr1e-2 (at the
        // baseline's rate here) bit for bit throughout, so it has no row.
        assert_eq!(
            table.rows,
            [
                ["natural_hardmax", "0–4", "5", "0", "+0.00", "0.25", "0.35"],
                ["multi_softmax", "0–4", "5", "4", "+0.00", "0.01", "0.02"]
            ]
        );
        let comparisons = comparison_table(set, &Measure::default());
        assert_eq!(comparisons.rows[0][2], format!("none: {}", Comparison::NONDETERMINISM_TEXT));
        assert_eq!((comparisons.rows[0][3].as_str(), comparisons.rows[0][4].as_str()), ("+0.00", MISSING));
        assert_eq!(comparisons.rows[2][2], "paired t + Wilcoxon signed-rank", "natural_softmax is tested");
        assert!(comparisons.rows[3][2].contains("bit for bit"), "{:?}", comparisons.rows[3]);
        // Without identical training there is no noise floor.
        assert_eq!(noise_floor_table(&seed_sets::analyse_seed_sets(&vs, "normal_lr1e-3", &[])[0]), None);
    }

    #[test]
    fn failure_reasons_are_one_safe_bounded_line() {
        assert_eq!(
            reason_cell("CUDA error:\n  out of memory\u{1b}[2J"),
            "CUDA error: out of memory\u{fffd}[2J"
        );
        assert_eq!(reason_cell(" \n"), "no reason recorded");
        let long = reason_cell(&"x".repeat(REASON_CHARS + 5));
        assert_eq!(long.chars().count(), REASON_CHARS + 1);
        assert!(long.ends_with("x…"));
    }
}
