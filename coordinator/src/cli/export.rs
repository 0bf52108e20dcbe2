//! `coordinator export`: a sweep's jobs and epochs as CSV or JSON, to files or stdout. CSV text
//! cells go through `report::tables::csv_text` (no formulas, no control characters); JSON escapes
//! control characters itself.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::report::fetch_report_input;
use super::{ClientArgs, Format};
use crate::error::Result;

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Sweep to export.
    #[arg(long, env = "SWEEP_SWEEP")]
    pub sweep: String,
    /// Output format.
    #[arg(long, env = "SWEEP_EXPORT_FORMAT", value_enum, default_value = "csv")]
    pub format: Format,
    /// Directory to write `jobs.csv` + `epochs.csv` (or `sweep.json`) into; stdout if absent
    /// (CSV on stdout: the jobs table, a blank line, then the epochs table).
    #[arg(long, env = "SWEEP_EXPORT_OUT")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Export<'a> {
    sweep: &'a str,
    jobs: &'a [report::JobRow],
    epochs: &'a [report::EpochRow],
}

/// The rows with every text cell made safe for spreadsheets.
fn csv_safe(export: &Export<'_>) -> (Vec<report::JobRow>, Vec<report::EpochRow>) {
    let text = |s: &str| report::tables::csv_text(s).into_owned();
    let jobs = export
        .jobs
        .iter()
        .map(|j| report::JobRow {
            variant: text(&j.variant),
            state: text(&j.state),
            worker: text(&j.worker),
            error: text(&j.error),
            ..j.clone()
        })
        .collect();
    let epochs =
        export.epochs.iter().map(|e| report::EpochRow { variant: text(&e.variant), ..e.clone() }).collect();
    (jobs, epochs)
}

fn csv_bytes<T: Serialize>(rows: &[T]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.serialize(row)?;
    }
    w.into_inner().map_err(|e| crate::Error::Format(format!("csv: {e}")))
}

/// Writes the export of `sweep`; returns the files written (empty when writing to stdout).
pub async fn run(args: ExportArgs) -> Result<()> {
    let client = args.client.connect().await?;
    let input = fetch_report_input(client, &args.sweep).await?;
    let export = Export { sweep: &input.sweep, jobs: &input.jobs, epochs: &input.epochs };
    let files = write_export(&export, args.format, args.out.as_deref())?;
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}

fn write_export(export: &Export<'_>, format: Format, out: Option<&Path>) -> Result<Vec<PathBuf>> {
    let outputs: Vec<(&str, Vec<u8>)> = match format {
        Format::Json => vec![("sweep.json", serde_json::to_vec_pretty(export)?)],
        Format::Csv => {
            let (jobs, epochs) = csv_safe(export);
            vec![("jobs.csv", csv_bytes(&jobs)?), ("epochs.csv", csv_bytes(&epochs)?)]
        }
    };
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let mut written = Vec::new();
            for (name, bytes) in outputs {
                let path = dir.join(name);
                std::fs::write(&path, bytes)?;
                written.push(path);
            }
            Ok(written)
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            for (i, (_, bytes)) in outputs.iter().enumerate() {
                if i > 0 {
                    stdout.write_all(b"\n")?;
                }
                stdout.write_all(bytes)?;
            }
            stdout.flush()?;
            Ok(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_csv_neutralises_formulas_and_control_characters() {
        let job = report::JobRow {
            job_id: 1,
            variant: "natural_softmax".into(),
            seed: 0,
            state: "running".into(),
            epochs: 2,
            epochs_done: 1,
            best_val_acc: Some(0.5),
            best_epoch: Some(1),
            final_train_acc: None,
            final_val_acc: None,
            wall_seconds: 1.0,
            worker: "=cmd|' /C calc'!A0\u{1b}[2J".into(),
            attempts: 2,
            error: "@SUM(A1)\u{7}".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let export = Export { sweep: "s", jobs: std::slice::from_ref(&job), epochs: &[] };
        write_export(&export, Format::Csv, Some(dir.path())).unwrap();
        let text = std::fs::read_to_string(dir.path().join("jobs.csv")).unwrap();
        assert!(text.contains("'=cmd|' /C calc'!A0\u{fffd}[2J"), "{text}");
        assert!(!text.chars().any(|c| c == '\u{1b}'));
        assert!(text.contains("'@SUM(A1)\u{fffd}"), "a failure reason is neutralised too: {text}");
    }
}
