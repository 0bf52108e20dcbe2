//! The image layer's forward (few input channels) as a direct convolution on CUDA cores, for
//! the bf16 image layer (`bimage`).
//!
//! cuDNN's tensor-core kernel for it reads the image padded to 8 channels (a copy, 8 µs a step
//! at batch 512 on an H100) and took 78 µs there, for 27 multiply-adds an output. Here a cube
//! stages a block of [`ROWS`] image rows where they lie ([`stage_rows`]), a thread holds two
//! output channels' 27 weights in registers, and each warp walks every eighth run of [`RUN`]
//! adjacent pixels of the block: a run's 3×(RUN + 2) neighbourhood is broadcast vector loads
//! read once for all its taps, each of its pixels' 64 adjacent outputs one coalesced store. A
//! cube walks [`BLOCKS_PER_CUBE`] blocks in turn, so the weights each thread loads scattered
//! (54 loads) serve four blocks.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::ops::permute_nhwc_to_nchw;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::image_mma;
use super::image_rows::{
    LANES, PER_THREAD, PIXEL_THREADS, ROWS, RUN, SIDE, TILE_WIDTH, block_rows, blocks_per_image, holds,
    stage_rows,
};
use crate::train_ops::ImageCores;
use crate::train_ops::cube::{KernelTensor, LaunchMany, custom_op_many};

/// Blocks a cube convolves in turn with the weights it holds in registers.
const BLOCKS_PER_CUBE: usize = 4;

/// Whether the kernel takes a layer of `c_in` input and `c_out` output channels on images
/// `width` pixels wide.
pub fn takes(c_in: usize, c_out: usize, width: usize) -> bool {
    holds(c_in, c_out, width) && c_out.is_multiple_of(PER_THREAD)
}

/// On a `(⌈N · blocks_per_image / BLOCKS_PER_CUBE⌉, G)` grid of `(C_out / 2, PIXEL_THREADS)`
/// cubes, `G` models' layers side by side: cube `(b, g)` takes the blocks `BLOCKS_PER_CUBE · b,
/// …` of [`ROWS`] rows ([`block_rows`]) of model `g`'s images in turn; thread `(i, j)` computes
/// its output channels `2i, 2i + 1` of a block's pixels `j, j + 8, …`. `x: [N, G·C_in, H, W]`
/// and `weight: [G·C_out, C_in, 3, 3]` in any strides; `output: [N, H, W, G·C_out]` contiguous.
#[cube(launch)]
fn forward_kernel<X: Float, W: Float, O: Float, N: Size>(
    x: &Tensor<X>,
    weight: &Tensor<W>,
    output: &mut Tensor<O>,
    blocks_per_image: usize,
    #[comptime] c_in: usize,
    #[define(X, W, O)] _dtypes: [StorageType; 3],
) {
    let (height, width) = (x.shape(2), x.shape(3));
    let g = CUBE_POS_Y as usize;
    let c_out = weight.shape(0) / CUBE_COUNT_Y as usize;
    let taps = c_in * SIDE * SIDE;
    // The thread's first output channel among all models'.
    let o = g * c_out + UNIT_POS_X as usize * PER_THREAD;
    let mut weights = Array::<f32>::new(PER_THREAD * c_in * SIDE * SIDE);
    #[unroll]
    for j in 0..PER_THREAD {
        #[unroll]
        for c in 0..c_in {
            #[unroll]
            for kh in 0..SIDE {
                #[unroll]
                for kw in 0..SIDE {
                    let at = (o + j) * weight.stride(0)
                        + c * weight.stride(1)
                        + kh * weight.stride(2)
                        + kw * weight.stride(3);
                    weights[j * taps + (c * SIDE + kh) * SIDE + kw] = f32::cast_from(weight[at]);
                }
            }
        }
    }
    let mut xs = SharedMemory::<Vector<f32, N>>::new((ROWS + 2) * TILE_WIDTH);
    let blocks = x.shape(0) * blocks_per_image;
    let first = CUBE_POS_X as usize * BLOCKS_PER_CUBE;
    let last = select(first + BLOCKS_PER_CUBE < blocks, first + BLOCKS_PER_CUBE, blocks);
    for block in first..last {
        let (n, y0, rows) = block_rows(block, blocks_per_image, height);
        // The previous block's reads finish before its rows are overwritten.
        sync_cube();
        stage_rows::<X, N>(x, &mut xs, n, y0, rows, g * c_in, c_in);
        sync_cube();
        convolve_block::<O, N>(&xs, &weights, output, n, y0, rows, width, o, c_in);
    }
}

