//! The CSV files: `results.csv` (one row per job, any state) and `epochs.csv` (every stored epoch).
//!
//! Rows follow the variant display order, then seed, then epoch. Accuracies are written as
//! percentages (columns end in `_pct`, four decimals); values a job does not have yet are empty.
//! A report measuring another metric than `val_acc` names its best-value column after it
//! (`best_val_loss`) and, for a metric without a column of its own, adds one to `epochs.csv`.
//! `attempts` is the attempt a job is on, `error` its last failure reason, and an epoch's
//! `attempt` the attempt that stored it (empty when not known). New columns go at the end, so
//! that readers by position keep working.
//! Text cells go through [`csv_text`]: names come from the network and must neither run as a
//! spreadsheet formula nor carry control characters.

use std::borrow::Cow;
use std::path::Path;

use serde::Serialize;

use crate::ReportError;
use crate::input::{EpochRow, JobRow, Measure, ReportInput};

/// Header of `results.csv`.
pub const RESULTS_HEADER: [&str; 14] = [
    "job_id",
    "variant",
    "seed",
    "state",
    "epochs_done",
    "epochs",
    "best_val_acc_pct",
    "best_epoch",
    "final_train_acc_pct",
    "final_val_acc_pct",
    "wall_seconds",
    "worker",
    "attempts",
    "error",
];

/// Header of `epochs.csv`.
pub const EPOCHS_HEADER: [&str; 11] = [
    "job_id",
    "variant",
    "seed",
    "epoch",
    "train_loss",
    "train_acc_pct",
    "val_loss",
    "val_acc_pct",
    "wall_seconds",
    "images_per_sec",
    "attempt",
];

#[derive(Serialize)]
struct ResultRecord<'a> {
    job_id: i64,
    variant: Cow<'a, str>,
    seed: u64,
    state: Cow<'a, str>,
    epochs_done: u32,
    epochs: u32,
    best_value: Option<String>,
    best_epoch: Option<u32>,
    final_train_acc_pct: Option<String>,
    final_val_acc_pct: Option<String>,
    wall_seconds: String,
    worker: Cow<'a, str>,
    attempts: u32,
    error: Cow<'a, str>,
}

#[derive(Serialize)]
struct EpochRecord<'a> {
    job_id: i64,
    variant: Cow<'a, str>,
    seed: u64,
    epoch: u32,
    train_loss: f64,
    train_acc_pct: String,
    val_loss: f64,
    val_acc_pct: String,
    wall_seconds: String,
    images_per_sec: String,
    attempt: Option<u32>,
    /// The measure, where it has no column of its own (else `None`, and no cell).
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

/// True for characters that must not reach a file meant for people or their tools: C0 and C1
/// control characters other than tab and line breaks, and the Unicode bidirectional controls.
pub fn is_unsafe_char(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A text cell made safe for spreadsheets: control characters (line breaks and tabs included)
/// become U+FFFD, and a cell that a spreadsheet would read as a formula (starting with `=`, `+`,
/// `-` or `@`) gets a leading `'`.
pub fn csv_text(text: &str) -> Cow<'_, str> {
    let formula = text.starts_with(['=', '+', '-', '@']);
    if !formula && !text.chars().any(|c| c.is_control() || is_unsafe_char(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 1);
    if formula {
        out.push('\'');
    }
    out.extend(text.chars().map(|c| if c.is_control() || is_unsafe_char(c) { '\u{fffd}' } else { c }));
    Cow::Owned(out)
}

fn pct(fraction: f64) -> String {
    format!("{:.4}", fraction * 100.0)
}

/// The header of `results.csv` for `measure`: the best value's column named after it.
pub fn results_header(measure: &Measure) -> Vec<String> {
    let mut header: Vec<String> = RESULTS_HEADER.iter().map(|c| c.to_string()).collect();
    header[6] = format!("best_{}{}", measure.metric, if measure.percent { "_pct" } else { "" });
    header
}

/// A value of the measure as a cell: a percentage with four decimals, anything else in full.
fn measure_cell(measure: &Measure, value: f64) -> String {
    if measure.percent { pct(value) } else { value.to_string() }
}

/// Whether `epochs.csv` needs a column for the measure (its fixed columns do not hold it).
fn measure_column(measure: &Measure) -> bool {
    !["train_loss", "train_acc", "val_loss", "val_acc"].contains(&measure.metric.as_str())
}

/// Position of a variant in display order (unknown variants last, by name).
fn variant_rank(order: &[String], variant: &str) -> usize {
    order.iter().position(|v| v == variant).unwrap_or(order.len())
}

/// Jobs sorted by display order, seed and id.
pub fn jobs_in_display_order<'a>(input: &'a ReportInput, order: &[String]) -> Vec<&'a JobRow> {
    let mut jobs: Vec<&JobRow> = input.jobs.iter().collect();
    jobs.sort_by(|a, b| {
        (variant_rank(order, &a.variant), &a.variant, a.seed, a.job_id).cmp(&(
            variant_rank(order, &b.variant),
            &b.variant,
            b.seed,
            b.job_id,
        ))
    });
    jobs
}

