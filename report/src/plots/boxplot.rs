//! The experiment's main figure: the best value of the measure (validation accuracy unless the
//! sweep ranks by another metric) per variant as one box per variant
//! (quartiles, median, Tukey whiskers at 1.5 IQR) with every finished job as a jittered dot and
//! running jobs' best-so-far as crosses; a figure shows one seed set (see
//! [`crate::analysis::seed_sets`]).
//!
//! A box needs [`MIN_N_FOR_BOX`] finished jobs; fewer are shown as points only, since quartiles of
//! two or three values mislead. For an accuracy, a dashed line marks chance (10 %) when it lies
//! within the axis.
//! In the SVG each variant's box is exactly one `<rect>` filled with the variant colour at opacity
//! [`BOX_FILL_OPACITY`], which tests use to count boxes.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Figure, STAGGER_FROM, colour_index, font, plot_error, variant_colour, x_label};
use crate::ReportError;
use crate::analysis::{SeedSetAnalysis, SeedSetKind};
use crate::input::Measure;
use crate::stats;

/// Fill opacity of a box (unique to boxes in the SVG).
pub const BOX_FILL_OPACITY: f64 = 0.3;
/// Fewest finished jobs for which a variant gets a quartile box.
pub const MIN_N_FOR_BOX: usize = 5;
/// Accuracy (%) of guessing among CIFAR-10's ten classes.
pub const CHANCE_ACCURACY: f64 = 10.0;
const BOX_HALF_WIDTH: f64 = 0.28;
const CAP_HALF_WIDTH: f64 = 0.12;
const JITTER_HALF_WIDTH: f64 = 0.18;

/// One box of the figure (values as shown: accuracies in %).
#[derive(Debug, Clone, PartialEq)]
pub struct BoxPlotVariant {
    pub name: String,
    /// Colour slot (see [`super::colour_index`]).
    pub colour: usize,
    pub finished: Vec<f64>,
    pub running: Vec<f64>,
}

/// Data of the box plot.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxPlotFigure {
    /// Title, without the n per variant.
    pub title: String,
    pub variants: Vec<BoxPlotVariant>,
    /// Shown under the axis, e.g. which variants are identical to the baseline.
    pub note: Option<String>,
    pub measure: Measure,
}

impl BoxPlotFigure {
    /// The figure of one seed set; `display_order` fixes the colours.
    pub fn from_seed_set(
        sweep: &str,
        set: &SeedSetAnalysis,
        display_order: &[String],
        baseline: &str,
        measure: &Measure,
    ) -> Self {
        let variants = set
            .variants
            .iter()
            .map(|v| BoxPlotVariant {
                name: v.name.clone(),
                colour: colour_index(&v.name, display_order),
                finished: v.finished_best.clone(),
                running: v.running_best.iter().map(|(_, acc)| *acc).collect(),
            })
            .collect();
        let best = measure.best_label();
        let title = match set.kind {
            SeedSetKind::Balanced if set.complete => format!("{sweep}: {best} per variant"),
            SeedSetKind::Balanced => format!("{sweep}: {best}, seeds common to every variant"),
            SeedSetKind::Extended => format!("{sweep}: {best}, every finished seed"),
        };
        let identical: Vec<&str> =
            set.comparisons.iter().filter(|c| c.identical).map(|c| c.variant.as_str()).collect();
        let note = (!identical.is_empty()).then(|| {
            format!(
                "{} identical to {baseline} seed for seed (by construction): the points coincide.",
                match identical.as_slice() {
                    [one] => format!("{one} is"),
                    many => format!("{} are", many.join(" and ")),
                }
            )
        });
        Self { title, variants, note, measure: measure.clone() }
    }

