//! Learning curves: the measure (validation accuracy unless the sweep ranks by another metric) per
//! epoch for each variant, mean over the finished seeds, solid, and its training counterpart
//! (training accuracy or loss, where there is one) dotted, each with a ±1 sample-sd band across
//! seeds; running jobs' curves are drawn thin and faint. A second panel zooms on the measure's
//! curves over the second half of the epochs (when there are at least four), where the variants'
//! differences are visible.
//!
//! In the SVG each variant's validation mean is exactly one `<polyline>` per panel in the variant
//! colour with stroke width [`VAL_MEAN_STROKE_WIDTH`] (legend swatches are filled squares), which
//! tests count.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Figure, colour_index, font, plot_error, variant_colour};
use crate::ReportError;
use crate::input::{Measure, ReportInput};
use crate::stats;

/// Stroke width of a variant's validation-mean line (unique to those lines in the SVG).
pub const VAL_MEAN_STROKE_WIDTH: u32 = 3;
const TRAIN_MEAN_STROKE_WIDTH: u32 = 2;

/// Mean and sample sd across seeds at one epoch (as shown: accuracies in %); sd is 0 for a single
/// seed. `train_*` are 0 without a training counterpart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochMean {
    pub epoch: u32,
    pub seeds: usize,
    pub train_mean: f64,
    pub train_sd: f64,
    pub val_mean: f64,
    pub val_sd: f64,
}

/// One variant's curves.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveVariant {
    pub name: String,
    /// Colour slot (see [`super::colour_index`]).
    pub colour: usize,
    /// Number of finished jobs averaged.
    pub finished_jobs: usize,
    pub means: Vec<EpochMean>,
    /// The measure per epoch of each running job.
    pub running: Vec<Vec<(u32, f64)>>,
}

/// Data of the curves figure.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvesFigure {
    pub sweep: String,
    pub variants: Vec<CurveVariant>,
    pub measure: Measure,
    /// Every finished job's epochs have the measure's training counterpart: its curves are drawn.
    pub training: bool,
}

fn epoch_means(epochs: &[(u32, f64, f64)]) -> Vec<EpochMean> {
    let mut by_epoch: BTreeMap<u32, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for &(epoch, train, val) in epochs {
        let entry = by_epoch.entry(epoch).or_default();
        entry.0.push(train);
        entry.1.push(val);
    }
    by_epoch
        .into_iter()
        .map(|(epoch, (train, val))| EpochMean {
            epoch,
            seeds: val.len(),
            train_mean: stats::mean(&train).unwrap_or(0.0),
            train_sd: stats::sample_std(&train).unwrap_or(0.0),
            val_mean: stats::mean(&val).unwrap_or(0.0),
            val_sd: stats::sample_std(&val).unwrap_or(0.0),
        })
        .collect()
}

impl CurvesFigure {
    /// Curves of the given variants (display order) from the input's succeeded and running jobs.
    pub fn from_input(input: &ReportInput, variant_names: &[String]) -> Self {
        let state_of = |job_id: i64| input.jobs.iter().find(|j| j.job_id == job_id).map(|j| j.state.as_str());
        let measure = &input.measure;
        let finished_rows = || input.epochs.iter().filter(|e| state_of(e.job_id) == Some("succeeded"));
        let training = finished_rows().all(|e| measure.training(e).is_some());
        let variants = variant_names
            .iter()
            .map(|name| {
                let mut finished = Vec::new();
                let mut running: BTreeMap<i64, Vec<(u32, f64)>> = BTreeMap::new();
                for e in input.epochs.iter().filter(|e| &e.variant == name) {
                    match state_of(e.job_id) {
                        Some("succeeded") => {
                            let train = measure.training(e).map_or(0.0, |t| measure.show(t));
                            finished.push((e.epoch, train, measure.show(e.measured())))
                        }
                        Some("running") => {
                            running.entry(e.job_id).or_default().push((e.epoch, measure.show(e.measured())))
                        }
                        _ => {}
                    }
                }
                let finished_jobs =
                    input.jobs.iter().filter(|j| &j.variant == name && j.state == "succeeded").count();
                let running = running
                    .into_values()
                    .map(|mut points| {
                        points.sort_by_key(|(epoch, _)| *epoch);
                        points
                    })
                    .collect();
                CurveVariant {
                    name: name.clone(),
                    colour: colour_index(name, variant_names),
                    finished_jobs,
                    means: epoch_means(&finished),
                    running,
                }
            })
            .collect();
        Self { sweep: input.sweep.clone(), variants, measure: measure.clone(), training }
    }

