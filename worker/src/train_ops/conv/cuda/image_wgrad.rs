//! The weight gradient of the image's layer (few input channels) as one direct reduction over
//! the batch's pixels, for the bf16 image layer (`bimage`).
//!
//! cuDNN's kernel for it (its channels padded to 8) splits the reduction into 46 cubes on an
//! H100's 132 SMs: 174 µs of a 3.5 ms step at batch 512. Here:
//! 1. [`partial_sums_kernel`]: [`PARTIALS`] cubes stride over blocks of [`ROWS`] image rows;
//!    a cube stages a block's output gradient (in f32) and its input rows with a zero border
//!    (four f32 channels a pixel, read where the image lies: [`stage_rows`]) in shared memory,
//!    then a warp holds two output channels a thread and walks every eighth run of [`RUN`]
//!    adjacent pixels, a run's 3×(RUN + 2) neighbourhood broadcast vector loads read once for
//!    all its taps, the sums in registers; the cube's warps add theirs in shared memory and
//!    write one `[C_out, C_in, 3, 3]` partial;
//! 2. [`sum_partials_kernel`]: a cube per 32 weights adds the partials, in a fixed order (the
//!    gradient is the same on every run).
//!
//! cuDNN's path (padding, split-K kernel and sum, columns dropped) took 215 µs a step on an H100,
//! this kernel with a padded copy of the image and its loads one at a time 160 µs there; reading
//! the image in place with a thread's loads in flight together, 100 µs on an H200.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::image_rows::{
    CHANNEL_THREADS, LANES, MAX_WIDTH, PER_THREAD, PIXEL_THREADS, ROWS, RUN, SIDE, TILE_WIDTH, block_rows,
    blocks_per_image, holds, stage_rows,
};
use super::{image_mma, image_mma_wgrad};
use crate::train_ops::ImageCores;
use crate::train_ops::cube::{KernelTensor, LaunchMany, channels_last, custom_op_many};

/// A thread's vector loads of a block's output gradient, at most: the block's `ROWS · width ·
/// C_out / LANES` vectors over the cube's `C_out / PER_THREAD · PIXEL_THREADS` threads.
const STAGED_LOADS: usize = ROWS * MAX_WIDTH * PER_THREAD / (LANES * PIXEL_THREADS);

/// First-stage cubes, and so partial sums per weight: two cubes an SM on an H100.
const PARTIALS: usize = 264;

/// Whether the kernel takes a layer of `c_in` input and `c_out` output channels on images
/// `width` pixels wide.
pub fn takes(c_in: usize, c_out: usize, width: usize) -> bool {
    holds(c_in, c_out, width) && c_out.is_multiple_of(LANES)
}

