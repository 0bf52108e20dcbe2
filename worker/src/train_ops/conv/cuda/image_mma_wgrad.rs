//! The image layer's bf16 weight gradient on tensor cores: `dW = dYᵀ · A` over the batch's
//! pixels, `A` a block's im2col rows (the 27 taps padded to 32) built in shared memory.
//!
//! The CUDA-core kernel ([`super::image_wgrad`]) spends 27 FP32 multiply-adds an output
//! gradient element (108 µs a step on an H100, bound by staging each block before its
//! barrier); here each of a cube's warps holds one `16 × 16` tile of the `[C_out, 32]` gradient
//! as an f32 fragment across all its blocks, and adds a block's 128 pixels to it in eight
//! `16 × 16 × 16` bf16 products, which leaves the kernel bound by reading the output gradient.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::image_mma::{TAPS, TILE, WARP, WARPS, build_rows, load_tile};
use super::image_rows::{LANES, ROWS, SIDE, TILE_WIDTH, block_rows, blocks_per_image, stage_rows};
use super::image_wgrad::sum_partials;

/// First-stage cubes, and so partial sums per weight: two cubes an SM on an H100.
const PARTIALS: usize = 264;

/// A thread's vector loads of a block's output gradient: its `128 × C_out` bf16 (at most four
/// tiles of channels) in vectors of [`LANES`] over the cube's threads.
const STAGED_LOADS: usize = WARPS * TILE * 4 * TILE / LANES / (WARPS * WARP);

/// Stage 1 on a `(PARTIALS, G)` grid of `(32, WARPS)` cubes, `G` models' layers side by side:
/// cube `(p, g)` takes the blocks `p, p + PARTIALS, …` of [`ROWS`] rows of model `g`'s images,
/// stages each block's output gradient as `D: [128, C_out]` (zeros past its pixels) and its
/// im2col rows `A: [128, 32]`, and warp `w` (of the `C_out / 16 × 2` tiles) adds `Dᵀ · A` of its
/// tile `(w / 2, w mod 2)` to its fragment; the cube's tiles go to `partials[p, g, o, k]`
/// (`k < C_in · 9`). `x`: `[N, G·C_in, H, W]`, any strides; `dy`: `[N, H, W, G·C_out]`
/// contiguous, [`LANES`] channels a vector; `E` the operands' tensor-core type.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn mma_partials_kernel<X: Float, Y: Float, E: Float, N: Size>(
    x: &Tensor<X>,
    dy: &Tensor<Vector<Y, N>>,
    partials: &mut Tensor<f32>,
    blocks_per_image: usize,
    #[comptime] c_in: usize,
    #[comptime] c_out: usize,
    #[define(X, Y, E)] _dtypes: [StorageType; 3],
) {
    let (height, width) = (x.shape(2), x.shape(3));
    let (g, groups) = (CUBE_POS_Y as usize, CUBE_COUNT_Y as usize);
    let threads = WARPS * WARP;
    let unit = UNIT_POS as usize;
    let w = UNIT_POS_Y as usize;
    let tiles = c_out / TILE * (TAPS / TILE);
    let (ti, tj) = (w / (TAPS / TILE), w % (TAPS / TILE));
    let mut a = SharedMemory::<E>::new_aligned(WARPS * TILE * TAPS, 128usize);
    let mut d = SharedMemory::<E>::new_aligned(WARPS * TILE * c_out, 128usize);
    let mut xs = SharedMemory::<Vector<f32, N>>::new((ROWS + 2) * TILE_WIDTH);
    // The padded taps' columns of A stay zero for every block.
    let mut i = unit;
    while i < WARPS * TILE * TAPS {
        a[i] = E::cast_from(0.0f32);
        i += threads;
    }
    let acc = cmma::Matrix::<f32>::from_value(
        cmma::MatrixIdent::Accumulator,
        TILE,
        TILE,
        TILE,
        cmma::MatrixLayout::Undefined,
        0.0f32,
    );
    let vectors = c_out / LANES;
    let blocks = x.shape(0) * blocks_per_image;
    let mut block = CUBE_POS_X as usize;
    while block < blocks {
        let (n, y0, rows) = block_rows(block, blocks_per_image, height);
        let first = (n * height + y0) * width * groups * vectors + g * vectors;
        let count = rows * width * vectors;
        // All of a thread's loads in flight before the input rows are staged and any is stored.
        let mut loaded = Array::<Vector<Y, N>>::new(STAGED_LOADS);
        #[unroll]
        for u in 0..STAGED_LOADS {
            let k = unit + u * threads;
            if k < count {
                loaded[u] = dy[first + (k / vectors) * groups * vectors + k % vectors];
            }
        }
        // The previous block's products finish before `d`, `xs` and `a` are rewritten.
        sync_cube();
        stage_rows::<X, N>(x, &mut xs, n, y0, rows, g * c_in, c_in);
        #[unroll]
        for u in 0..STAGED_LOADS {
            let k = unit + u * threads;
            if k < WARPS * TILE * vectors {
                #[unroll]
                for lane in 0..LANES {
                    let mut v = 0.0f32;
                    if k < count {
                        v = f32::cast_from(loaded[u][lane]);
                    }
                    d[k * LANES + lane] = E::cast_from(v);
                }
            }
        }
        sync_cube();
        build_rows::<E, N>(&xs, &mut a, rows * width, width, c_in);
        sync_cube();
        if w < tiles {
            #[unroll]
            for kk in 0..WARPS {
                // Dᵀ's tile (ti, kk): D's pixels kk·16.. and channels ti·16.., column-major.
                let lhs = load_tile::<E>(
                    &d.slice(kk * TILE * c_out + ti * TILE, WARPS * TILE * c_out),
                    c_out as u32,
                    cmma::MatrixIdent::A,
                    cmma::MatrixLayout::ColMajor,
                );
                let rhs = load_tile::<E>(
                    &a.slice(kk * TILE * TAPS + tj * TILE, WARPS * TILE * TAPS),
                    TAPS as u32,
                    cmma::MatrixIdent::B,
                    cmma::MatrixLayout::RowMajor,
                );
                cmma::execute::<E, E, f32, f32>(&lhs, &rhs, &acc, &acc);
            }
        }
        block += CUBE_COUNT_X as usize;
    }
    write_partial(&acc, partials, tiles, c_in, c_out);
}

