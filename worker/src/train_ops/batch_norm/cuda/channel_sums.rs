//! BatchNorm's per-channel sums in one pass over the activation each.
//!
//! Through burn's ops every sum was a two-stage reduction (chunks of rows, then the chunk table)
//! over an intermediate that an elementwise kernel first wrote out: `x` and `(x − μ)²` in the
//! forward, `g = dy·[y > 0]` and `g·x̂` in the backward — 8 reduction launches and 4 extra
//! full-size tensors per layer (reductions were 4.9 of 28 ms per profiled step on an H100).
//!
//! Here two kernels do it, without burn's reductions:
//! 1. [`channel_sums_kernel`]: a grid of up to [`MAX_PARTIALS`] cubes (about one resident wave
//!    on an H100) strides over the channels-last rows; each thread accumulates both sums of a
//!    pair for one vector of neighbouring channels in registers (neighbouring threads take
//!    neighbouring channels: coalesced), the cube adds its rows in shared memory and writes one
//!    `[2, C]` partial;
//! 2. one cube per channel adds the `[P, 2, C]` partials (a shared-memory tree) and finishes:
//!    the forward's statistics and running averages ([`super::statistics`]), or the backward's
//!    `[2, C]` sums ([`finish_sums_kernel`]).
//!
//! BatchNorm over groups of the batch (ghost batches): each group of `N/G` images has its own
//! cubes in stage 1 (its rows only) and its own statistics in stage 2, `[G, C]` where the whole
//! batch has `[C]`; with one group the kernels compute exactly the whole-batch statistics.
//!
//! Against the chunk table summed by burn's reductions that this replaced: 62.4–62.6k →
//! 64.7–65.0k img/s pipelined on an H100, together with the weight gradient's group-sum kernel.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::normalize::{gradient, gradient_row, mask};
use crate::train_ops::cube::{KernelTensor, channel_lanes, channels_last, custom_op};

/// Threads per cube of both stages (a power of two: the second stage's tree).
const CUBE_THREADS: usize = 256;

/// First-stage cubes, and so partials per channel, at most: with [`CUBE_THREADS`] threads each
/// about one resident wave on an H100 (132 SMs × 2,048 threads), which keeps enough loads in
/// flight to stream the activations, and few enough partials for the second stage.
const MAX_PARTIALS: usize = 1024;

/// Rows a thread of the first stage loads before summing them.
const UNROLL: usize = 4;

