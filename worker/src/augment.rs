//! Optional on-device augmentation (off in the experiment): random 32×32 crop of the image
//! zero-padded by 4 px on every side, and a random horizontal flip, drawn per image.
//!
//! Only the per-image offsets and flip bits (3 small integers per image) come from the host;
//! the crop is one `gather` on the device.

use burn::prelude::*;
use burn::tensor::ops::PadMode;
use rand::Rng;

/// Padding in pixels on each side before the random crop.
pub const CROP_PADDING: usize = 4;

/// Each image's crop offsets and flip bit, drawn on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Crops {
    dy: Vec<i64>,
    dx: Vec<i64>,
    flip: Vec<i64>,
}

impl Crops {
    /// The draws for `n` images from `rng` (three per image, image after image).
    pub fn draw(n: usize, rng: &mut impl Rng) -> Self {
        let mut crops = Crops::default();
        for _ in 0..n {
            crops.dy.push(rng.random_range(0..=2 * CROP_PADDING) as i64);
            crops.dx.push(rng.random_range(0..=2 * CROP_PADDING) as i64);
            crops.flip.push(rng.random_bool(0.5) as i64);
        }
        crops
    }

    /// These draws followed by `other`'s (the crops of two batches laid one after the other).
    pub fn extend(&mut self, other: Crops) {
        self.dy.extend(other.dy);
        self.dx.extend(other.dx);
        self.flip.extend(other.flip);
    }

    /// Images drawn for.
    pub fn len(&self) -> usize {
        self.flip.len()
    }

    /// Whether no image was drawn for.
    pub fn is_empty(&self) -> bool {
        self.flip.is_empty()
    }
}

/// Crops (after 4-px zero padding) and flips each image of `[N, C, H, W]` as `crops` says
/// (`crops.len() == N`).
pub fn apply_crops<B: Backend>(images: Tensor<B, 4>, crops: Crops) -> Tensor<B, 4> {
    let [n, c, h, w] = images.dims();
    assert_eq!(crops.len(), n, "one crop per image");
    let device = images.device();
    let p = CROP_PADDING;
    let (ph, pw) = (h + 2 * p, w + 2 * p);
    let per_image =
        |v: Vec<i64>| Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), &device).reshape([n, 1, 1, 1]);
    let (dy, dx, flip) = (per_image(crops.dy), per_image(crops.dx), per_image(crops.flip));
    let ys = Tensor::<B, 1, Int>::arange(0..h as i64, &device).reshape([1, 1, h, 1]);
    let xs = Tensor::<B, 1, Int>::arange(0..w as i64, &device).reshape([1, 1, 1, w]);
    // flipped column: (w − 1 − x) = x + f·(w − 1 − 2x) with f ∈ {0, 1}
    let flipped = xs.clone().mul_scalar(-2).add_scalar(w as i64 - 1);
    let cols = xs.add(flip.mul(flipped)).add(dx);
    let rows = ys.add(dy);
    let index = rows.mul_scalar(pw as i64).add(cols).expand([n, c, h, w]).reshape([n, c, h * w]);
    images
        .pad([(p, p), (p, p)], PadMode::Constant(0.0))
        .reshape([n, c, ph * pw])
        .gather(2, index)
        .reshape([n, c, h, w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn crops_keep_shape_and_pixels_come_from_the_image_or_padding() {
        let device = Default::default();
        let values: Vec<f32> = (1..=2 * 3 * 32 * 32).map(|v| v as f32).collect();
        let images = Tensor::<Flex, 4>::from_data(TensorData::new(values, [2, 3, 32, 32]), &device);
        let mut rng = StdRng::seed_from_u64(7);
        let out = apply_crops(images.clone(), Crops::draw(2, &mut rng));
        assert_eq!(out.dims(), [2, 3, 32, 32]);
        let got: Vec<f32> = out.into_data().to_vec().unwrap();
        let all: Vec<f32> = images.into_data().to_vec().unwrap();
        assert!(got.iter().all(|v| *v == 0.0 || all.contains(v)));
        // At most 4 rows + 4 columns of padding: most pixels are real.
        assert!(got.iter().filter(|v| **v != 0.0).count() >= 2 * 3 * 28 * 28);
    }

    /// Two batches' draws, each from its own generator, laid one after the other crop the
    /// concatenated batches as each batch's own augmentation does (how fused jobs augment).
    #[test]
    fn extended_crops_augment_each_batch_as_its_own_generator_would() {
        let device = Default::default();
        let values: Vec<f32> = (1..=5 * 3 * 32 * 32).map(|v| v as f32).collect();
        let images = Tensor::<Flex, 4>::from_data(TensorData::new(values, [5, 3, 32, 32]), &device);
        let (first, second) = (images.clone().narrow(0, 0, 2), images.clone().narrow(0, 2, 3));
        let (mut a, mut b) = (StdRng::seed_from_u64(1), StdRng::seed_from_u64(2));
        let mut crops = Crops::draw(2, &mut a.clone());
        crops.extend(Crops::draw(3, &mut b.clone()));
        assert_eq!(crops.len(), 5);
        let together: Vec<f32> = apply_crops(images, crops).into_data().to_vec().unwrap();
        let alone = Tensor::cat(
            vec![apply_crops(first, Crops::draw(2, &mut a)), apply_crops(second, Crops::draw(3, &mut b))],
            0,
        );
        let alone: Vec<f32> = alone.into_data().to_vec().unwrap();
        assert_eq!(together, alone);
        assert_ne!(
            Crops::draw(8, &mut StdRng::seed_from_u64(1)),
            Crops::draw(8, &mut StdRng::seed_from_u64(2))
        );
    }
}