    fn all_values(&self) -> impl Iterator<Item = f64> + '_ {
        self.variants.iter().flat_map(|v| v.finished.iter().chain(&v.running).copied())
    }

    /// Y range zoomed to the data with a margin, within the measure's bounds (0–100 %).
    fn y_range(&self) -> (f64, f64) {
        let (lo, hi) =
            self.all_values().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
        if !lo.is_finite() {
            return self.measure.empty_range();
        }
        // Extra room below the data keeps the legend (lower right) clear of the points.
        let floor = if self.measure.percent { 1.0 } else { (hi.abs().max(lo.abs()) * 0.02).max(1e-9) };
        let range = (hi - lo).max(floor);
        let (min, max) = self.measure.bounds();
        ((lo - 0.4 * range).max(min), (hi + 0.08 * range).min(max))
    }

    fn full_title(&self) -> String {
        if self.variants.iter().all(|v| v.finished.is_empty()) {
            return format!("{} (no finished jobs yet)", self.title);
        }
        let ns: Vec<usize> = self.variants.iter().map(|v| v.finished.len()).collect();
        let (lo, hi) = (ns.iter().min().copied().unwrap_or(0), ns.iter().max().copied().unwrap_or(0));
        match ns.len() {
            // Many variants: the labels carry each n; the title keeps to the range.
            n if n > STAGGER_FROM && lo == hi => format!("{} (n = {lo} each)", self.title),
            n if n > STAGGER_FROM => format!("{} (n = {lo}–{hi} per variant)", self.title),
            _ => format!(
                "{} (n = {})",
                self.title,
                ns.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" / ")
            ),
        }
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
        let decimals = super::axis_decimals(y_hi - y_lo);
        let x_range = -0.5..count as f64 - 0.5;
        let mut chart = ChartBuilder::on(root)
            .caption(self.full_title(), font(22.0))
            .margin(18)
            .margin_bottom(if self.note.is_some() { 40 } else { 18 })
            .x_label_area_size(if count > STAGGER_FROM { 67 } else { 50 })
            .y_label_area_size(70)
            .build_cartesian_2d(x_range, y_lo..y_hi)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&|y| format!("{y:.decimals$}"))
            .x_desc("variant (n = finished jobs)")
            .y_desc(format!("{}{}", self.measure.best_label(), self.measure.unit()))
            .label_style(font(15.0))
            .axis_desc_style(font(17.0))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(&err)?;

        let chance = self.measure.percent;
        let chance_visible = chance && (y_lo..=y_hi).contains(&CHANCE_ACCURACY);
        if chance_visible {
            chart
                .draw_series(DashedLineSeries::new(
                    [(-0.5, CHANCE_ACCURACY), (count as f64 - 0.5, CHANCE_ACCURACY)],
                    8,
                    6,
                    BLACK.mix(0.6).stroke_width(1),
                ))
                .map_err(&err)?;
        }
        let mut any_box = false;
        for (index, variant) in self.variants.iter().enumerate() {
            let colour = variant_colour(variant.colour);
            let x = index as f64;
            let (label_x, label_y) = chart.backend_coord(&(x, y_lo));
            let (text, row) =
                x_label(&format!("{} (n={})", variant.name, variant.finished.len()), index, count);
            root.draw(&Text::new(
                text,
                (label_x, label_y + 8 + 17 * row),
                font(15.0).pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(&err)?;
            let boxed = variant.finished.len() >= MIN_N_FOR_BOX;
            if let Some(b) = stats::box_stats(&variant.finished).filter(|_| boxed) {
                any_box = true;
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
        let any_points_only = self.variants.iter().any(|v| (1..MIN_N_FOR_BOX).contains(&v.finished.len()));
        let legend_style = ShapeStyle::from(&BLACK.mix(0.7)).filled();
        let finished_label = if any_points_only {
            format!("finished job (dot, jittered); n < {MIN_N_FOR_BOX}: dots only")
        } else {
            "finished job (dot, jittered)".to_string()
        };
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(&err)?
            .label(finished_label)
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, legend_style));
        if any_running {
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .map_err(&err)?
                .label("running job, best so far (not in box)")
                .legend(|(x, y)| Cross::new((x + 8, y), 6, BLACK.stroke_width(2)));
        }
        if any_box {
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .map_err(&err)?
                .label("box: quartiles + median; whiskers: 1.5 IQR")
                .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], BLACK.stroke_width(2)));
        }
        if chance {
            let chance_label =
                if chance_visible { "chance (10 %)" } else { "chance (10 %) lies below the axis" };
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
                .map_err(&err)?
                .label(chance_label)
                .legend(move |(x, y)| {
                    let style = BLACK.mix(if chance_visible { 0.6 } else { 0.0 }).stroke_width(1);
                    EmptyElement::at((0, 0))
                        + PathElement::new(vec![(x, y), (x + 6, y)], style)
                        + PathElement::new(vec![(x + 10, y), (x + 16, y)], style)
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(font(14.0))
            .draw()
            .map_err(&err)?;
        if let Some(note) = &self.note {
            let (_, height) = root.dim_in_pixel();
            root.draw(&Text::new(
                note.clone(),
                (18, height as i32 - 12),
                font(14.0).pos(Pos::new(HPos::Left, VPos::Bottom)),
            ))
            .map_err(&err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::compare::tests::{seeded, variant};
    use crate::analysis::seed_sets::analyse_seed_sets;

    fn svg_of(figure: &BoxPlotFigure) -> String {
        super::super::ensure_font_registered().unwrap();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, super::super::FIGURE_SIZE).into_drawing_area();
            figure.draw(&root).unwrap();
            root.present().unwrap();
        }
        svg
    }

    fn boxes(svg: &str) -> usize {
        svg.matches(&format!("opacity=\"{BOX_FILL_OPACITY}\"")).count()
    }

    #[test]
    fn fewer_than_five_values_get_points_but_no_box() {
        let entry = |name: &str, colour, finished: &[f64]| BoxPlotVariant {
            name: name.into(),
            colour,
            finished: finished.to_vec(),
            running: vec![],
        };
        let figure =
            |variants| BoxPlotFigure { title: "t".into(), variants, note: None, measure: Measure::default() };
        let five = entry("normal_lr1e-3", 3, &[90.0, 90.4, 89.8, 90.2, 90.1]);
        let four = entry("natural_softmax", 1, &[91.0, 91.4, 90.8, 91.2]);
        let svg = svg_of(&figure(vec![four.clone(), five]));
        assert_eq!(boxes(&svg), 1, "only the five-value variant has a box");
        assert!(svg.contains("n &lt; 5: dots only") || svg.contains("n < 5: dots only"));
        let svg = svg_of(&figure(vec![four]));
        assert_eq!(boxes(&svg), 0);
        assert!(!svg.contains("box: quartiles"));
    }

    #[test]
    fn colours_come_from_the_variant_name_not_its_position() {
        let values = seeded(&[90.0, 90.4, 89.8]);
        let set =
            &analyse_seed_sets(&[variant("normal_lr1e-2", &values), variant("extra", &values)], "x", &[])[0];
        let order: Vec<String> = vec!["normal_lr1e-2".into(), "extra".into()];
        let figure = BoxPlotFigure::from_seed_set("s", set, &order, "x", &Measure::default());
        assert_eq!(figure.variants.iter().map(|v| v.colour).collect::<Vec<_>>(), [4, 5]);
    }

    #[test]
    fn chance_line_is_drawn_when_within_the_axis_and_mentioned_otherwise() {
        let figure = |values: &[f64]| BoxPlotFigure {
            title: "t".into(),
            variants: vec![BoxPlotVariant {
                name: "a".into(),
                colour: 0,
                finished: values.to_vec(),
                running: vec![],
            }],
            note: None,
            measure: Measure::default(),
        };
        let low = svg_of(&figure(&[12.0, 20.0, 35.0, 15.0, 25.0]));
        assert!(low.contains("chance (10 %)") && !low.contains("below the axis"));
        let high = svg_of(&figure(&[90.0, 90.4, 89.8, 90.2, 90.1]));
        assert!(high.contains("chance (10 %) lies below the axis"));
    }

    #[test]
    fn identical_variants_get_a_note_under_the_axis() {
        let values = seeded(&[90.0, 90.4, 89.8, 90.2, 90.1]);
        let vs = [
            variant("natural_hardmax", &values),
            variant("multi_softmax", &values),
            variant("normal_lr1e-3", &values),
        ];
        let set = &analyse_seed_sets(&vs, "normal_lr1e-3", &[])[0];
        let figure = BoxPlotFigure::from_seed_set("s", set, &[], "normal_lr1e-3", &Measure::default());
        let note = figure.note.clone().unwrap();
        assert_eq!(
            note,
            "natural_hardmax and multi_softmax are identical to normal_lr1e-3 seed for seed (by construction): the points coincide."
        );
        assert!(svg_of(&figure).contains("natural_hardmax and multi_softmax are identical"));
    }
}
