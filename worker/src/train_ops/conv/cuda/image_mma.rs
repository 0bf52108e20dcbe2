//! The image layer's bf16 forward on tensor cores: an implicit GEMM of a block's pixels (`M`)
//! by the 27 taps padded to 32 (`K`) by the output channels (`N`).
//!
//! The direct kernel ([`super::image_forward`]) spends 27 FP32 multiply-adds an output on CUDA
//! cores (88.8 µs a step on an H100, against ~27 µs at the FP32 rate); here a block's im2col
//! rows are built in shared memory from its staged rows ([`stage_rows`]) and each warp
//! multiplies 16 pixels by every output channel in `16 × 16 × 16` bf16 tiles with f32 sums,
//! which leaves the kernel bound by writing its output.

use burn::tensor::DType;
use burn_cubecl::CubeRuntime;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::ops::permute_nhwc_to_nchw;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::image_rows::{
    LANES, MAX_CHANNELS, MAX_WIDTH, ROWS, SIDE, TILE_WIDTH, block_rows, blocks_per_image, stage_rows,
};

/// The tensor cores' tile side (`m16n16k16`).
pub(super) const TILE: usize = 16;

/// The reduction's length: [`MAX_CHANNELS`] × 9 taps padded to two tiles.
pub(super) const TAPS: usize = 2 * TILE;

/// Warps of a cube, each 16 of a block's pixels: a block's `ROWS × MAX_WIDTH` pixels at most.
pub(super) const WARPS: usize = ROWS * MAX_WIDTH / TILE;

/// Threads of a warp (CUDA's plane width, which the tensor-core tiles assume).
pub(super) const WARP: usize = 32;

/// Blocks a cube convolves in turn with the weights it staged once.
const BLOCKS_PER_CUBE: usize = 4;

/// Whether the tensor-core kernels (this forward and [`super::image_mma_wgrad`]) take a layer
/// of `c_in` input and `c_out` output channels on images `width` pixels wide, of operands in
/// `dtype`: bf16 operands, output channels whole tiles of at most four, and a block's pixels
/// within its warps.
pub fn takes(c_in: usize, c_out: usize, width: usize, dtype: DType) -> bool {
    dtype == DType::BF16
        && c_in <= MAX_CHANNELS
        && width <= MAX_WIDTH
        && c_out.is_multiple_of(TILE)
        && (TILE..=4 * TILE).contains(&c_out)
}

/// On a `(⌈N · blocks_per_image / BLOCKS_PER_CUBE⌉, G)` grid of `(32, WARPS)` cubes, `G`
/// models' layers side by side: cube `(b, g)` stages model `g`'s weights as the GEMM's `[32,
/// C_out]` operand once, then for each of its blocks of [`ROWS`] rows builds the block's `[128,
/// 32]` im2col operand and warp `w` multiplies pixels `16w..16w + 16` by it into f32 tiles,
/// written out through shared memory as `O`. `x: [N, G·C_in, H, W]` and `weight: [G·C_out,
/// C_in, 3, 3]` in any strides; `output: [N, H, W, G·C_out]` contiguous; `E` the operands'
/// tensor-core type.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn mma_forward_kernel<X: Float, W: Float, E: Float, O: Float, N: Size>(
    x: &Tensor<X>,
    weight: &Tensor<W>,
    output: &mut Tensor<O>,
    blocks_per_image: usize,
    #[comptime] c_in: usize,
    #[comptime] c_out: usize,
    #[define(X, W, E, O)] _dtypes: [StorageType; 4],
) {
    let (height, width) = (x.shape(2), x.shape(3));
    let g = CUBE_POS_Y as usize;
    let threads = WARPS * WARP;
    let unit = UNIT_POS as usize;
    let taps = c_in * SIDE * SIDE;
    let mut b = SharedMemory::<E>::new_aligned(TAPS * c_out, 128usize);
    let mut a = SharedMemory::<E>::new_aligned(WARPS * TILE * TAPS, 128usize);
    let mut sums = SharedMemory::<f32>::new_aligned(WARPS * TILE * c_out, 128usize);
    let mut xs = SharedMemory::<Vector<f32, N>>::new((ROWS + 2) * TILE_WIDTH);
    // B[k, o] = weight[g·C_out + o, k] for the taps k = (c·3 + kh)·3 + kw, zeros past them.
    let mut i = unit;
    while i < TAPS * c_out {
        let (k, o) = (i / c_out, i % c_out);
        let mut w = 0.0f32;
        if k < taps {
            let (c, tap) = (k / (SIDE * SIDE), k % (SIDE * SIDE));
            let at = (g * c_out + o) * weight.stride(0)
                + c * weight.stride(1)
                + (tap / SIDE) * weight.stride(2)
                + (tap % SIDE) * weight.stride(3);
            w = f32::cast_from(weight[at]);
        }
        b[i] = E::cast_from(w);
        i += threads;
    }
    // The padded taps' columns of A stay zero for every block.
    let mut i = unit;
    while i < WARPS * TILE * TAPS {
        a[i] = E::cast_from(0.0f32);
        i += threads;
    }
    let blocks = x.shape(0) * blocks_per_image;
    let first = CUBE_POS_X as usize * BLOCKS_PER_CUBE;
    let last = select(first + BLOCKS_PER_CUBE < blocks, first + BLOCKS_PER_CUBE, blocks);
    for block in first..last {
        let (n, y0, rows) = block_rows(block, blocks_per_image, height);
        // The previous block's reads of `xs`, `a` and `sums` finish before they are rewritten.
        sync_cube();
        stage_rows::<X, N>(x, &mut xs, n, y0, rows, g * c_in, c_in);
        sync_cube();
        build_rows::<E, N>(&xs, &mut a, rows * width, width, c_in);
        sync_cube();
        multiply::<E>(&a, &b, &mut sums, c_out);
        sync_cube();
        let o0 = g * c_out;
        write_out::<O>(&sums, output, n, y0, rows * width, width, o0, c_out);
    }
}