fn csv_error(path: &Path) -> impl Fn(csv::Error) -> ReportError + '_ {
    move |source| ReportError::Csv { path: path.to_path_buf(), source }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io { path: path.to_path_buf(), source }
}

/// Writes `results.csv`: one row per job.
pub fn write_results_csv(input: &ReportInput, order: &[String], path: &Path) -> Result<(), ReportError> {
    let file = std::fs::File::create(path).map_err(io_error(path))?;
    results_csv(input, order, file).map_err(csv_error(path))
}

/// `results.csv` into any writer (`coordinator export` writes the same table as `jobs.csv`).
pub fn results_csv(
    input: &ReportInput,
    order: &[String],
    out: impl std::io::Write,
) -> Result<(), csv::Error> {
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(out);
    writer.write_record(results_header(&input.measure))?;
    for job in jobs_in_display_order(input, order) {
        let record = ResultRecord {
            job_id: job.job_id,
            variant: csv_text(&job.variant),
            seed: job.seed,
            state: csv_text(&job.state),
            epochs_done: job.epochs_done,
            epochs: job.epochs,
            best_value: job.best_value.map(|v| measure_cell(&input.measure, v)),
            best_epoch: job.best_epoch,
            final_train_acc_pct: job.final_train_acc.map(pct),
            final_val_acc_pct: job.final_val_acc.map(pct),
            wall_seconds: format!("{:.1}", job.wall_seconds),
            worker: csv_text(&job.worker),
            attempts: job.attempts,
            error: csv_text(&job.error),
        };
        writer.serialize(record)?;
    }
    Ok(writer.flush()?)
}

/// Writes `epochs.csv`: every stored epoch.
pub fn write_epochs_csv(input: &ReportInput, order: &[String], path: &Path) -> Result<(), ReportError> {
    let file = std::fs::File::create(path).map_err(io_error(path))?;
    epochs_csv(input, order, file).map_err(csv_error(path))
}

