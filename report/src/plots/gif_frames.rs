//! Encodes a sequence of RGB frames as one looping animated GIF that stays small: one fixed global
//! colour table, and every frame after the first stored as just the rectangle that changed since
//! the previous frame, with unchanged pixels transparent.
//!
//! The colour table holds greys (text, axes), the variant palette blended with white at several
//! strengths (lines, anti-aliasing) and a coarse colour cube for anything else; each pixel takes
//! the nearest entry. Figures drawn from those colours therefore need no per-frame quantisation.

use std::collections::HashMap;

use gif::{DisposalMethod, Encoder, EncodingError, Frame, Repeat};
use plotters::style::RGBColor;

/// Colour-table index that frames after the first use for "unchanged".
const TRANSPARENT: u8 = 0;
/// Strengths at which each palette colour is blended with white.
const BLENDS: [f64; 7] = [1.0, 0.8, 0.6, 0.45, 0.3, 0.18, 0.08];
const GREYS: usize = 64;

/// The fixed colour table and a memo of pixel colour → index.
struct ColourTable {
    colours: Vec<[u8; 3]>,
    memo: HashMap<[u8; 3], u8>,
}

impl ColourTable {
    fn new(palette: &[RGBColor]) -> Self {
        // Slot 0 (transparent) gets a colour no figure draws, so no pixel maps to it.
        let mut colours = vec![[255, 0, 255]];
        colours.extend((0..GREYS).map(|i| {
            let v = (i * 255 / (GREYS - 1)) as u8;
            [v, v, v]
        }));
        for &RGBColor(r, g, b) in palette {
            for alpha in BLENDS {
                let blend = |c: u8| (c as f64 * alpha + 255.0 * (1.0 - alpha)).round() as u8;
                colours.push([blend(r), blend(g), blend(b)]);
            }
        }
        for r in [0u8, 85, 170, 255] {
            for g in [0u8, 85, 170, 255] {
                for b in [0u8, 85, 170, 255] {
                    colours.push([r, g, b]);
                }
            }
        }
        colours.truncate(256);
        Self { colours, memo: HashMap::new() }
    }

    fn index(&mut self, rgb: [u8; 3]) -> u8 {
        let colours = &self.colours;
        *self.memo.entry(rgb).or_insert_with(|| {
            let distance =
                |c: &[u8; 3]| -> i32 { c.iter().zip(rgb).map(|(&a, b)| (a as i32 - b as i32).pow(2)).sum() };
            let best = (1..colours.len()).min_by_key(|&i| distance(&colours[i])).unwrap_or(1);
            best as u8
        })
    }

    fn flat(&self) -> Vec<u8> {
        self.colours.iter().flatten().copied().collect()
    }
}

/// Writes frames of one size into an in-memory GIF.
pub struct GifFrames {
    encoder: Encoder<Vec<u8>>,
    table: ColourTable,
    width: usize,
    height: usize,
    previous: Option<Vec<u8>>,
}

impl GifFrames {
    /// A looping GIF of `width` × `height` whose figures use `palette` (plus greys).
    pub fn new(width: u16, height: u16, palette: &[RGBColor]) -> Result<Self, EncodingError> {
        let table = ColourTable::new(palette);
        let mut encoder = Encoder::new(Vec::new(), width, height, &table.flat())?;
        encoder.set_repeat(Repeat::Infinite)?;
        Ok(Self { encoder, table, width: width as usize, height: height as usize, previous: None })
    }

