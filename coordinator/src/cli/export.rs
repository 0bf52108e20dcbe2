//! `coordinator export`: a sweep's jobs and epochs as CSV or JSON, to files or stdout.

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
        Format::Csv => vec![("jobs.csv", csv_bytes(export.jobs)?), ("epochs.csv", csv_bytes(export.epochs)?)],
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
