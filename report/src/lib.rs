//! Turns one sweep's jobs and epochs into the experiment's report directory: box plots of best
//! validation accuracy, learning curves, per-variant statistics with tests against the baseline,
//! CSV files and one self-contained `index.html`.
//!
//! The crate knows nothing of gRPC or databases: callers fill a [`ReportInput`] and call
//! [`write_report`]. Statistics and box plots use succeeded jobs only; running jobs' best-so-far
//! values are shown separately (see [`analysis`]).

pub mod analysis;
pub mod html;
pub mod input;
pub mod plots;
pub mod stats;
pub mod summary;
pub mod tables;

use std::path::{Path, PathBuf};

pub use input::{EpochRow, JobRow, Provenance, ReportInput};

use plots::boxplot::BoxPlotFigure;
use plots::curves::CurvesFigure;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("drawing {0}")]
    Plot(String),
    #[error("writing CSV {path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    /// The input names no variant and has no job: there is nothing to report on.
    #[error("report input has no variants and no jobs")]
    EmptyInput,
}

/// Paths of everything [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    pub dir: PathBuf,
    pub boxplot_svg: PathBuf,
    pub boxplot_png: PathBuf,
    pub curves_svg: PathBuf,
    pub curves_png: PathBuf,
    pub results_csv: PathBuf,
    pub epochs_csv: PathBuf,
    pub summary_md: PathBuf,
    pub index_html: PathBuf,
}

impl ReportFiles {
    fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            boxplot_svg: dir.join("boxplot.svg"),
            boxplot_png: dir.join("boxplot.png"),
            curves_svg: dir.join("curves.svg"),
            curves_png: dir.join("curves.png"),
            results_csv: dir.join("results.csv"),
            epochs_csv: dir.join("epochs.csv"),
            summary_md: dir.join("summary.md"),
            index_html: dir.join("index.html"),
        }
    }

    /// Every written file (not the directory).
    pub fn all(&self) -> [&Path; 8] {
        [
            &self.boxplot_svg,
            &self.boxplot_png,
            &self.curves_svg,
            &self.curves_png,
            &self.results_csv,
            &self.epochs_csv,
            &self.summary_md,
            &self.index_html,
        ]
    }
}

fn write_text(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(|source| ReportError::Io { path: path.to_path_buf(), source })
}

fn read_text(path: &Path) -> Result<String, ReportError> {
    std::fs::read_to_string(path).map_err(|source| ReportError::Io { path: path.to_path_buf(), source })
}

/// Writes the whole report into `out_dir` (created if needed) and returns the written paths.
///
/// A sweep without finished jobs still gets every file, saying "no finished jobs yet"; only an
/// input with neither variants nor jobs is an error ([`ReportError::EmptyInput`]).
pub fn write_report(input: &ReportInput, out_dir: &Path) -> Result<ReportFiles, ReportError> {
    if input.variants.is_empty() && input.jobs.is_empty() {
        return Err(ReportError::EmptyInput);
    }
    std::fs::create_dir_all(out_dir)
        .map_err(|source| ReportError::Io { path: out_dir.to_path_buf(), source })?;
    let files = ReportFiles::in_dir(out_dir);
    let analysis = analysis::analyse(input);
    let order: Vec<String> = analysis.variants.iter().map(|v| v.name.clone()).collect();

    let boxplot = BoxPlotFigure::from_analysis(&input.sweep, &analysis);
    plots::render_svg_and_png(&boxplot, &files.boxplot_svg, &files.boxplot_png)?;
    let curves = CurvesFigure::from_input(input, &order);
    plots::render_svg_and_png(&curves, &files.curves_svg, &files.curves_png)?;

    tables::write_results_csv(input, &order, &files.results_csv)?;
    tables::write_epochs_csv(input, &order, &files.epochs_csv)?;
    write_text(&files.summary_md, &summary::render_markdown(input, &analysis))?;
    let html =
        html::render_html(input, &analysis, &read_text(&files.boxplot_svg)?, &read_text(&files.curves_svg)?);
    write_text(&files.index_html, &html)?;
    Ok(files)
}