/// Stage 1. Cube `(p, b)` of a `(G·P, B)` grid of `(X, Y)`-thread cubes, `P` cubes per group of
/// `rows_per_group` rows: thread `(i, j)` takes the channel vector `cv = b·X + i` of the
/// channels-last contiguous activations and the rows `p'·Y + j`, `+ P·Y`, … of group
/// `g = p / P` (`p' = p mod P`) and accumulates a pair of sums; the cube adds its `Y` rows in
/// shared memory and writes them to `partials[p, 0 | 1, cv]` (`[G·P, 2, C]`, contiguous):
/// - `backward = false` (only `x` is read): `Σ (x − s)` and `Σ (x − s)²`, shifted by the first
///   row `s = x[0, c, 0, 0]` so that the variance `E[(x−s)²] − E[x−s]²` does not cancel
///   catastrophically when the mean is large against the spread;
/// - `backward = true`: `Σ g` and `Σ g·x̂` with `x̂ = (x − mean[c])·inv_std[c]` and
///   `g = dy·[y > 0]`, the ReLU mask of the forward's `y = max(0, x̂·γ + β)` recomputed as the
///   forward computed it ([`super::normalize::mask`]) rather than read (`mean`, `inv_std`:
///   `[G, C]`, the group's statistics; `gamma`, `beta`: `[C]`).
///
/// The per-channel vectors have `C` channels in any case (their vector count is the row's); `dy`
/// may be bf16 (activations) and `x` too; the sums accumulate in `S` (f32).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn channel_sums_kernel<Y: Float, X: Float, S: Float, N: Size>(
    dy: &Tensor<Vector<Y, N>>,
    x: &Tensor<Vector<X, N>>,
    mean: &Tensor<Vector<S, N>>,
    inv_std: &Tensor<Vector<S, N>>,
    gamma: &Tensor<Vector<S, N>>,
    beta: &Tensor<Vector<S, N>>,
    partials: &mut Tensor<Vector<S, N>>,
    rows_per_group: usize,
    #[comptime] backward: bool,
    #[comptime] pooled: bool,
    #[define(Y, X, S)] _dtypes: [StorageType; 3],
) {
    let row_vectors = gamma.len();
    let cube_rows = CUBE_DIM_Y as usize;
    let cv = CUBE_POS_Y as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    let active = cv < row_vectors;
    let zero = Vector::<S, N>::new(S::from_int(0));
    let mut first_sum = zero;
    let mut second_sum = zero;
    if active {
        let groups = x.len() / row_vectors / rows_per_group;
        let group_cubes = CUBE_COUNT_X as usize / groups;
        let group = CUBE_POS_X as usize / group_cubes;
        let stat = group * row_vectors + cv;
        let mut shift = Vector::<S, N>::cast_from(x[cv]);
        let mut scale = Vector::<S, N>::new(S::from_int(1));
        let mut norm_scale = scale;
        let mut norm_shift = zero;
        if backward {
            shift = mean[stat];
            scale = inv_std[stat];
            norm_scale = gamma[cv] * scale;
            norm_shift = beta[cv];
        }
        let step = group_cubes * cube_rows;
        let end = (group + 1) * rows_per_group;
        let mut row =
            group * rows_per_group + (CUBE_POS_X as usize % group_cubes) * cube_rows + UNIT_POS_Y as usize;
        // UNROLL rows at a time, all loaded before any is summed: one row an iteration left few
        // loads in flight (2.2–2.5 TB/s on an H100).
        let mut dys = Array::<Vector<Y, N>>::new(UNROLL);
        let mut xs = Array::<Vector<X, N>>::new(UNROLL);
        while row + (UNROLL - 1) * step < end {
            #[unroll]
            for k in 0..UNROLL {
                let at = row + k * step;
                xs[k] = x[at * row_vectors + cv];
                if backward {
                    dys[k] = dy[gradient_row(at, x, pooled) * row_vectors + cv];
                }
            }
            #[unroll]
            for k in 0..UNROLL {
                let (first, second) =
                    sum_terms(dys[k], xs[k], shift, scale, norm_scale, norm_shift, backward, pooled);
                first_sum += first;
                second_sum += second;
            }
            row += UNROLL * step;
        }
        while row < end {
            let (dy_at, at) = (gradient_row(row, x, pooled) * row_vectors + cv, row * row_vectors + cv);
            let (first, second) =
                sum_terms(dy[dy_at], x[at], shift, scale, norm_scale, norm_shift, backward, pooled);
            first_sum += first;
            second_sum += second;
            row += step;
        }
    }
    let mut first_shared = SharedMemory::<Vector<S, N>>::new(CUBE_THREADS);
    let mut second_shared = SharedMemory::<Vector<S, N>>::new(CUBE_THREADS);
    let unit = UNIT_POS_Y as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    first_shared[unit] = first_sum;
    second_shared[unit] = second_sum;
    sync_cube();
    if UNIT_POS_Y == 0 && active {
        for j in 1..cube_rows {
            let slot = j * CUBE_DIM_X as usize + UNIT_POS_X as usize;
            first_sum += first_shared[slot];
            second_sum += second_shared[slot];
        }
        let out = CUBE_POS_X as usize * 2 * row_vectors + cv;
        partials[out] = first_sum;
        partials[out + row_vectors] = second_sum;
    }
}

/// One row's terms of the pair of sums of [`channel_sums_kernel`]: `(x − s, (x − s)²)` in the
/// forward, `(g, g·x̂)` in the backward (`g` from a pooled `dy` with `pooled`, [`gradient`]).
#[cube]
#[allow(clippy::too_many_arguments)]
fn sum_terms<Y: Float, X: Float, S: Float, N: Size>(
    dy: Vector<Y, N>,
    x: Vector<X, N>,
    shift: Vector<S, N>,
    scale: Vector<S, N>,
    norm_scale: Vector<S, N>,
    norm_shift: Vector<S, N>,
    #[comptime] backward: bool,
    #[comptime] pooled: bool,
) -> (Vector<S, N>, Vector<S, N>) {
    let centered = Vector::<S, N>::cast_from(x) - shift;
    let mut first = centered;
    let mut second = centered * centered;
    if backward {
        let on = mask(centered, norm_scale, norm_shift);
        first = select_many(on, Vector::<S, N>::cast_from(gradient(dy, pooled)), Vector::new(S::from_int(0)));
        second = first * centered * scale;
    }
    (first, second)
}