/// Stage 1 on a `(PARTIALS, G)` grid of `(C_out / 2, PIXEL_THREADS)` cubes, `G` models' layers
/// side by side: cube `(p, g)` takes the blocks `p, p + PARTIALS, …` of [`ROWS`] rows of model
/// `g`'s images (`blocks_per_image` an image); thread `(i, j)` accumulates `dW[o, c, kh, kw]`
/// for `o = 2i, 2i + 1` over the pixels `j, j + 8, …` of each row; the cube's sums go to
/// `partials[p, g, o, c, kh, kw]`. `x`: `[N, G·C_in, H, W]`, any strides; `dy`: `[N, H, W,
/// G·C_out]` contiguous, [`LANES`] channels a vector.
#[cube(launch)]
fn partial_sums_kernel<X: Float, Y: Float, N: Size>(
    x: &Tensor<X>,
    dy: &Tensor<Vector<Y, N>>,
    partials: &mut Tensor<f32>,
    blocks_per_image: usize,
    #[comptime] c_in: usize,
    #[comptime] c_out: usize,
    #[define(X, Y)] _dtypes: [StorageType; 2],
) {
    let (height, width) = (x.shape(2), x.shape(3));
    let (g, groups) = (CUBE_POS_Y as usize, CUBE_COUNT_Y as usize);
    let taps = c_in * SIDE * SIDE;
    let o = UNIT_POS_X as usize * PER_THREAD;
    let threads = (CUBE_DIM_X * CUBE_DIM_Y) as usize;
    let mut xs = SharedMemory::<Vector<f32, N>>::new((ROWS + 2) * TILE_WIDTH);
    let mut dys = SharedMemory::<f32>::new(ROWS * MAX_WIDTH * PER_THREAD * CHANNEL_THREADS);
    let mut sums = Array::<f32>::new(PER_THREAD * c_in * SIDE * SIDE);
    #[unroll]
    for k in 0..PER_THREAD * c_in * SIDE * SIDE {
        sums[k] = 0.0f32;
    }
    let blocks = x.shape(0) * blocks_per_image;
    let mut block = CUBE_POS_X as usize;
    while block < blocks {
        let (n, y0, rows) = block_rows(block, blocks_per_image, height);
        // The block's output gradient (model `g`'s channels of each pixel, channels-last), staged
        // in f32: all of a thread's loads in flight before the input rows are staged and any is
        // stored (one at a time, the kernel waited on each in turn: 140 µs a step on an H100).
        // A model's vectors a pixel are known at compile time: divided by a run-time count,
        // the indices cost 37 µs a step on an H100 (151.4 against 113.9 µs).
        let vectors = c_out / LANES;
        let first = (n * height + y0) * width * groups * vectors + g * vectors;
        let count = rows * width * vectors;
        let mut loaded = Array::<Vector<Y, N>>::new(STAGED_LOADS);
        #[unroll]
        for u in 0..STAGED_LOADS {
            let k = UNIT_POS as usize + u * threads;
            if k < count {
                loaded[u] = dy[first + (k / vectors) * groups * vectors + k % vectors];
            }
        }
        stage_rows::<X, N>(x, &mut xs, n, y0, rows, g * c_in, c_in);
        #[unroll]
        for u in 0..STAGED_LOADS {
            let k = UNIT_POS as usize + u * threads;
            if k < count {
                #[unroll]
                for lane in 0..LANES {
                    dys[k * LANES + lane] = f32::cast_from(loaded[u][lane]);
                }
            }
        }
        sync_cube();
        let runs_per_row = width.div_ceil(RUN);
        for r in 0..rows {
            let mut run = UNIT_POS_Y as usize;
            while run < runs_per_row {
                let px0 = run * RUN;
                // The run's output gradients (zero past the row's end: those slots hold the next row's).
                let mut d = Array::<f32>::new(PER_THREAD * RUN);
                #[unroll]
                for q in 0..RUN {
                    let at = (r * width + px0 + q) * c_out + o;
                    let inside = px0 + q < width;
                    d[q] = select(inside, dys[at], 0.0f32);
                    d[RUN + q] = select(inside, dys[at + 1], 0.0f32);
                }
                #[unroll]
                for kh in 0..SIDE {
                    // Pixel px0 + q's tap (kh, kw) reads staged column px0 + q + kw of row r + kh.
                    let base = (r + kh) * TILE_WIDTH + px0;
                    let mut row = Array::<Vector<f32, N>>::new(RUN + SIDE - 1);
                    #[unroll]
                    for t in 0..RUN + SIDE - 1 {
                        row[t] = xs[base + t];
                    }
                    #[unroll]
                    for kw in 0..SIDE {
                        #[unroll]
                        for c in 0..c_in {
                            let t = c * SIDE * SIDE + kh * SIDE + kw;
                            #[unroll]
                            for q in 0..RUN {
                                let v = row[q + kw];
                                sums[t] += d[q] * v[c];
                                sums[taps + t] += d[RUN + q] * v[c];
                            }
                        }
                    }
                }
                run += CUBE_DIM_Y as usize;
            }
        }
        // The next block's staging waits for every warp's reads.
        sync_cube();
        block += CUBE_COUNT_X as usize;
    }
    // The warps' sums added in the staged gradient's shared memory, one of a thread's output
    // channels at a time.
    let threads_x = CUBE_DIM_X as usize;
    #[unroll]
    for j in 0..PER_THREAD {
        #[unroll]
        for t in 0..c_in * SIDE * SIDE {
            dys[UNIT_POS as usize * taps + t] = sums[j * taps + t];
        }
        sync_cube();
        let mut item = UNIT_POS as usize;
        while item < threads_x * taps {
            let mut sum = 0.0f32;
            for warp in 0..CUBE_DIM_Y as usize {
                sum += dys[warp * threads_x * taps + item];
            }
            let (i, t) = (item / taps, item % taps);
            partials[((CUBE_POS_X as usize * groups + g) * c_out + i * PER_THREAD + j) * taps + t] = sum;
            item += threads;
        }
        sync_cube();
    }
}

/// Stage 2 on `(⌈K / 32⌉)` cubes of `(32, 8)` threads: `output[k] = Σ_p partials[p, k]` for
/// the cube's 32 weights, each thread every eighth partial, then one thread a weight adds the
/// eight.
#[cube(launch)]
fn sum_partials_kernel(partials: &Tensor<f32>, output: &mut Tensor<f32>) {
    let weights = output.len();
    let k = CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    let mut sum = 0.0f32;
    if k < weights {
        let mut p = UNIT_POS_Y as usize;
        while p < partials.len() / weights {
            sum += partials[p * weights + k];
            p += CUBE_DIM_Y as usize;
        }
    }
    let mut shared = SharedMemory::<f32>::new(CHANNEL_THREADS * PIXEL_THREADS);
    shared[UNIT_POS as usize] = sum;
    sync_cube();
    if UNIT_POS_Y == 0 && k < weights {
        let mut total = 0.0f32;
        for y in 0..CUBE_DIM_Y as usize {
            total += shared[y * CUBE_DIM_X as usize + UNIT_POS_X as usize];
        }
        output[k] = total;
    }
}

