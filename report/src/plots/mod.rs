//! What the figures share: the embedded font, the variant palette (one colour per variant in every
//! figure), figure size, and rendering one drawing function to both an SVG file and a PNG file.
//!
//! Text is rendered with DejaVu Sans (Bitstream Vera licence, see `assets/DejaVuSans-LICENSE.txt`)
//! embedded in the binary and registered with plotters' `ab_glyph` font backend, so no system font
//! library (fontconfig, freetype) is needed at build or run time.

pub mod animation;
pub mod boxplot;
pub mod curves;
pub mod gif_frames;

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, RGBColor, register_font};

use crate::ReportError;

/// Pixel size of every figure.
pub const FIGURE_SIZE: (u32, u32) = (1100, 650);

/// Font family name every text style uses.
pub const FONT_FAMILY: &str = "sans-serif";

static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the embedded font with plotters once per process.
pub fn ensure_font_registered() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FONT_FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok());
    if ok { Ok(()) } else { Err(ReportError::Plot("embedded DejaVu Sans font did not load".to_string())) }
}

const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1F, 0x77, 0xB4),
    RGBColor(0xFF, 0x7F, 0x0E),
    RGBColor(0x2C, 0xA0, 0x2C),
    RGBColor(0xD6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xBD),
    RGBColor(0x8C, 0x56, 0x4B),
    RGBColor(0xE3, 0x77, 0xC2),
    RGBColor(0x7F, 0x7F, 0x7F),
    RGBColor(0xBC, 0xBD, 0x22),
    RGBColor(0x17, 0xBE, 0xCF),
];

/// The experiment's variants in their canonical order; a variant's colour is its position here.
pub const CANONICAL_VARIANTS: [&str; 5] =
    ["natural_hardmax", "natural_softmax", "multi_softmax", "normal_lr1e-3", "normal_lr1e-2"];

/// Decimals for axis labels spanning `range`: three significant steps of it (accuracies in %
/// over a few points get one).
pub fn axis_decimals(range: f64) -> usize {
    if !(range.is_finite() && range > 0.0) {
        return 1;
    }
    (1.0 - range.log10().floor()).clamp(0.0, 6.0) as usize
}

/// From this many variants on, the labels under the boxes alternate between two rows.
pub const STAGGER_FROM: usize = 6;
/// Characters of a label that fit in one variant's slot of the plot's width.
const LABEL_CHARS_PER_SLOT: f64 = 960.0 / 8.0;

/// The label of the `index`-th of `count` boxes and its row: two rows when they are many (each
/// label then has two slots' width, the outermost one: they end at the figure's edges), cut with
/// `…` to what fits.
pub fn x_label(text: &str, index: usize, count: usize) -> (String, i32) {
    let inner = index > 0 && index + 1 < count;
    let (row, slots) =
        if count > STAGGER_FROM { ((index % 2) as i32, if inner { 2.0 } else { 1.0 }) } else { (0, 1.0) };
    let fits = ((LABEL_CHARS_PER_SLOT * slots / count.max(1) as f64) as usize).max(4);
    if text.chars().count() <= fits {
        return (text.to_owned(), row);
    }
    let cut: String = text.chars().take(fits - 1).collect();
    (format!("{cut}…"), row)
}

/// Colour slot of `name`: its position in [`CANONICAL_VARIANTS`], or for any other variant the
/// slots after those, in the order other variants appear in `display_order`. Keeps a variant's
/// colour the same in every figure, whatever subset of variants a figure shows.
pub fn colour_index(name: &str, display_order: &[String]) -> usize {
    if let Some(i) = CANONICAL_VARIANTS.iter().position(|v| *v == name) {
        return i;
    }
    let others = display_order.iter().filter(|v| !CANONICAL_VARIANTS.contains(&v.as_str()));
    CANONICAL_VARIANTS.len() + others.clone().position(|v| v == name).unwrap_or_else(|| others.count())
}

/// Colour of colour slot `index` (Tableau 10, cycling).
pub fn variant_colour(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// Every colour of the palette (for the GIF's fixed colour table).
pub(crate) fn palette() -> &'static [RGBColor] {
    &PALETTE
}

/// The colour as SVG writes it, e.g. `#1F77B4`.
pub fn variant_colour_hex(index: usize) -> String {
    let RGBColor(r, g, b) = variant_colour(index);
    format!("#{r:02X}{g:02X}{b:02X}")
}

/// Text style of the given size in the embedded font.
pub(crate) fn font(size: f64) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().color(&BLACK)
}

/// Converts any plotters drawing error into [`ReportError::Plot`].
pub(crate) fn plot_error<E: std::fmt::Display>(figure: impl std::fmt::Display) -> impl Fn(E) -> ReportError {
    move |e| ReportError::Plot(format!("{figure}: {e}"))
}

/// A figure that can draw itself on any plotters backend.
pub(crate) trait Figure {
    /// Short name used in error messages.
    const NAME: &'static str;
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), ReportError>;
}

/// Draws `figure` as SVG text.
pub(crate) fn render_svg<F: Figure>(figure: &F) -> Result<String, ReportError> {
    ensure_font_registered()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, FIGURE_SIZE).into_drawing_area();
        figure.draw(&root)?;
        root.present().map_err(plot_error(F::NAME))?;
    }
    Ok(svg)
}

/// Draws `figure` once into `svg_path` and once into `png_path`.
pub(crate) fn render_svg_and_png<F: Figure>(
    figure: &F,
    svg_path: &Path,
    png_path: &Path,
) -> Result<(), ReportError> {
    let svg = render_svg(figure)?;
    std::fs::write(svg_path, svg)
        .map_err(|source| ReportError::Io { path: svg_path.to_path_buf(), source })?;
    let root = BitMapBackend::new(png_path, FIGURE_SIZE).into_drawing_area();
    figure.draw(&root)?;
    root.present().map_err(plot_error(format!("{} ({})", F::NAME, png_path.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_labels_take_two_rows_and_are_cut_to_fit() {
        assert_eq!(x_label("natural_softmax (n=5)", 1, 5), ("natural_softmax (n=5)".into(), 0));
        let (text, row) = x_label("depth=3,lr=0.0012345,width=0.5 (n=3)", 3, 12);
        assert_eq!(
            x_label("depth=3,lr=0.0012345,width=0.5 (n=3)", 11, 12).0.chars().count(),
            10,
            "at the edge"
        );
        assert_eq!((text.chars().count(), text.ends_with('…'), row), (20, true, 1));
        assert_eq!(x_label("depth=3 (n=3)", 2, 12), ("depth=3 (n=3)".into(), 0));
    }

    #[test]
    fn colours_follow_the_canonical_order_whatever_the_display_order() {
        let order: Vec<String> = ["normal_lr1e-2", "extra_b", "natural_softmax", "extra_a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(colour_index("natural_softmax", &order), 1);
        assert_eq!(colour_index("normal_lr1e-2", &order), 4);
        assert_eq!(colour_index("extra_b", &order), 5);
        assert_eq!(colour_index("extra_a", &order), 6);
        assert_eq!(colour_index("unknown", &order), 7, "a name outside the order goes last");
        assert_eq!(variant_colour_hex(colour_index("normal_lr1e-3", &[])), "#D62728");
    }
}