/// Stage 2, in a cube per channel `c` of [`CUBE_THREADS`] threads: `(Σ_p partials[p, 0, c],
/// Σ_p partials[p, 1, c])` over the partials `p` in `first..end` of the `[P, 2, C]` partials,
/// valid in every thread. The threads stride over `p`, each warp adds its threads' sums, then
/// every thread the warps' (a tree in shared memory, eight barriers a sum, took 7.5 µs a
/// kernel on an H100).
#[cube]
pub(super) fn sum_partials(partials: &Tensor<f32>, c: usize, first: usize, end: usize) -> (f32, f32) {
    let channels = partials.shape(2);
    let mut shared = SharedMemory::<f32>::new(2 * CUBE_THREADS);
    let unit = UNIT_POS as usize;
    let threads = CUBE_DIM as usize;
    let mut first_sum = 0.0f32;
    let mut second_sum = 0.0f32;
    let mut p = first + unit;
    while p < end {
        first_sum += partials[p * 2 * channels + c];
        second_sum += partials[(p * 2 + 1) * channels + c];
        p += threads;
    }
    first_sum = plane_sum(first_sum);
    second_sum = plane_sum(second_sum);
    let plane_dim = PLANE_DIM as usize;
    if UNIT_POS_PLANE == 0 {
        let plane = unit / plane_dim;
        shared[2 * plane] = first_sum;
        shared[2 * plane + 1] = second_sum;
    }
    sync_cube();
    let mut total_first = 0.0f32;
    let mut total_second = 0.0f32;
    // CUBE_THREADS is a multiple of every plane width.
    for plane in 0..threads / plane_dim {
        total_first += shared[2 * plane];
        total_second += shared[2 * plane + 1];
    }
    // A next call's writes wait for every thread's reads.
    sync_cube();
    (total_first, total_second)
}

/// The backward's `[G, 2, C]` sums (`Σ g`, `Σ g·x̂` of each group) from its `[G·P, 2, C]`
/// partials, a cube per (channel, group).
#[cube(launch)]
fn finish_sums_kernel(partials: &Tensor<f32>, sums: &mut Tensor<f32>) {
    let (c, group) = (CUBE_POS_X as usize, CUBE_POS_Y as usize);
    let channels = partials.shape(2);
    let group_partials = partials.shape(0) / CUBE_COUNT_Y as usize;
    let (first, end) = (group * group_partials, (group + 1) * group_partials);
    let (sum_g, sum_g_x_hat) = sum_partials(partials, c, first, end);
    if UNIT_POS == 0 {
        sums[2 * group * channels + c] = sum_g;
        sums[(2 * group + 1) * channels + c] = sum_g_x_hat;
    }
}

/// Launch geometry of [`channel_sums_kernel`] for `[N, C, H, W]` activations in `groups` groups
/// read `lanes` channels per vector: the cube's `(X, Y)` threads, the `(G·P, B)` grid and `G·P`.
fn sums_geometry(shape: &Shape, lanes: usize, groups: usize) -> (CubeDim, CubeCount, usize) {
    let [n, c, h, w] = shape.dims::<4>();
    let row_vectors = c / lanes;
    let x_threads = row_vectors.min(CUBE_THREADS);
    let y_threads = CUBE_THREADS / x_threads;
    let group_rows = n / groups * h * w;
    let group_partials = group_rows.div_ceil(y_threads).min((MAX_PARTIALS / groups).max(1));
    let partials = group_partials * groups;
    let channel_blocks = row_vectors.div_ceil(x_threads);
    let cube_dim = CubeDim::new_2d(x_threads as u32, y_threads as u32);
    (cube_dim, CubeCount::Static(partials as u32, channel_blocks as u32, 1), partials)
}

/// Launches [`channel_sums_kernel`] on `[dy, x, mean, inv_std, γ, β]` (`[N, C, H, W]`
/// activations in `groups` groups, `[G·C]` statistics, `[C]` γ and β) into `[G·P, 2, C]` f32
/// partials.
pub(super) fn launch_sums<R: CubeRuntime>(
    inputs: [CubeTensor<R>; 6],
    backward: bool,
    groups: usize,
) -> CubeTensor<R> {
    let [dy, x, mean, inv_std, gamma, beta] = inputs;
    let shape = x.meta.shape().clone();
    // A pooled layer's backward reads the pooling's output gradient at each window.
    let pooled = backward && dy.meta.shape()[2] != shape[2];
    let c = shape[1];
    let rows_per_group = shape[0] / groups * shape[2] * shape[3];
    let lanes = channel_lanes(c, dy.dtype.size().max(x.dtype.size()));
    let (cube_dim, cube_count, partials) = sums_geometry(&shape, lanes, groups);
    let (client, device) = (x.client.clone(), x.device.clone());
    let out = empty_device_contiguous_dtype(client.clone(), device, Shape::new([partials, 2, c]), DType::F32);
    let dtypes = [dy.dtype.into(), x.dtype.into(), DType::F32.into()];
    let [dy, x] = [dy, x].map(channels_last);
    let [mean, inv_std, gamma, beta] = [mean, inv_std, gamma, beta].map(into_contiguous);
    channel_sums_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        lanes,
        dy.into_tensor_arg(),
        x.into_tensor_arg(),
        mean.into_tensor_arg(),
        inv_std.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows_per_group,
        backward,
        pooled,
        dtypes,
    );
    out
}