    /// Appends one frame (`rgb`: width × height × 3 bytes) shown for `delay_cs` hundredths of a second.
    pub fn push(&mut self, rgb: &[u8], delay_cs: u16) -> Result<(), EncodingError> {
        assert_eq!(rgb.len(), self.width * self.height * 3, "frame size");
        let (rect, transparent) = match &self.previous {
            None => ((0, 0, self.width, self.height), None),
            Some(previous) => {
                (changed_rect(previous, rgb, self.width).unwrap_or((0, 0, 1, 1)), Some(TRANSPARENT))
            }
        };
        let (left, top, width, height) = rect;
        let mut indices = Vec::with_capacity(width * height);
        for y in top..top + height {
            let row = (y * self.width + left) * 3..(y * self.width + left + width) * 3;
            let new = &rgb[row.clone()];
            let old = self.previous.as_ref().map(|p| &p[row]);
            for (x, pixel) in new.chunks_exact(3).enumerate() {
                let unchanged = old.is_some_and(|old| &old[x * 3..x * 3 + 3] == pixel);
                indices.push(if unchanged {
                    TRANSPARENT
                } else {
                    self.table.index([pixel[0], pixel[1], pixel[2]])
                });
            }
        }
        let frame = Frame {
            delay: delay_cs,
            dispose: DisposalMethod::Keep,
            transparent,
            left: left as u16,
            top: top as u16,
            width: width as u16,
            height: height as u16,
            buffer: indices.into(),
            ..Frame::default()
        };
        self.encoder.write_frame(&frame)?;
        self.previous = Some(rgb.to_vec());
        Ok(())
    }

    /// The finished GIF file's bytes.
    pub fn finish(self) -> Result<Vec<u8>, EncodingError> {
        self.encoder.into_inner()
    }
}

/// (left, top, width, height) of the pixels that differ between two RGB frames; `None` if none do.
fn changed_rect(old: &[u8], new: &[u8], width: usize) -> Option<(usize, usize, usize, usize)> {
    let stride = width * 3;
    let rows: Vec<usize> = (0..old.len() / stride)
        .filter(|&y| old[y * stride..(y + 1) * stride] != new[y * stride..(y + 1) * stride])
        .collect();
    let (&top, &bottom) = (rows.first()?, rows.last()?);
    let (mut left, mut right) = (width, 0);
    for &y in &rows {
        let pixel = |x: usize| y * stride + x * 3..y * stride + x * 3 + 3;
        let differs = |x: &usize| old[pixel(*x)] != new[pixel(*x)];
        if let Some(first) = (0..left).find(differs) {
            left = first;
        }
        if let Some(last) = (right..width).rev().find(differs) {
            right = last;
        }
    }
    let right = right.max(left);
    Some((left, top, right - left + 1, bottom - top + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Vec<(u16, u16, u16, u16, u16)> {
        let mut decoder = gif::DecodeOptions::new().read_info(bytes).unwrap();
        let mut frames = Vec::new();
        while let Some(frame) = decoder.read_next_frame().unwrap() {
            frames.push((frame.left, frame.top, frame.width, frame.height, frame.delay));
        }
        frames
    }

    #[test]
    fn changed_rectangle_bounds_every_changed_pixel() {
        let (w, h) = (6, 4);
        let old = vec![255u8; w * h * 3];
        let mut new = old.clone();
        for (x, y) in [(1, 1), (4, 2)] {
            new[(y * w + x) * 3] = 0;
        }
        assert_eq!(changed_rect(&old, &new, w), Some((1, 1, 4, 2)));
        assert_eq!(changed_rect(&old, &old, w), None);
    }

    #[test]
    fn later_frames_store_only_the_changed_rectangle() {
        let (w, h) = (8u16, 5u16);
        let mut frames = GifFrames::new(w, h, &[RGBColor(0x1F, 0x77, 0xB4)]).unwrap();
        let mut rgb = vec![255u8; w as usize * h as usize * 3];
        frames.push(&rgb, 10).unwrap();
        rgb[(2 * w as usize + 3) * 3..(2 * w as usize + 5) * 3].copy_from_slice(&[0x1F, 0x77, 0xB4, 0, 0, 0]);
        frames.push(&rgb, 10).unwrap();
        frames.push(&rgb, 300).unwrap();
        let decoded = decode(&frames.finish().unwrap());
        assert_eq!(decoded, [(0, 0, 8, 5, 10), (3, 2, 2, 1, 10), (0, 0, 1, 1, 300)]);
    }

    #[test]
    fn palette_colours_map_to_themselves() {
        let blue = RGBColor(0x1F, 0x77, 0xB4);
        let mut table = ColourTable::new(&[blue]);
        for rgb in [[0x1F, 0x77, 0xB4], [255, 255, 255], [0, 0, 0]] {
            let i = table.index(rgb) as usize;
            assert_eq!(table.colours[i], rgb);
            assert_ne!(i, TRANSPARENT as usize);
        }
        assert!(table.colours.len() <= 256);
    }
}
