//! `curves.gif`: every run's measure (validation accuracy unless the sweep ranks by another
//! metric; solid) and its training counterpart (dotted, where there is one) per epoch, coloured by
//! variant, growing epoch by epoch; the last frame is held before the loop restarts.
//!
//! Runs are the succeeded and running jobs that stored epochs. Axes stay fixed over the whole
//! animation (so frames differ only where curves grow), and at most [`MAX_FRAMES`] frames are drawn,
//! stepping over epochs as needed: frame k shows epochs 1..=k.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::gif_frames::GifFrames;
use super::{colour_index, ensure_font_registered, font, palette, plot_error, variant_colour};
use crate::ReportError;
use crate::input::{Measure, ReportInput};

/// Pixel size of the animation.
pub const GIF_SIZE: (u32, u32) = (800, 480);
/// Most frames an animation has; longer runs step over epochs.
pub const MAX_FRAMES: u32 = 50;
/// Hundredths of a second each frame shows, and the last one.
const FRAME_DELAY_CS: u16 = 8;
const LAST_FRAME_DELAY_CS: u16 = 300;
const LEGEND_WIDTH: u32 = 210;

/// One run's values per epoch (as shown: accuracies in %).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub variant: String,
    pub seed: u64,
    /// (epoch, training counterpart or NaN, measure), by epoch.
    pub epochs: Vec<(u32, f64, f64)>,
}

/// One legend entry.
#[derive(Debug, Clone, PartialEq)]
pub struct LegendEntry {
    pub variant: String,
    pub colour: usize,
    pub runs: usize,
    /// E.g. "identical to normal_lr1e-3 (hidden)": its curves lie under the baseline's.
    pub note: Option<String>,
}

/// Data of the animation.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvesAnimation {
    pub sweep: String,
    /// Drawn in this order (display order of variants, then seed).
    pub runs: Vec<Run>,
    pub legend: Vec<LegendEntry>,
    pub measure: Measure,
    /// Some run has the measure's training counterpart: the legend explains the dotted lines.
    pub training: bool,
}

impl CurvesAnimation {
    /// Runs of the input's succeeded and running jobs; `identical` names the variants equal to
    /// `baseline` seed for seed, which the legend points out.
    pub fn from_input(
        input: &ReportInput,
        display_order: &[String],
        identical: &[&str],
        baseline: &str,
    ) -> Self {
        let shown: BTreeMap<i64, (&str, u64)> = input
            .jobs
            .iter()
            .filter(|j| j.state == "succeeded" || j.state == "running")
            .map(|j| (j.job_id, (j.variant.as_str(), j.seed)))
            .collect();
        let mut by_job: BTreeMap<i64, Vec<(u32, f64, f64)>> = BTreeMap::new();
        for e in input.epochs.iter().filter(|e| shown.contains_key(&e.job_id)) {
            let measure = &input.measure;
            let train = measure.training(e).map_or(f64::NAN, |t| measure.show(t));
            by_job.entry(e.job_id).or_default().push((e.epoch, train, measure.show(e.measured())));
        }
        let rank = |name: &str| display_order.iter().position(|v| v == name).unwrap_or(display_order.len());
        let mut runs: Vec<Run> = by_job
            .into_iter()
            .map(|(job_id, mut epochs)| {
                epochs.sort_by_key(|(epoch, _, _)| *epoch);
                let (variant, seed) = shown[&job_id];
                Run { variant: variant.to_string(), seed, epochs }
            })
            .collect();
        runs.sort_by(|a, b| {
            (rank(&a.variant), &a.variant, a.seed).cmp(&(rank(&b.variant), &b.variant, b.seed))
        });
        let mut legend: Vec<LegendEntry> = Vec::new();
        for run in &runs {
            match legend.last_mut() {
                Some(entry) if entry.variant == run.variant => entry.runs += 1,
                _ => legend.push(LegendEntry {
                    variant: run.variant.clone(),
                    colour: colour_index(&run.variant, display_order),
                    runs: 1,
                    note: identical
                        .contains(&run.variant.as_str())
                        .then(|| format!("identical to {baseline} (hidden)")),
                }),
            }
        }
        let training = runs.iter().any(|r| r.epochs.iter().any(|e| e.1.is_finite()));
        Self { sweep: input.sweep.clone(), runs, legend, measure: input.measure.clone(), training }
    }

    fn last_epoch(&self) -> u32 {
        self.runs.iter().filter_map(|r| r.epochs.last().map(|e| e.0)).max().unwrap_or(0)
    }