    fn is_empty(&self) -> bool {
        self.variants.iter().all(|v| v.means.is_empty() && v.running.is_empty())
    }

    fn last_epoch(&self) -> u32 {
        let means = self.variants.iter().flat_map(|v| v.means.iter().map(|m| m.epoch));
        let running = self.variants.iter().flat_map(|v| v.running.iter().flatten().map(|(epoch, _)| *epoch));
        means.chain(running).max().unwrap_or(1)
    }

    /// The zoomed validation panel starts here, if the figure has one: the second half of the
    /// epochs, shown when at least four epochs of finished jobs exist.
    fn zoom_start(&self) -> Option<u32> {
        let last = self.variants.iter().flat_map(|v| v.means.iter().map(|m| m.epoch)).max()?;
        (last >= 4).then_some(last / 2 + 1)
    }

    /// (x range, y range) of a panel showing epochs from `first_epoch`, zoomed to the data.
    fn ranges(&self, panel: Panel) -> ((f64, f64), (f64, f64)) {
        let mut y = (f64::INFINITY, f64::NEG_INFINITY);
        let mut include = |lo: f64, hi: f64| y = (y.0.min(lo), y.1.max(hi));
        for v in &self.variants {
            for m in v.means.iter().filter(|m| m.epoch >= panel.first_epoch) {
                include(m.val_mean - m.val_sd, m.val_mean + m.val_sd);
                if !panel.validation_only && self.training {
                    include(m.train_mean - m.train_sd, m.train_mean + m.train_sd);
                }
            }
            if !panel.validation_only {
                v.running.iter().flatten().for_each(|&(_, acc)| include(acc, acc));
            }
        }
        if !y.0.is_finite() {
            y = self.measure.empty_range();
        }
        let floor = if self.measure.percent { 0.25 } else { (y.0.abs().max(y.1.abs()) * 0.01).max(1e-9) };
        let margin = ((y.1 - y.0) * 0.05).max(floor);
        let (min, max) = self.measure.bounds();
        let last = self.last_epoch();
        let x = if last <= panel.first_epoch {
            (panel.first_epoch as f64 - 0.5, last as f64 + 0.5)
        } else {
            (panel.first_epoch as f64, last as f64)
        };
        (x, ((y.0 - margin).max(min), (y.1 + margin).min(max)))
    }