/// A's rows: pixel `p < pixels` of the block (row `p / width`, column `p mod width`) gets its
/// taps `c·9 + kh·3 + kw` from the staged rows, the rows past `pixels` zeros.
#[cube]
pub(super) fn build_rows<E: Float, N: Size>(
    xs: &SharedMemory<Vector<f32, N>>,
    a: &mut SharedMemory<E>,
    pixels: usize,
    width: usize,
    #[comptime] c_in: usize,
) {
    let taps = SIDE * SIDE;
    let mut i = UNIT_POS as usize;
    while i < WARPS * TILE * taps {
        let (p, tap) = (i / taps, i % taps);
        let mut v = Vector::<f32, N>::new(0.0f32);
        if p < pixels {
            let (r, px) = (p / width, p % width);
            v = xs[(r + tap / SIDE) * TILE_WIDTH + px + tap % SIDE];
        }
        #[unroll]
        for c in 0..c_in {
            a[p * TAPS + c * taps + tap] = E::cast_from(v[c]);
        }
        i += WARPS * WARP;
    }
}

/// Warp `w`: its 16 pixels' rows of A times B, tile by tile of 16 output channels, each tile
/// stored to the warp's `[16, C_out]` rows of `sums`.
#[cube]
fn multiply<E: Float>(
    a: &SharedMemory<E>,
    b: &SharedMemory<E>,
    sums: &mut SharedMemory<f32>,
    #[comptime] c_out: usize,
) {
    let w = UNIT_POS_Y as usize;
    let a_at = w * TILE * TAPS;
    let s_at = w * TILE * c_out;
    #[unroll]
    for j in 0..c_out / TILE {
        let acc = cmma::Matrix::<f32>::from_value(
            cmma::MatrixIdent::Accumulator,
            TILE,
            TILE,
            TILE,
            cmma::MatrixLayout::Undefined,
            0.0f32,
        );
        #[unroll]
        for kk in 0..TAPS / TILE {
            let lhs = load_tile::<E>(
                &a.slice(a_at + kk * TILE, a_at + TILE * TAPS),
                TAPS as u32,
                cmma::MatrixIdent::A,
                cmma::MatrixLayout::RowMajor,
            );
            let rhs = load_tile::<E>(
                &b.slice(kk * TILE * c_out + j * TILE, TAPS * c_out),
                c_out as u32,
                cmma::MatrixIdent::B,
                cmma::MatrixLayout::RowMajor,
            );
            cmma::execute::<E, E, f32, f32>(&lhs, &rhs, &acc, &acc);
        }
        cmma::store(
            &mut sums.slice_mut(s_at + j * TILE, s_at + TILE * c_out),
            &acc,
            c_out as u32,
            cmma::MatrixLayout::RowMajor,
        );
    }
}