    /// The last epoch each frame shows: every `step`-th epoch and always the last one.
    pub fn frame_epochs(&self) -> Vec<u32> {
        let last = self.last_epoch();
        if last == 0 {
            return vec![0];
        }
        let step = last.div_ceil(MAX_FRAMES);
        let mut frames: Vec<u32> = (1..=last / step).map(|i| i * step).collect();
        if frames.last() != Some(&last) {
            frames.push(last);
        }
        frames
    }

    /// Range over every run and epoch, with a margin, within the measure's bounds (0–100 %).
    fn y_range(&self) -> (f64, f64) {
        let values = self.runs.iter().flat_map(|r| r.epochs.iter().flat_map(|&(_, t, v)| [t, v]));
        let values = values.filter(|x| x.is_finite());
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
        if !lo.is_finite() {
            return self.measure.empty_range();
        }
        let floor = if self.measure.percent { 0.5 } else { (lo.abs().max(hi.abs()) * 0.02).max(1e-9) };
        let margin = ((hi - lo) * 0.04).max(floor);
        let (min, max) = self.measure.bounds();
        ((lo - margin).max(min), (hi + margin).min(max))
    }

    /// What the axis and title call the values.
    fn what(&self) -> String {
        let name = if self.training { self.measure.family() } else { &self.measure.label };
        format!("{name}{}", self.measure.unit())
    }