/// A cube per channel and group of [`CUBE_THREADS`] threads (the second stage).
pub(super) fn per_channel_cubes(channels: usize, groups: usize) -> (CubeDim, CubeCount) {
    (CubeDim::new_1d(CUBE_THREADS as u32), CubeCount::Static(channels as u32, groups as u32, 1))
}

/// The backward: its partials, then [`finish_sums_kernel`] into `[G·2, C]` (`shape`).
fn launch_relu_grad_sums<R: CubeRuntime>(
    inputs: [CubeTensor<R>; 6],
    shape: &Shape,
    dtype: DType,
) -> CubeTensor<R> {
    let groups = shape[0] / 2;
    let partials = launch_sums(inputs, true, groups);
    let client = partials.client.clone();
    let sums = empty_device_contiguous_dtype(client.clone(), partials.device.clone(), shape.clone(), dtype);
    let (cube_dim, cube_count) = per_channel_cubes(shape[1], groups);
    finish_sums_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        partials.into_tensor_arg(),
        sums.clone().into_tensor_arg(),
    );
    sums
}

/// The backward's channel sums `[G·2, C]` (`Σ g`, `Σ g·x̂` of each group) of `[dy, x]` with
/// `[mean, inv_std]` (`[G·C]`) and `[γ, β]` (`[C]`): the partials and their sum, two kernels.
pub fn relu_grad_sums<T: KernelTensor>([dy, x]: [T; 2], [mean, inv_std, gamma, beta]: [T; 4]) -> T {
    let groups = mean.shape()[0] / x.shape()[1];
    let (shape, dtype) = (Shape::new([2 * groups, x.shape()[1]]), DType::F32);
    let inputs = [dy, x, mean, inv_std, gamma, beta];
    custom_op::<T, 6>("bn_relu_grad_sums", inputs, shape, dtype, launch_relu_grad_sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every channel vector has a thread column, every row a stride position, no cube exceeds the
    /// shared memory's [`CUBE_THREADS`], and the first stage stays one wave.
    #[test]
    fn sums_geometry_covers_every_channel_vector_and_row() {
        let cases = [
            ([512, 64, 32, 32], 8, 1, (8, 32), (1024, 1)),
            ([512, 64, 32, 32], 8, 8, (8, 32), (1024, 1)),
            ([64, 256, 8, 8], 8, 1, (32, 8), (512, 1)),
            ([64, 256, 8, 8], 8, 8, (32, 8), (512, 1)),
            ([3, 1032, 3, 2], 4, 1, (256, 1), (18, 2)),
            ([3, 1032, 3, 2], 4, 3, (256, 1), (18, 2)),
            ([7, 24, 5, 3], 8, 1, (3, 85), (2, 1)),
            ([7, 24, 5, 3], 8, 7, (3, 85), (7, 1)),
        ];
        for (dims, lanes, groups, (x, y), (partials, blocks)) in cases {
            let (cube_dim, cube_count, count) = sums_geometry(&Shape::new(dims), lanes, groups);
            assert_eq!((cube_dim.x, cube_dim.y), (x, y), "{dims:?}");
            assert!(
                matches!(cube_count, CubeCount::Static(p, b, 1) if (p, b) == (partials, blocks)),
                "{dims:?} in {groups} groups: {cube_count:?}"
            );
            assert_eq!(count, partials as usize);
            let [n, c, h, w] = dims;
            assert!((x * y) as usize <= CUBE_THREADS && count <= MAX_PARTIALS);
            assert!((x * blocks) as usize >= c / lanes);
            assert!(count.is_multiple_of(groups), "every group has the same number of cubes");
            let group_partials = count / groups;
            assert!(
                group_partials == MAX_PARTIALS / groups || group_partials * y as usize >= n / groups * h * w
            );
        }
    }
}