/// Both stages on `groups` G layers side by side, `x: [N, G·C_in, H, W]` and `dy: [N, G·C_out,
/// H, W]` (any layout): `[G·C_out, C_in, 3, 3]` f32, contiguous.
fn launch<R: CubeRuntime>(
    [x, dy]: [CubeTensor<R>; 2],
    shape: &Shape,
    groups: usize,
    cores: ImageCores,
) -> CubeTensor<R> {
    let [rows, c_in, _, _] = shape.dims::<4>();
    let c_out = rows / groups;
    let height = x.meta.shape()[2];
    let (client, device) = (x.client.clone(), x.device.clone());
    let dy = channels_last(dy);
    if cores == ImageCores::Tensor
        && dy.dtype == DType::BF16
        && image_mma::takes(c_in, c_out, x.meta.shape()[3], x.dtype)
    {
        return image_mma_wgrad::launch([x, dy], shape, groups);
    }
    let weights = shape.num_elements();
    let partials = empty_device_contiguous_dtype(
        client.clone(),
        device.clone(),
        Shape::new([PARTIALS, weights]),
        DType::F32,
    );
    let dtypes = [x.dtype.into(), dy.dtype.into()];
    partial_sums_kernel::launch::<R>(
        &client,
        CubeCount::Static(PARTIALS as u32, groups as u32, 1),
        CubeDim::new_2d((c_out / PER_THREAD) as u32, PIXEL_THREADS as u32),
        LANES,
        x.into_tensor_arg(),
        dy.into_tensor_arg(),
        partials.clone().into_tensor_arg(),
        blocks_per_image(height),
        c_in,
        c_out,
        dtypes,
    );
    sum_partials(partials, shape)
}

/// Stage 2 of this kernel and of the tensor-core one: `partials: [P, K]`, each row a cube's
/// sums of the `K` weights, added over `P` in a fixed order into a new `shape` in f32.
pub(super) fn sum_partials<R: CubeRuntime>(partials: CubeTensor<R>, shape: &Shape) -> CubeTensor<R> {
    let (client, device) = (partials.client.clone(), partials.device.clone());
    let weights = shape.num_elements();
    let output = empty_device_contiguous_dtype(client.clone(), device, shape.clone(), DType::F32);
    sum_partials_kernel::launch::<R>(
        &client,
        CubeCount::Static(weights.div_ceil(CHANNEL_THREADS) as u32, 1, 1),
        CubeDim::new_2d(CHANNEL_THREADS as u32, PIXEL_THREADS as u32),
        partials.into_tensor_arg(),
        output.clone().into_tensor_arg(),
    );
    output
}

/// The weight gradient of `groups` G 3×3 "same" convolutions side by side, of `x: [N, G·C_in,
/// H, W]` from their output gradient `dy: [N, G·C_out, H, W]` ([`takes`] per model): `[G·C_out,
/// C_in, 3, 3]` f32; on tensor cores with [`ImageCores::Tensor`] where
/// [`image_mma::takes`] the shape.
pub fn weight_grad<T: KernelTensor>(x: T, dy: T, groups: usize, cores: ImageCores) -> T {
    let shape = Shape::new([dy.shape()[1], x.shape()[1] / groups, SIDE, SIDE]);
    let out = (shape.clone(), DType::F32);
    let launch: LaunchMany<T::Runtime, 2, 1> =
        Box::new(move |inputs| [launch(inputs, &shape, groups, cores)]);
    let [dw] = custom_op_many::<T, 2, 1>("image_weight_grad", [x, dy], [out], launch);
    dw
}

#[cfg(test)]
mod tests {
    /// The kernel takes the experiment's image layer (3 → 64 channels, 32 pixels wide) and
    /// leaves to cuDNN what its staging cannot hold: more input channels than the warps' sums
    /// fit, more output channels than a warp's threads hold, channel counts its vector loads
    /// cannot split, or wider images than a staged row.
    #[test]
    fn takes_the_image_layer_and_leaves_wider_shapes_to_cudnn() {
        assert!(super::takes(3, 64, 32));
        assert!(super::takes(1, 8, 5));
        assert!(!super::takes(4, 64, 32), "input channels");
        assert!(!super::takes(3, 128, 32), "output channels");
        assert!(!super::takes(3, 62, 32), "output channels in vectors of four");
        assert!(!super::takes(3, 64, 33), "width");
    }
}