/// The cube's tiles through shared memory to its `[C_out, C_in · 9]` partial (the padded taps
/// dropped), consecutive threads on consecutive weights.
#[cube]
fn write_partial(
    acc: &cmma::Matrix<f32>,
    partials: &mut Tensor<f32>,
    tiles: usize,
    #[comptime] c_in: usize,
    #[comptime] c_out: usize,
) {
    let (g, groups) = (CUBE_POS_Y as usize, CUBE_COUNT_Y as usize);
    let w = UNIT_POS_Y as usize;
    let taps = c_in * SIDE * SIDE;
    let mut scratch = SharedMemory::<f32>::new_aligned(WARPS * TILE * TILE, 128usize);
    if w < tiles {
        cmma::store(
            &mut scratch.slice_mut(w * TILE * TILE, WARPS * TILE * TILE),
            acc,
            TILE as u32,
            cmma::MatrixLayout::RowMajor,
        );
    }
    sync_cube();
    let first = (CUBE_POS_X as usize * groups + g) * c_out * taps;
    let mut item = UNIT_POS as usize;
    while item < c_out * taps {
        let (o, k) = (item / taps, item % taps);
        let tile = (o / TILE) * (TAPS / TILE) + k / TILE;
        partials[first + item] = scratch[tile * TILE * TILE + (o % TILE) * TILE + k % TILE];
        item += WARPS * WARP;
    }
}

/// Both stages on `groups` G layers side by side, `x: [N, G·C_in, H, W]` and `dy: [N, H, W,
/// G·C_out]` contiguous ([`takes`]): `[G·C_out, C_in, 3, 3]` f32, contiguous.
pub fn launch<R: CubeRuntime>([x, dy]: [CubeTensor<R>; 2], shape: &Shape, groups: usize) -> CubeTensor<R> {
    let [rows, c_in, _, _] = shape.dims::<4>();
    let c_out = rows / groups;
    let height = x.meta.shape()[2];
    let (client, device) = (x.client.clone(), x.device.clone());
    let weights = shape.num_elements();
    let partials = empty_device_contiguous_dtype(
        client.clone(),
        device.clone(),
        Shape::new([PARTIALS, weights]),
        DType::F32,
    );
    let dtypes = [x.dtype.into(), dy.dtype.into(), DType::BF16.into()];
    mma_partials_kernel::launch::<R>(
        &client,
        CubeCount::Static(PARTIALS as u32, groups as u32, 1),
        CubeDim::new_2d(WARP as u32, WARPS as u32),
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
