//! Turns one sweep's jobs and epochs into the experiment's report directory: box plots of best
//! validation accuracy (a second one for the extended seed set of an unbalanced sweep), learning
//! curves (static and an animated GIF), per-variant statistics with paired or unpaired tests
//! against the baseline, CSV files and one self-contained `index.html`.
//!
//! The crate knows nothing of gRPC or databases: callers fill a [`ReportInput`] and call
//! [`write_report`]. Statistics and box plots use succeeded jobs only; running jobs' best-so-far
//! values are shown separately (see [`analysis`]).

pub mod analysis;
pub mod construction;
pub mod html;
pub mod input;
pub mod plots;
pub mod stats;
pub mod summary;
pub mod tables;

use std::path::{Path, PathBuf};

pub use input::{EpochRow, JobRow, Measure, Provenance, ReportInput};

use plots::animation::CurvesAnimation;
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
    /// Box plot of the main (balanced) seed set.
    pub boxplot_svg: PathBuf,
    pub boxplot_png: PathBuf,
    /// Box plot of the extended seed set; `None` for a balanced sweep (nothing written).
    pub boxplot_extended_svg: Option<PathBuf>,
    pub boxplot_extended_png: Option<PathBuf>,
    pub curves_svg: PathBuf,
    pub curves_png: PathBuf,
    /// Animated learning curves of every run.
    pub curves_gif: PathBuf,
    pub results_csv: PathBuf,
    pub epochs_csv: PathBuf,
    pub summary_md: PathBuf,
    pub index_html: PathBuf,
}

impl ReportFiles {
    fn in_dir(dir: &Path, extended: bool) -> Self {
        Self {
            dir: dir.to_path_buf(),
            boxplot_svg: dir.join("boxplot.svg"),
            boxplot_png: dir.join("boxplot.png"),
            boxplot_extended_svg: extended.then(|| dir.join(EXTENDED_SVG)),
            boxplot_extended_png: extended.then(|| dir.join(EXTENDED_PNG)),
            curves_svg: dir.join("curves.svg"),
            curves_png: dir.join("curves.png"),
            curves_gif: dir.join("curves.gif"),
            results_csv: dir.join("results.csv"),
            epochs_csv: dir.join("epochs.csv"),
            summary_md: dir.join("summary.md"),
            index_html: dir.join("index.html"),
        }
    }

    /// Every written file (not the directory); the extended box plot only when there is one.
    pub fn all(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> = vec![&self.boxplot_svg, &self.boxplot_png];
        files.extend(self.boxplot_extended_svg.as_deref());
        files.extend(self.boxplot_extended_png.as_deref());
        files.extend([
            self.curves_svg.as_path(),
            &self.curves_png,
            &self.curves_gif,
            &self.results_csv,
            &self.epochs_csv,
            &self.summary_md,
            &self.index_html,
        ]);
        files
    }
}

const EXTENDED_SVG: &str = "boxplot_extended.svg";
const EXTENDED_PNG: &str = "boxplot_extended.png";

fn write_text(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(|source| ReportError::Io { path: path.to_path_buf(), source })
}

fn read_text(path: &Path) -> Result<String, ReportError> {
    std::fs::read_to_string(path).map_err(|source| ReportError::Io { path: path.to_path_buf(), source })
}

/// The report's figures as SVG text, for a page that redraws them as a sweep runs: the box plot
/// of the main seed set (and of the extended set, if any; running jobs as best-so-far crosses)
/// and the learning curves.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveFigures {
    pub boxplot_svg: String,
    pub boxplot_extended_svg: Option<String>,
    pub curves_svg: String,
}

/// Draws [`LiveFigures`] for `input` (nothing is written to disk).
pub fn live_figures(input: &ReportInput) -> Result<LiveFigures, ReportError> {
    let analysis = analysis::analyse(input);
    let order: Vec<String> = analysis.variants.iter().map(|v| v.name.clone()).collect();
    let baseline = &input.baseline_variant;
    let boxplot =
        BoxPlotFigure::from_seed_set(&input.sweep, analysis.main_set(), &order, baseline, &input.measure);
    let boxplot_extended_svg = analysis
        .extended_set()
        .map(|set| {
            plots::render_svg(&BoxPlotFigure::from_seed_set(
                &input.sweep,
                set,
                &order,
                baseline,
                &input.measure,
            ))
        })
        .transpose()?;
    Ok(LiveFigures {
        boxplot_svg: plots::render_svg(&boxplot)?,
        boxplot_extended_svg,
        curves_svg: plots::render_svg(&CurvesFigure::from_input(input, &order))?,
    })
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
    let analysis = analysis::analyse(input);
    let files = ReportFiles::in_dir(out_dir, analysis.extended_set().is_some());
    let order: Vec<String> = analysis.variants.iter().map(|v| v.name.clone()).collect();
    let baseline = &input.baseline_variant;

    let boxplot =
        BoxPlotFigure::from_seed_set(&input.sweep, analysis.main_set(), &order, baseline, &input.measure);
    plots::render_svg_and_png(&boxplot, &files.boxplot_svg, &files.boxplot_png)?;
    let mut extended_svg = None;
    match (analysis.extended_set(), &files.boxplot_extended_svg, &files.boxplot_extended_png) {
        (Some(set), Some(svg), Some(png)) => {
            let figure = BoxPlotFigure::from_seed_set(&input.sweep, set, &order, baseline, &input.measure);
            plots::render_svg_and_png(&figure, svg, png)?;
            extended_svg = Some(read_text(svg)?);
        }
        // A report rewritten into the same directory must not keep a stale extended box plot.
        _ => {
            [EXTENDED_SVG, EXTENDED_PNG].iter().try_for_each(|name| remove_if_present(&out_dir.join(name)))?
        }
    }
    let curves = CurvesFigure::from_input(input, &order);
    plots::render_svg_and_png(&curves, &files.curves_svg, &files.curves_png)?;
    CurvesAnimation::from_input(input, &order, &analysis.identical_to_baseline(), baseline)
        .write_gif(&files.curves_gif)?;

    tables::write_results_csv(input, &order, &files.results_csv)?;
    tables::write_epochs_csv(input, &order, &files.epochs_csv)?;
    write_text(&files.summary_md, &summary::render_markdown(input, &analysis))?;
    let figures = html::Figures {
        boxplot_svg: read_text(&files.boxplot_svg)?,
        boxplot_extended_svg: extended_svg,
        curves_svg: read_text(&files.curves_svg)?,
    };
    write_text(&files.index_html, &html::render_html(input, &analysis, &figures))?;
    Ok(files)
}

fn remove_if_present(path: &Path) -> Result<(), ReportError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ReportError::Io { path: path.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}
