//! The weight gradient's split-K GEMM `Σ_g lhs[g]·rhs[g]` as one custom operation: burn's
//! autotuned batched matmul (bf16 operands, f32 partial products `[G, M, N]`), then the group
//! sum as one kernel (per model when J fused models' groups lie one after the other).
//!
//! burn's `sum_dim(0)` over the `[G, M, N]` partials (37.7 MB per layer at batch 512) took
//! 40–60 µs per layer in the per-launch profile of an H100 (~20 µs of that the profiler's own
//! floor). [`group_sum_kernel`] splits the groups across a cube's rows and adds them in shared
//! memory, with coalesced loads along whichever axis of the products has unit stride: the
//! matmul writes them row-major, column-major or pitched depending on the shapes, and a copy to
//! one layout first cost 113 µs per block-1 layer (`docs/results/2026-11-27-h100-bn-partials/`).

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::kernel::matmul::{MatmulStrategy, matmul};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::ops::permute;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::train_ops::cube::{KernelTensor, custom_op};

/// Vectors of a row each cube covers (its X threads).
const CUBE_VECTORS: usize = 16;
/// Threads along the groups (the cube's Y threads): each thread adds every `GROUP_THREADS`-th
/// group of its vector.
const GROUP_THREADS: usize = 16;

/// `out[s, r, c] = Σ_g partials[s·G + g, r, c]` for the strided `partials` (`N` f32 per vector;
/// strides in vectors, unit stride along `c`) into the contiguous `out` (`[J, R, C]`,
/// `row_vectors` vectors per row, `sum_vectors` per sum): cube `b`, thread `(i, j)` adds the
/// groups `j`, `j + Y`, … of output vector `b·X + i`, then row `j = 0` adds the cube's `Y` sums
/// from shared memory.
#[cube(launch)]
fn group_sum_kernel<N: Size>(
    partials: &Tensor<Vector<f32, N>>,
    out: &mut Tensor<Vector<f32, N>>,
    groups: usize,
    group_stride: usize,
    row_stride: usize,
    row_vectors: usize,
    sum_vectors: usize,
) {
    let v = CUBE_POS * CUBE_VECTORS + UNIT_POS_X as usize;
    let active = v < out.len();
    let mut sum = Vector::<f32, N>::new(0.0);
    if active {
        let s = v / sum_vectors;
        let w = v % sum_vectors;
        let first = s * groups * group_stride + (w / row_vectors) * row_stride + w % row_vectors;
        let mut g = UNIT_POS_Y as usize;
        while g < groups {
            sum += partials[g * group_stride + first];
            g += GROUP_THREADS;
        }
    }
    let mut shared = SharedMemory::<Vector<f32, N>>::new(CUBE_VECTORS * GROUP_THREADS);
    shared[UNIT_POS_Y as usize * CUBE_VECTORS + UNIT_POS_X as usize] = sum;
    sync_cube();
    if UNIT_POS_Y == 0 && active {
        for j in 1..GROUP_THREADS {
            sum += shared[j * CUBE_VECTORS + UNIT_POS_X as usize];
        }
        out[v] = sum;
    }
}

/// `[lhs [J·G, M, K], rhs [J·G, K, N]] → [M, N]` (`shape` of rank 2, J = 1) or `[J, M, N]` f32:
/// the batched matmul, then [`group_sum_kernel`] over the products as they lie in memory. The matmul writes the products row-major, or
/// column-major when it computes the transposed problem (it does for the weight gradient's
/// transposed `dYᵀ`), each group's block possibly pitched: the sum runs along the unit-stride
/// axis and keeps that orientation (a transposed view, no copy). Products with no unit-stride
/// axis are made contiguous first.
fn launch<R: CubeRuntime>([lhs, rhs]: [CubeTensor<R>; 2], shape: &Shape, dtype: DType) -> CubeTensor<R> {
    let sums = match shape.num_dims() {
        3 => shape.dims::<3>()[0],
        _ => 1,
    };
    let products = matmul(lhs, rhs, None, MatmulStrategy::default(), dtype)
        .unwrap_or_else(|err| panic!("no matmul kernel for these operands: {err:?}"));
    let [batches, m, n] = products.meta.shape().dims::<3>();
    let groups = batches / sums;
    let strides = products.meta.strides()[..].to_vec();
    // (rows, columns, row stride) of each group's block with unit-stride columns.
    let (products, transposed, rows, columns, row_stride) = match strides[..] {
        [_, s1, 1] => (products, false, m, n, s1),
        [_, 1, s2] => (products, true, n, m, s2),
        _ => (into_contiguous(products), false, m, n, n),
    };
    let group_stride = products.meta.strides()[0];
    let lanes = [4, 2, 1]
        .into_iter()
        .find(|l| {
            columns.is_multiple_of(*l) && row_stride.is_multiple_of(*l) && group_stride.is_multiple_of(*l)
        })
        .unwrap_or(1);
    let client = products.client.clone();
    let memory_shape = match sums {
        1 => Shape::new([rows, columns]),
        _ => Shape::new([sums, rows, columns]),
    };
    let out = empty_device_contiguous_dtype(client.clone(), products.device.clone(), memory_shape, dtype);
    let cubes = (sums * rows * columns / lanes).div_ceil(CUBE_VECTORS);
    group_sum_kernel::launch::<R>(
        &client,
        CubeCount::Static(cubes as u32, 1, 1),
        CubeDim::new_2d(CUBE_VECTORS as u32, GROUP_THREADS as u32),
        lanes,
        products.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        groups,
        group_stride / lanes,
        row_stride / lanes,
        columns / lanes,
        rows * columns / lanes,
    );
    match (transposed, sums) {
        (false, _) => out,
        (true, 1) => permute(out, &[1, 0]),
        (true, _) => permute(out, &[0, 2, 1]),
    }
}

/// [`crate::train_ops::ConvOps::summed_matmul_to_f32`] (`sums` = 1: `[M, N]`) and
/// [`crate::train_ops::ConvOps::grouped_summed_matmul_to_f32`] (`[sums, M, N]`) on burn's fused
/// CubeCL backends.
pub fn summed_matmul_to_f32<T: KernelTensor>(lhs: T, rhs: T, sums: usize) -> T {
    let m = lhs.shape().dims::<3>()[1];
    let n = rhs.shape().dims::<3>()[2];
    let shape = match sums {
        1 => Shape::new([m, n]),
        _ => Shape::new([sums, m, n]),
    };
    custom_op::<T, 2>("summed_matmul_to_f32", [lhs, rhs], shape, DType::F32, launch)
}