/// `epochs.csv` into any writer (`coordinator export` writes the same table).
pub fn epochs_csv(input: &ReportInput, order: &[String], out: impl std::io::Write) -> Result<(), csv::Error> {
    let mut epochs: Vec<&EpochRow> = input.epochs.iter().collect();
    epochs.sort_by(|a, b| {
        (variant_rank(order, &a.variant), &a.variant, a.seed, a.job_id, a.epoch).cmp(&(
            variant_rank(order, &b.variant),
            &b.variant,
            b.seed,
            b.job_id,
            b.epoch,
        ))
    });
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(out);
    let extra = measure_column(&input.measure);
    let mut header: Vec<&str> = EPOCHS_HEADER.to_vec();
    if extra {
        header.push(&input.measure.metric);
    }
    writer.write_record(&header)?;
    for e in epochs {
        let record = EpochRecord {
            job_id: e.job_id,
            variant: csv_text(&e.variant),
            seed: e.seed,
            epoch: e.epoch,
            train_loss: e.train_loss,
            train_acc_pct: pct(e.train_acc),
            val_loss: e.val_loss,
            val_acc_pct: pct(e.val_acc),
            wall_seconds: format!("{:.2}", e.wall_seconds),
            images_per_sec: format!("{:.1}", e.images_per_sec),
            attempt: (e.attempt > 0).then_some(e.attempt),
            value: extra.then(|| e.value.map_or_else(String::new, |v| v.to_string())),
        };
        writer.serialize(record)?;
    }
    Ok(writer.flush()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_csv(path: &Path) -> Vec<csv::StringRecord> {
        csv::Reader::from_path(path).unwrap().records().map(Result::unwrap).collect()
    }

    #[test]
    fn attempts_errors_and_epoch_attempts_have_their_columns() {
        let job = |job_id, attempts, error: &str| JobRow {
            job_id,
            variant: "natural_softmax".into(),
            seed: job_id as u64,
            state: if error.is_empty() { "succeeded" } else { "failed" }.into(),
            attempts,
            error: error.into(),
            ..JobRow::default()
        };
        let epoch = |job_id, epoch, attempt| EpochRow {
            job_id,
            variant: "natural_softmax".into(),
            seed: job_id as u64,
            epoch,
            attempt,
            ..EpochRow::default()
        };
        let input = ReportInput {
            sweep: "s".into(),
            variants: vec!["natural_softmax".into()],
            baseline_variant: "natural_softmax".into(),
            spec_json: String::new(),
            jobs: vec![job(1, 1, ""), job(2, 3, "=CUDA error:\nout of memory")],
            epochs: vec![epoch(1, 1, 1), epoch(2, 1, 2), epoch(2, 2, 0)],
            learning_rates: Default::default(),
            provenance: Default::default(),
            measure: Default::default(),
        };
        let dir = tempfile::tempdir().unwrap();
        let (results, epochs) = (dir.path().join("results.csv"), dir.path().join("epochs.csv"));
        write_results_csv(&input, &input.variants, &results).unwrap();
        write_epochs_csv(&input, &input.variants, &epochs).unwrap();
        let header = |path: &Path| csv::Reader::from_path(path).unwrap().headers().unwrap().clone();
        assert_eq!(header(&results).iter().skip(12).collect::<Vec<_>>(), ["attempts", "error"]);
        assert_eq!(&header(&epochs)[10], "attempt");
        let rows = read_csv(&results);
        assert_eq!((&rows[0][12], &rows[0][13]), ("1", ""));
        // The reason stays one cell, cannot run as a formula and carries no line break.
        assert_eq!((&rows[1][12], &rows[1][13]), ("3", "'=CUDA error:\u{fffd}out of memory"));
        let attempts: Vec<String> = read_csv(&epochs).iter().map(|r| r[10].to_string()).collect();
        assert_eq!(attempts, ["1", "2", ""], "attempt 0 (not known) is written empty");
    }

    #[test]
    fn csv_cells_cannot_be_formulas_or_carry_control_characters() {
        assert!(matches!(csv_text("gpu-01"), Cow::Borrowed("gpu-01")));
        assert_eq!(csv_text("=HYPERLINK(\"http://x\")"), "'=HYPERLINK(\"http://x\")");
        for prefix in ["+", "-", "@"] {
            assert_eq!(csv_text(&format!("{prefix}1+1")), format!("'{prefix}1+1"));
        }
        assert_eq!(csv_text("a\u{1b}[2Jb\nc\td"), "a\u{fffd}[2Jb\u{fffd}c\u{fffd}d");
        assert_eq!(csv_text("x\u{202e}y"), "x\u{fffd}y");
    }
}