    fn draw_panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        panel: Panel,
    ) -> Result<(), ReportError> {
        let err = plot_error(Self::NAME);
        let ((x_lo, x_hi), (y_lo, y_hi)) = self.ranges(panel);
        let measure = &self.measure;
        let shown = if self.training { "validation" } else { measure.label.as_str() };
        let caption = if panel.validation_only {
            format!("{shown} only, epochs {}–{} (zoom)", panel.first_epoch, self.last_epoch())
        } else if self.training {
            "all epochs: validation solid, training dotted".to_string()
        } else {
            format!("all epochs: {}", measure.label)
        };
        let y_desc = match (panel.validation_only, self.training) {
            (false, true) => format!("{}{}", measure.family(), measure.unit()),
            _ => format!("{}{}", measure.label, measure.unit()),
        };
        let decimals = super::axis_decimals(y_hi - y_lo);
        let mut chart = ChartBuilder::on(area)
            .caption(caption, font(16.0))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_desc)
            .x_labels(((x_hi - x_lo) as usize + 1).clamp(2, 11))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.decimals$}"))
            .label_style(font(14.0))
            .axis_desc_style(font(15.0))
            .light_line_style(BLACK.mix(0.04))
            .draw()
            .map_err(&err)?;

        for variant in &self.variants {
            let colour = variant_colour(variant.colour);
            let means: Vec<&EpochMean> =
                variant.means.iter().filter(|m| m.epoch >= panel.first_epoch).collect();
            let x = |m: &EpochMean| m.epoch as f64;
            if !means.is_empty() {
                let val_band = band(means.iter().map(|m| (x(m), m.val_mean, m.val_sd)));
                chart.draw_series([Polygon::new(val_band, colour.mix(0.18).filled())]).map_err(&err)?;
                if !panel.validation_only && self.training {
                    let train_band = band(means.iter().map(|m| (x(m), m.train_mean, m.train_sd)));
                    chart.draw_series([Polygon::new(train_band, colour.mix(0.08).filled())]).map_err(&err)?;
                    chart
                        .draw_series(DashedLineSeries::new(
                            means.iter().map(|m| (x(m), m.train_mean)),
                            3,
                            5,
                            colour.stroke_width(TRAIN_MEAN_STROKE_WIDTH),
                        ))
                        .map_err(&err)?;
                }
                chart
                    .draw_series(LineSeries::new(
                        means.iter().map(|m| (x(m), m.val_mean)),
                        colour.stroke_width(VAL_MEAN_STROKE_WIDTH),
                    ))
                    .map_err(&err)?;
            }
            if panel.validation_only {
                continue;
            }
            for job in &variant.running {
                chart
                    .draw_series(LineSeries::new(
                        job.iter().map(|&(epoch, acc)| (epoch as f64, acc)),
                        colour.mix(0.45).stroke_width(1),
                    ))
                    .map_err(&err)?;
            }
            let label = format!("{} (n={})", variant.name, variant.finished_jobs);
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .map_err(&err)?
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], colour.filled()));
        }
        if panel.validation_only {
            return Ok(());
        }
        let (mean_label, running_label) = if self.training {
            ("validation mean (solid)".to_string(), "running job, validation (thin)".to_string())
        } else {
            (format!("{} mean (solid)", measure.label), format!("running job, {} (thin)", measure.label))
        };
        let key: [(&str, ShapeStyle, bool); 4] = [
            (&mean_label, BLACK.stroke_width(VAL_MEAN_STROKE_WIDTH), false),
            ("training mean (dotted)", BLACK.stroke_width(TRAIN_MEAN_STROKE_WIDTH), true),
            ("band: mean ± 1 sd across seeds", BLACK.mix(0.2).stroke_width(10), false),
            (&running_label, BLACK.mix(0.45).stroke_width(1), false),
        ];
        let any_running = self.variants.iter().any(|v| !v.running.is_empty());
        for (label, style, dotted) in key {
            if (label.starts_with("running") && !any_running) || (dotted && !self.training) {
                continue;
            }
            let label = label.to_owned();
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .map_err(&err)?
                .label(label)
                .legend(move |(x, y)| {
                    let first: Vec<(i32, i32)> =
                        if dotted { vec![(x, y), (x + 5, y)] } else { vec![(x, y), (x + 18, y)] };
                    let second = if dotted { vec![(x + 10, y), (x + 15, y)] } else { Vec::new() };
                    EmptyElement::at((0, 0))
                        + PathElement::new(first, style)
                        + PathElement::new(second, style)
                });
        }
        chart
            .configure_series_labels()
            // Away from the curves: they rise towards a maximum and fall towards a minimum.
            .position(if measure.maximize {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            })
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(font(13.0))
            .draw()
            .map_err(&err)?;
        Ok(())
    }
}

/// Which part of the data a panel shows.
#[derive(Debug, Clone, Copy)]
struct Panel {
    first_epoch: u32,
    validation_only: bool,
}

fn band(points: impl Iterator<Item = (f64, f64, f64)> + Clone) -> Vec<(f64, f64)> {
    let upper = points.clone().map(|(x, mean, sd)| (x, mean + sd));
    let lower: Vec<(f64, f64)> = points.map(|(x, mean, sd)| (x, mean - sd)).collect();
    upper.chain(lower.into_iter().rev()).collect()
}

impl Figure for CurvesFigure {
    const NAME: &'static str = "curves";

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), ReportError> {
        let err = plot_error(Self::NAME);
        root.fill(&WHITE).map_err(&err)?;
        let what = if self.training { self.measure.family() } else { &self.measure.label };
        let title = if self.is_empty() {
            format!("{}: {what} per epoch (no epochs stored yet)", self.sweep)
        } else if self.variants.iter().all(|v| v.means.is_empty()) {
            format!("{}: {what} per epoch (no finished jobs yet; running jobs only)", self.sweep)
        } else {
            format!("{}: {what} per epoch (mean over finished seeds, band = ±1 sd)", self.sweep)
        };
        let body = root.titled(&title, font(22.0)).map_err(&err)?;
        let full = Panel { first_epoch: 1, validation_only: false };
        match self.zoom_start() {
            Some(first_epoch) => {
                let (left, right) = body.split_horizontally(body.dim_in_pixel().0 * 58 / 100);
                self.draw_panel(&left, full)?;
                self.draw_panel(&right, Panel { first_epoch, validation_only: true })?;
            }
            None => self.draw_panel(&body, full)?,
        }
        Ok(())
    }
}
