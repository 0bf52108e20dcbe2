//! The experiment's main figure: best validation accuracy per variant as one box per variant
//! (quartiles, median, Tukey whiskers at 1.5 IQR) with every finished job as a jittered dot and
//! running jobs' best-so-far as crosses.
//!
//! In the SVG each variant's box is exactly one `<rect>` filled with the variant colour at opacity
//! [`BOX_FILL_OPACITY`], which tests use to count boxes.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Figure, font, plot_error, variant_colour};
use crate::ReportError;
use crate::analysis::Analysis;
use crate::stats;

/// Fill opacity of a box (unique to boxes in the SVG).
pub const BOX_FILL_OPACITY: f64 = 0.3;
const BOX_HALF_WIDTH: f64 = 0.28;
const CAP_HALF_WIDTH: f64 = 0.12;
const JITTER_HALF_WIDTH: f64 = 0.18;

/// One box of the figure (accuracies in %).
#[derive(Debug, Clone, PartialEq)]
pub struct BoxPlotVariant {
    pub name: String,
    pub finished: Vec<f64>,
    pub running: Vec<f64>,
}

/// Data of the box plot.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxPlotFigure {
    pub sweep: String,
    pub variants: Vec<BoxPlotVariant>,
}

impl BoxPlotFigure {
    pub fn from_analysis(sweep: &str, analysis: &Analysis) -> Self {
        let variants = analysis
            .variants
            .iter()
            .map(|v| BoxPlotVariant {
                name: v.name.clone(),
                finished: v.finished_best.clone(),
                running: v.running_best.iter().map(|(_, acc)| *acc).collect(),
            })
            .collect();
        Self { sweep: sweep.to_string(), variants }
    }

    fn all_values(&self) -> impl Iterator<Item = f64> + '_ {
        self.variants.iter().flat_map(|v| v.finished.iter().chain(&v.running).copied())
    }

    /// Y range zoomed to the data with a margin, clamped to 0–100 %.
    fn y_range(&self) -> (f64, f64) {
        let (lo, hi) =
            self.all_values().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
        if !lo.is_finite() {
            return (0.0, 100.0);
        }
        // Extra room below the data keeps the legend (lower right) clear of the points.
        let range = (hi - lo).max(1.0);
        ((lo - 0.4 * range).max(0.0), (hi + 0.08 * range).min(100.0))
    }

    fn title(&self) -> String {
        if self.variants.iter().all(|v| v.finished.is_empty()) {
            return format!("{}: best validation accuracy per variant (no finished jobs yet)", self.sweep);
        }
        let ns: Vec<String> = self.variants.iter().map(|v| v.finished.len().to_string()).collect();
        format!("{}: best validation accuracy per variant (n = {})", self.sweep, ns.join(" / "))
    }
}

/// Horizontal jitter of the `k`-th point of a box: a golden-ratio sequence, deterministic.
fn jitter(k: usize) -> f64 {
    let fraction = ((k as f64 + 1.0) * 0.618_033_988_75).fract();
    (fraction - 0.5) * 2.0 * JITTER_HALF_WIDTH
}

impl Figure for BoxPlotFigure {
    const NAME: &'static str = "boxplot";

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), ReportError> {
        let err = plot_error(Self::NAME);
        root.fill(&WHITE).map_err(&err)?;
        let count = self.variants.len().max(1);
        let (y_lo, y_hi) = self.y_range();
        let x_range = -0.5..count as f64 - 0.5;
        let mut chart = ChartBuilder::on(root)
            .caption(self.title(), font(22.0))
            .margin(18)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range, y_lo..y_hi)
            .map_err(&err)?;
        let labels: Vec<String> =
            self.variants.iter().map(|v| format!("{} (n={})", v.name, v.finished.len())).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&|y| format!("{y:.1}"))
            .x_desc("variant (n = finished jobs)")
            .y_desc("best validation accuracy (%)")
            .label_style(font(15.0))
            .axis_desc_style(font(17.0))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(&err)?;

        for (index, variant) in self.variants.iter().enumerate() {
            let colour = variant_colour(index);
            let x = index as f64;
            let (label_x, label_y) = chart.backend_coord(&(x, y_lo));
            root.draw(&Text::new(
                labels[index].clone(),
                (label_x, label_y + 8),
                font(15.0).pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(&err)?;
            if let Some(b) = stats::box_stats(&variant.finished) {
                let (left, right) = (x - BOX_HALF_WIDTH, x + BOX_HALF_WIDTH);
                let whisker =
                    |from: f64, to: f64| PathElement::new(vec![(x, from), (x, to)], colour.stroke_width(2));
                let cap = |y: f64| {
                    PathElement::new(
                        vec![(x - CAP_HALF_WIDTH, y), (x + CAP_HALF_WIDTH, y)],
                        colour.stroke_width(2),
                    )
                };
                chart
                    .draw_series([Rectangle::new(
                        [(left, b.q1), (right, b.q3)],
                        colour.mix(BOX_FILL_OPACITY).filled(),
                    )])
                    .map_err(&err)?;
                chart
                    .draw_series([Rectangle::new([(left, b.q1), (right, b.q3)], colour.stroke_width(2))])
                    .map_err(&err)?;
                chart
                    .draw_series([
                        whisker(b.q3, b.whisker_high),
                        whisker(b.q1, b.whisker_low),
                        cap(b.whisker_high),
                        cap(b.whisker_low),
                        PathElement::new(vec![(left, b.median), (right, b.median)], BLACK.stroke_width(3)),
                    ])
                    .map_err(&err)?;
            }
            chart
                .draw_series(variant.finished.iter().enumerate().map(|(k, &y)| {
                    EmptyElement::at((x + jitter(k), y))
                        + Circle::new((0, 0), 5, colour.filled())
                        + Circle::new((0, 0), 5, BLACK.mix(0.7).stroke_width(1))
                }))
                .map_err(&err)?;
            chart
                .draw_series(variant.running.iter().enumerate().map(|(k, &y)| {
                    Cross::new((x + jitter(k + variant.finished.len()), y), 6, colour.stroke_width(2))
                }))
                .map_err(&err)?;
        }

        let any_running = self.variants.iter().any(|v| !v.running.is_empty());
        let legend_style = ShapeStyle::from(&BLACK.mix(0.7)).filled();
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(&err)?
            .label("finished job (dot, jittered)")
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, legend_style));
        if any_running {
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .map_err(&err)?
                .label("running job, best so far (not in box)")
                .legend(|(x, y)| Cross::new((x + 8, y), 6, BLACK.stroke_width(2)));
        }
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(&err)?
            .label("box: quartiles + median; whiskers: 1.5 IQR")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], BLACK.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(font(14.0))
            .draw()
            .map_err(&err)?;

        Ok(())
    }
}
