//! A report on a sweep ranked by another metric than validation accuracy: the figures, tables
//! and CSV files name the metric, compare its best value in its own direction without
//! percentages or chance lines, and leave the experiment's accuracy claims out.

mod common;

use std::path::Path;

use report::{Measure, ReportInput, write_report};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn a_loss_is_compared_at_its_lowest_without_points_or_claims() {
    let input = common::ranked_by_loss();
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&input, dir.path()).unwrap();

    let summary = read(&files.summary_md);
    assert!(summary.contains("### Lowest validation loss per variant"), "{summary}");
    assert!(summary.contains("lower is better"));
    assert!(summary.contains("Δ = variant − baseline (negative: the variant is lower, better)"));
    assert!(summary.contains(
        "The experiment's claims are about validation accuracy; this report measures the validation loss"
    ));
    assert!(!summary.contains("Natural SoftMax beats Normal"), "no accuracy claim is judged");
    assert!(!summary.contains("(%)") && !summary.contains("chance (10 %)"));
    // The baseline's mean lowest loss, four decimals, as in the table.
    let base: Vec<f64> =
        input.jobs.iter().filter(|j| j.variant == "normal_lr1e-3").filter_map(|j| j.best_value).collect();
    let mean = base.iter().sum::<f64>() / base.len() as f64;
    assert!(summary.contains(&format!("| normal_lr1e-3 | 5 | {mean:.4} |")), "{summary}");

    let boxplot = read(&files.boxplot_svg);
    assert!(boxplot.contains("lowest validation loss per variant") && !boxplot.contains("chance"));
    let curves = read(&files.curves_svg);
    assert!(curves.contains("loss per epoch") && curves.contains("training mean (dotted)"));
    assert!(!curves.contains("accuracy"));

    let results = read(&files.results_csv);
    let header: Vec<&str> = results.lines().next().unwrap().split(',').collect();
    assert_eq!(header[6], "best_val_loss");
    let first = input.jobs.iter().find(|j| j.job_id == 1).unwrap();
    assert!(results.contains(&first.best_value.unwrap().to_string()), "raw, not × 100");
    let epochs = read(&files.epochs_csv);
    assert!(epochs.lines().next().unwrap().ends_with(",attempt"), "val_loss has its column already");
}

#[test]
fn a_metric_of_the_sweeps_own_gets_a_column_and_no_training_curve() {
    let input = common::ranked_by_top5();
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&input, dir.path()).unwrap();
    let summary = read(&files.summary_md);
    assert!(summary.contains("### Best top5 per variant"), "{summary}");
    assert!(summary.contains("higher is better"));
    let curves = read(&files.curves_svg);
    assert!(curves.contains("top5 per epoch") && curves.contains("top5 mean (solid)"));
    assert!(!curves.contains("training mean"), "no training counterpart to draw");
    let epochs = read(&files.epochs_csv);
    let mut lines = epochs.lines();
    assert!(lines.next().unwrap().ends_with(",attempt,top5"));
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let value: f64 = row.last().unwrap().parse().unwrap();
    assert!((0.5..=1.0).contains(&value), "{row:?}");
    let results = read(&files.results_csv);
    assert_eq!(results.lines().next().unwrap().split(',').nth(6), Some("best_top5"));
}

#[test]
fn reports_written_before_measures_read_as_validation_accuracy() {
    let mut json: serde_json::Value = serde_json::to_value(common::finished_sweep(2, 2)).unwrap();
    json.as_object_mut().unwrap().remove("measure");
    for job in json["jobs"].as_array_mut().unwrap() {
        let best = job.as_object_mut().unwrap().remove("best_value").unwrap();
        job["best_val_acc"] = best;
    }
    let input: ReportInput = serde_json::from_value(json).unwrap();
    assert_eq!(input.measure, Measure::default());
    assert!(input.measure.is_validation_accuracy());
    assert!(input.jobs.iter().all(|j| j.best_value.is_some()));
}