/// A thread's outputs `o, o + 1` (of `output`'s channels) of the staged block's runs of
/// [`RUN`] pixels along a row, runs `j, j + 8, …` (`weights`: the two channels' taps in
/// registers, `xs`: the block's rows with a zero border). A run reads each staged row once for
/// its three taps across, and finds its place in the block once, not per pixel.
#[cube]
#[allow(clippy::too_many_arguments)]
fn convolve_block<O: Float, N: Size>(
    xs: &SharedMemory<Vector<f32, N>>,
    weights: &Array<f32>,
    output: &mut Tensor<O>,
    n: usize,
    y0: usize,
    rows: usize,
    width: usize,
    o: usize,
    #[comptime] c_in: usize,
) {
    let (height, channels) = (output.shape(1), output.shape(3));
    let taps = c_in * SIDE * SIDE;
    let runs_per_row = width.div_ceil(RUN);
    let mut p = UNIT_POS_Y as usize;
    while p < rows * runs_per_row {
        let (r, px0) = (p / runs_per_row, (p % runs_per_row) * RUN);
        let mut sums = Array::<f32>::new(PER_THREAD * RUN);
        #[unroll]
        for i in 0..PER_THREAD * RUN {
            sums[i] = 0.0f32;
        }
        #[unroll]
        for kh in 0..SIDE {
            // Output pixel px0 + q, tap kw reads staged column px0 + q + kw of row r + kh.
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
                    #[unroll]
                    for j in 0..PER_THREAD {
                        let w = weights[j * taps + (c * SIDE + kh) * SIDE + kw];
                        #[unroll]
                        for q in 0..RUN {
                            let v = row[q + kw];
                            sums[j * RUN + q] += w * v[c];
                        }
                    }
                }
            }
        }
        let at = ((n * height + y0 + r) * width + px0) * channels + o;
        #[unroll]
        for q in 0..RUN {
            if px0 + q < width {
                #[unroll]
                for j in 0..PER_THREAD {
                    output[at + q * channels + j] = O::cast_from(sums[j * RUN + q]);
                }
            }
        }
        p += CUBE_DIM_Y as usize;
    }
}

/// `groups` G layers side by side, `x: [N, G·C_in, H, W]` convolved by `weight: [G·C_out,
/// C_in, 3, 3]` ([`takes`]; any layouts), into a new `[N, G·C_out, H, W]` of `dtype`,
/// channels-last in memory.
fn launch<R: CubeRuntime>(
    [x, weight]: [CubeTensor<R>; 2],
    groups: usize,
    dtype: DType,
    cores: ImageCores,
) -> CubeTensor<R> {
    let [n, channels, height, width] = x.meta.shape().dims::<4>();
    let (rows, c_in) = (weight.meta.shape()[0], channels / groups);
    let c_out = rows / groups;
    if cores == ImageCores::Tensor
        && weight.dtype == DType::BF16
        && image_mma::takes(c_in, c_out, width, x.dtype)
    {
        return image_mma::launch([x, weight], groups, dtype);
    }
    let (client, device) = (x.client.clone(), x.device.clone());
    let shape = Shape::new([n, height, width, rows]);
    let output = empty_device_contiguous_dtype(client.clone(), device, shape, dtype);
    let blocks = blocks_per_image(height);
    let cubes = (n * blocks).div_ceil(BLOCKS_PER_CUBE);
    let dtypes = [x.dtype.into(), weight.dtype.into(), dtype.into()];
    forward_kernel::launch::<R>(
        &client,
        CubeCount::Static(cubes as u32, groups as u32, 1),
        CubeDim::new_2d((c_out / PER_THREAD) as u32, PIXEL_THREADS as u32),
        LANES,
        x.into_tensor_arg(),
        weight.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        blocks,
        c_in,
        dtypes,
    );
    permute_nhwc_to_nchw(output)
}

/// `groups` G 3×3 "same" convolutions side by side, without bias, of `x: [N, G·C_in, H, W]` by
/// `weight: [G·C_out, C_in, 3, 3]` ([`takes`] per model): `[N, G·C_out, H, W]` in `x`'s dtype
/// (f32 sums), channels-last in memory; on tensor cores with [`ImageCores::Tensor`] where
/// [`image_mma::takes`] the shape.
pub fn conv3x3<T: KernelTensor>(x: T, weight: T, groups: usize, cores: ImageCores) -> T {
    let [n, _, h, w] = x.shape().dims::<4>();
    let dtype = x.dtype();
    let out = (Shape::new([n, weight.shape()[0], h, w]), dtype);
    let launch: LaunchMany<T::Runtime, 2, 1> = Box::new(move |inputs| [launch(inputs, groups, dtype, cores)]);
    let [y] = custom_op_many::<T, 2, 1>("image_forward", [x, weight], [out], launch);
    y
}

#[cfg(test)]
mod tests {
    /// The kernel takes the experiment's image layer (3 → 64 channels, 32 pixels wide) and
    /// leaves to cuDNN what a cube cannot hold: more input channels than a staged vector, more
    /// output channels than a warp's threads compute, an odd count, or wider images.
    #[test]
    fn takes_the_image_layer_and_leaves_wider_shapes_to_cudnn() {
        assert!(super::takes(3, 64, 32));
        assert!(super::takes(1, 2, 5));
        assert!(!super::takes(4, 64, 32), "input channels");
        assert!(!super::takes(3, 66, 32), "output channels");
        assert!(!super::takes(3, 63, 32), "odd output channels");
        assert!(!super::takes(3, 64, 33), "width");
    }
}