    fn draw_frame<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        upto: u32,
    ) -> Result<(), ReportError> {
        let err = plot_error("curves.gif");
        root.fill(&WHITE).map_err(&err)?;
        let title = format!("{}: {} per epoch, every run", self.sweep, self.what());
        let body = root.titled(&title, font(18.0)).map_err(&err)?;
        let (plot, side) = body.split_horizontally(GIF_SIZE.0 - LEGEND_WIDTH);
        let last = self.last_epoch().max(1);
        let x_range = if last == 1 { 0.5..1.5 } else { 1.0..last as f64 };
        let (y_lo, y_hi) = self.y_range();
        let decimals = super::axis_decimals(y_hi - y_lo).saturating_sub(1);
        let mut chart = ChartBuilder::on(&plot)
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(x_range, y_lo..y_hi)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(self.what())
            .x_labels((last as usize).clamp(2, 11))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.decimals$}"))
            .label_style(font(12.0))
            .axis_desc_style(font(13.0))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(&err)?;
        let colour_of = |variant: &str| {
            self.legend.iter().find(|l| l.variant == variant).map_or(BLACK, |l| variant_colour(l.colour))
        };
        let shown = |run: &Run| run.epochs.iter().filter(|e| e.0 <= upto).copied().collect::<Vec<_>>();
        for run in &self.runs {
            let points = shown(run);
            chart
                .draw_series(DashedLineSeries::new(
                    points.iter().filter(|p| p.1.is_finite()).map(|&(e, t, _)| (e as f64, t)),
                    2,
                    4,
                    colour_of(&run.variant).stroke_width(1),
                ))
                .map_err(&err)?;
        }
        for run in &self.runs {
            let points = shown(run);
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|&(e, _, v)| (e as f64, v)),
                    colour_of(&run.variant).stroke_width(2),
                ))
                .map_err(&err)?;
        }
        self.draw_legend(&side, upto, last)
    }

    fn draw_legend<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        upto: u32,
        last: u32,
    ) -> Result<(), ReportError> {
        let err = plot_error("curves.gif");
        let left = Pos::new(HPos::Left, VPos::Center);
        let mut y = 20;
        for entry in &self.legend {
            let colour = variant_colour(entry.colour);
            area.draw(&PathElement::new(vec![(6, y), (30, y)], colour.stroke_width(3))).map_err(&err)?;
            let label = format!("{} ({} runs)", entry.variant, entry.runs);
            area.draw(&Text::new(label, (36, y), font(12.0).pos(left))).map_err(&err)?;
            if let Some(note) = &entry.note {
                y += 16;
                area.draw(&Text::new(note.clone(), (36, y), font(11.0).pos(left))).map_err(&err)?;
            }
            y += 22;
        }
        y += 8;
        let solid = if self.training { "validation (solid)".to_string() } else { self.measure.label.clone() };
        let key = [(solid.as_str(), false), ("training (dotted)", true)];
        for (label, dotted) in key.into_iter().filter(|(_, dotted)| self.training || !dotted) {
            let segments: Vec<Vec<(i32, i32)>> = if dotted {
                (0..4).map(|i| vec![(6 + i * 7, y), (9 + i * 7, y)]).collect()
            } else {
                vec![vec![(6, y), (30, y)]]
            };
            for segment in segments {
                area.draw(&PathElement::new(segment, BLACK.stroke_width(if dotted { 1 } else { 2 })))
                    .map_err(&err)?;
            }
            area.draw(&Text::new(label, (36, y), font(12.0).pos(left))).map_err(&err)?;
            y += 20;
        }
        let counter = if self.runs.is_empty() {
            "no epochs stored yet".to_string()
        } else {
            format!("epoch {upto} of {last}")
        };
        area.draw(&Text::new(counter, (6, y + 16), font(14.0).pos(left))).map_err(&err)?;
        Ok(())
    }

    /// Renders every frame and writes the GIF to `path`.
    pub fn write_gif(&self, path: &Path) -> Result<(), ReportError> {
        ensure_font_registered()?;
        let gif_error = |e: gif::EncodingError| ReportError::Plot(format!("curves.gif: {e}"));
        let (w, h) = GIF_SIZE;
        let mut frames = GifFrames::new(w as u16, h as u16, palette()).map_err(gif_error)?;
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        let epochs = self.frame_epochs();
        for (i, &upto) in epochs.iter().enumerate() {
            {
                let root = BitMapBackend::with_buffer(&mut rgb, GIF_SIZE).into_drawing_area();
                self.draw_frame(&root, upto)?;
                root.present().map_err(plot_error("curves.gif"))?;
            }
            let delay = if i + 1 == epochs.len() { LAST_FRAME_DELAY_CS } else { FRAME_DELAY_CS };
            frames.push(&rgb, delay).map_err(gif_error)?;
        }
        let bytes = frames.finish().map_err(gif_error)?;
        std::fs::write(path, bytes).map_err(|source| ReportError::Io { path: path.to_path_buf(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn animation(last_epoch: u32) -> CurvesAnimation {
        let run = |variant: &str, seed| Run {
            variant: variant.to_string(),
            seed,
            epochs: (1..=last_epoch).map(|e| (e, 50.0 + e as f64 * 0.4, 45.0 + e as f64 * 0.4)).collect(),
        };
        CurvesAnimation {
            sweep: "s".to_string(),
            runs: vec![run("natural_softmax", 0), run("normal_lr1e-3", 0)],
            legend: vec![
                LegendEntry { variant: "natural_softmax".into(), colour: 1, runs: 1, note: None },
                LegendEntry { variant: "normal_lr1e-3".into(), colour: 3, runs: 1, note: None },
            ],
            measure: Measure::default(),
            training: true,
        }
    }

    #[test]
    fn frames_step_over_epochs_and_end_on_the_last() {
        assert_eq!(animation(10).frame_epochs(), (1..=10).collect::<Vec<_>>());
        let hundred = animation(100).frame_epochs();
        assert_eq!((hundred.len(), hundred[0], hundred[49]), (50, 2, 100));
        let odd = animation(101).frame_epochs();
        // Steps of 3 up to 99, then the last epoch.
        assert_eq!((odd.len(), odd[0], odd[32], *odd.last().unwrap()), (34, 3, 99, 101));
        assert_eq!(animation(0).frame_epochs(), [0]);
    }

    #[test]
    fn without_epochs_the_gif_is_one_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.gif");
        let empty = CurvesAnimation {
            sweep: "s".into(),
            runs: Vec::new(),
            legend: Vec::new(),
            measure: Measure::default(),
            training: false,
        };
        empty.write_gif(&path).unwrap();
        let mut decoder = gif::DecodeOptions::new().read_info(std::fs::File::open(&path).unwrap()).unwrap();
        assert!(decoder.read_next_frame().unwrap().is_some());
        assert!(decoder.read_next_frame().unwrap().is_none());
    }

    #[test]
    fn the_gif_has_a_frame_per_step_and_holds_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.gif");
        animation(6).write_gif(&path).unwrap();
        let mut decoder = gif::DecodeOptions::new().read_info(std::fs::File::open(&path).unwrap()).unwrap();
        let mut delays = Vec::new();
        while let Some(frame) = decoder.read_next_frame().unwrap() {
            delays.push(frame.delay);
        }
        assert_eq!(delays, [8, 8, 8, 8, 8, 300]);
        assert_eq!((decoder.width(), decoder.height()), (800, 480));
    }
}