/// The `16 × 16` operand tile `ident` at the start of `slice`, its rows (`RowMajor`) or columns
/// (`ColMajor`) `stride` elements apart.
#[cube]
pub(super) fn load_tile<E: Float>(
    slice: &Slice<E>,
    stride: u32,
    #[comptime] ident: cmma::MatrixIdent,
    layout: cmma::MatrixLayout,
) -> cmma::Matrix<E> {
    cmma::Matrix::<E>::from_slice(ident, TILE, TILE, TILE, layout, slice, stride)
}

/// Warp `w` writes its pixels' rows of `sums` that lie in the block (`p < pixels`) to
/// `output`'s channels `o0..o0 + C_out`, consecutive threads on consecutive channels.
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_out<O: Float>(
    sums: &SharedMemory<f32>,
    output: &mut Tensor<O>,
    n: usize,
    y0: usize,
    pixels: usize,
    width: usize,
    o0: usize,
    #[comptime] c_out: usize,
) {
    let (height, channels) = (output.shape(1), output.shape(3));
    let w = UNIT_POS_Y as usize;
    #[unroll]
    for m in 0..TILE * c_out / WARP {
        let i = m * WARP + UNIT_POS_X as usize;
        let (q, ch) = (i / c_out, i % c_out);
        let p = w * TILE + q;
        if p < pixels {
            let (r, px) = (p / width, p % width);
            let at = ((n * height + y0 + r) * width + px) * channels + o0 + ch;
            output[at] = O::cast_from(sums[w * TILE * c_out + i]);
        }
    }
}

/// `groups` G layers side by side, `x: [N, G·C_in, H, W]` convolved by `weight: [G·C_out,
/// C_in, 3, 3]` ([`takes`]), into a new `[N, G·C_out, H, W]` of `dtype`, channels-last in
/// memory.
pub fn launch<R: CubeRuntime>([x, weight]: [CubeTensor<R>; 2], groups: usize, dtype: DType) -> CubeTensor<R> {
    let [n, channels, height, width] = x.meta.shape().dims::<4>();
    let rows = weight.meta.shape()[0];
    let (c_in, c_out) = (channels / groups, rows / groups);
    let (client, device) = (x.client.clone(), x.device.clone());
    let shape = burn::tensor::Shape::new([n, height, width, rows]);
    let output = empty_device_contiguous_dtype(client.clone(), device, shape, dtype);
    let blocks = blocks_per_image(height);
    let cubes = (n * blocks).div_ceil(BLOCKS_PER_CUBE);
    let dtypes = [x.dtype.into(), weight.dtype.into(), DType::BF16.into(), dtype.into()];
    mma_forward_kernel::launch::<R>(
        &client,
        CubeCount::Static(cubes as u32, groups as u32, 1),
        CubeDim::new_2d(WARP as u32, WARPS as u32),
        LANES,
        x.into_tensor_arg(),
        weight.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        blocks,
        c_in,
        c_out,
        dtypes,
    );
    permute_nhwc_to_nchw(output)
}

#[cfg(test)]
mod tests {
    use burn::tensor::DType;

    /// The kernel takes the experiment's image layer (3 → 64 channels, 32 pixels wide, bf16)
    /// and leaves to the direct kernel what its tiles cannot: output channels that are not
    /// whole tiles or more than four, more input channels than a staged vector, wider images,
    /// operands in another type.
    #[test]
    fn takes_the_bf16_image_layer_in_whole_tiles() {
        assert!(super::takes(3, 64, 32, DType::BF16));
        assert!(super::takes(1, 16, 5, DType::BF16));
        assert!(!super::takes(3, 8, 32, DType::BF16), "fewer channels than a tile");
        assert!(!super::takes(3, 72, 32, DType::BF16), "not whole tiles");
        assert!(!super::takes(3, 80, 32, DType::BF16), "more than four tiles");
        assert!(!super::takes(4, 64, 32, DType::BF16), "input channels");
        assert!(!super::takes(3, 64, 33, DType::BF16), "width");
        assert!(!super::takes(3, 64, 32, DType::F32), "f32 operands");
    }
}
