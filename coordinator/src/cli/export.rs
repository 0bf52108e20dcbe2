//! `coordinator export`: a sweep's jobs and epochs as CSV or JSON, to files or stdout. A built-in
//! sweep's CSV tables are the report's `results.csv` and `epochs.csv` (same columns, order and
//! units); a command sweep's have a column per parameter and per metric. Text cells carry no
//! formulas or control characters; JSON escapes control characters itself.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::{ClientArgs, Format};
use crate::client::metrics_export::{read_metrics_export, write_csv};
use crate::client::report_input::read_report_input;
use crate::error::Result;
use sweep_proto::pb;

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

/// Writes the export of `sweep`; returns the files written (empty when writing to stdout).
pub async fn run(args: ExportArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let summary = client.get_sweep(pb::GetSweepRequest { sweep: args.sweep.clone() }).await?.into_inner();
    let files = if summary.spec.as_ref().is_some_and(|s| s.command.is_some()) {
        let export = read_metrics_export(&mut client, &args.sweep, summary).await?;
        let outputs = match args.format {
            Format::Json => vec![("sweep.json", serde_json::to_vec_pretty(&export)?)],
            Format::Csv => {
                let (jobs, epochs) =
                    write_csv(&export).map_err(|e| crate::Error::Format(format!("csv: {e}")))?;
                vec![("jobs.csv", jobs), ("epochs.csv", epochs)]
            }
        };
        write_outputs(outputs, args.out.as_deref())?
    } else {
        let input = read_report_input(&mut client, &args.sweep, summary).await?;
        write_export(&input, args.format, args.out.as_deref())?
    };
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}

fn write_export(input: &report::ReportInput, format: Format, out: Option<&Path>) -> Result<Vec<PathBuf>> {
    let outputs: Vec<(&str, Vec<u8>)> = match format {
        Format::Json => {
            let export = Export { sweep: &input.sweep, jobs: &input.jobs, epochs: &input.epochs };
            vec![("sweep.json", serde_json::to_vec_pretty(&export)?)]
        }
        Format::Csv => {
            let csv = |e: csv::Error| crate::Error::Format(format!("csv: {e}"));
            let (mut jobs, mut epochs) = (Vec::new(), Vec::new());
            report::tables::results_csv(input, &input.variants, &mut jobs).map_err(csv)?;
            report::tables::epochs_csv(input, &input.variants, &mut epochs).map_err(csv)?;
            vec![("jobs.csv", jobs), ("epochs.csv", epochs)]
        }
    };
    write_outputs(outputs, out)
}

/// Writes each (file name, bytes) into `out`, or all to stdout (a blank line between them).
fn write_outputs(outputs: Vec<(&str, Vec<u8>)>, out: Option<&Path>) -> Result<Vec<PathBuf>> {
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
            best_value: Some(0.5),
            best_epoch: Some(1),
            final_train_acc: None,
            final_val_acc: None,
            wall_seconds: 1.0,
            worker: "=cmd|' /C calc'!A0\u{1b}[2J".into(),
            attempts: 2,
            error: "@SUM(A1)\u{7}".into(),
        };
        let input = report::ReportInput {
            sweep: "s".into(),
            variants: vec!["natural_softmax".into()],
            baseline_variant: "natural_softmax".into(),
            spec_json: String::new(),
            jobs: vec![job],
            epochs: vec![],
            learning_rates: Default::default(),
            provenance: Default::default(),
            measure: Default::default(),
        };
        let dir = tempfile::tempdir().unwrap();
        write_export(&input, Format::Csv, Some(dir.path())).unwrap();
        let text = std::fs::read_to_string(dir.path().join("jobs.csv")).unwrap();
        let header = text.lines().next().unwrap();
        assert_eq!(header, report::tables::RESULTS_HEADER.join(","), "jobs.csv is the report's results.csv");
        assert!(text.contains(",50.0000,"), "accuracy in percent: {text}");
        assert!(text.contains("'=cmd|' /C calc'!A0\u{fffd}[2J"), "{text}");
        assert!(!text.chars().any(|c| c == '\u{1b}'));
        assert!(text.contains("'@SUM(A1)\u{fffd}"), "a failure reason is neutralised too: {text}");
    }
}
