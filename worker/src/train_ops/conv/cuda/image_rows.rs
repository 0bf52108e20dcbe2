//! The image layer's blocks of rows, as its direct forward ([`super::image_forward`]) and
//! weight-gradient ([`super::image_wgrad`]) kernels number them and stage them in shared memory
//! with a zero border, and the cube geometry both kernels share.

use cubecl::prelude::*;

/// The image's channels as the kernels read them: one vector of f32 a pixel (zeros past the
/// layer's).
pub const LANES: usize = 4;

/// Input channels the kernels take at most.
pub const MAX_CHANNELS: usize = 3;

/// Output channels a thread of either kernel computes.
pub const PER_THREAD: usize = 2;

/// A cube's threads along the output channels, at most (one warp).
pub const CHANNEL_THREADS: usize = 32;

/// A cube's threads along a block's pixels (its warps).
pub const PIXEL_THREADS: usize = 8;

/// Output rows a cube stages at once.
pub const ROWS: usize = 4;

/// Adjacent pixels of a row a thread of either kernel takes together, reading each staged row
/// once for their taps across.
pub const RUN: usize = 4;

/// The widest image the staged rows hold.
pub const MAX_WIDTH: usize = 32;

/// A staged input row: the image's row with a zero on each side.
pub const TILE_WIDTH: usize = MAX_WIDTH + 2;

/// The kernel's side: 3×3.
pub const SIDE: usize = 3;

/// Image `n`, first row `y0` and row count of block `block`, an image's rows taken [`ROWS`] at a
/// time (`blocks_per_image` of them: [`blocks_per_image`]), the last block of an image shorter
/// where [`ROWS`] does not divide its `height`.
#[cube]
pub fn block_rows(block: usize, blocks_per_image: usize, height: usize) -> (usize, usize, usize) {
    let y0 = (block % blocks_per_image) * ROWS;
    (block / blocks_per_image, y0, select(height - y0 < ROWS, height - y0, ROWS))
}

/// An image's blocks of [`ROWS`] rows, as [`block_rows`] numbers them.
pub fn blocks_per_image(height: usize) -> usize {
    height.div_ceil(ROWS)
}

/// Stages the input rows `y0 − 1 ..= y0 + rows` of image `n` of `x: [N, C, H, W]` (any
/// strides, any float type), columns `−1 ..= W`, into `xs` (`(ROWS + 2) × TILE_WIDTH` vectors of
/// f32, channel `c0 + c` in lane `c`, `c < c_in`: a fused model's image from `c0 = g · c_in`):
/// zeros outside the image and past `c_in`. Reading the image where it lies spares the padded
/// copy a step made of it for each kernel.
#[cube]
#[allow(clippy::too_many_arguments)]
pub fn stage_rows<X: Float, N: Size>(
    x: &Tensor<X>,
    xs: &mut SharedMemory<Vector<f32, N>>,
    n: usize,
    y0: usize,
    rows: usize,
    c0: usize,
    #[comptime] c_in: usize,
) {
    let (height, width) = (x.shape(2), x.shape(3));
    let threads = (CUBE_DIM_X * CUBE_DIM_Y) as usize;
    let mut i = UNIT_POS as usize;
    while i < (rows + 2) * TILE_WIDTH {
        let (r, col) = (i / TILE_WIDTH, i % TILE_WIDTH);
        let mut v = Vector::<f32, N>::new(0.0f32);
        if y0 + r >= 1 && y0 + r <= height && col >= 1 && col <= width {
            let at =
                n * x.stride(0) + c0 * x.stride(1) + (y0 + r - 1) * x.stride(2) + (col - 1) * x.stride(3);
            #[unroll]
            for c in 0..c_in {
                v[c] = f32::cast_from(x[at + c * x.stride(1)]);
            }
        }
        xs[i] = v;
        i += threads;
    }
}

/// Whether a cube holds a layer of `c_in` input and `c_out` output channels on images `width`
/// pixels wide: its staged rows the image's, its threads the output channels.
pub fn holds(c_in: usize, c_out: usize, width: usize) -> bool {
    c_in <= MAX_CHANNELS && width <= MAX_WIDTH && c_out <= PER_THREAD * CHANNEL_THREADS
}
