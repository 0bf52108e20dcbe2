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
//!    the forward's statistics and running averages ([`statistics_kernel`]), or the backward's
//!    `[2, C]` sums ([`finish_sums_kernel`]).
//!
//! Session 8's version (one thread per 64-row chunk and channel vector, the `[2, C, chunks]`
//! table summed by burn's reduction) showed ~28 µs per table reduction in the per-launch profile
//! (most of it the profiler's ~20 µs floor). This version and the weight gradient's group-sum
//! kernel together: 62.4–62.6k → 64.7–65.0k img/s pipelined on an H100 (session 9, call 1).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;

use super::normalize::mask;
use super::{FusionTensor, channel_lanes, channels_last, custom_op, custom_op_many};
use crate::train_ops::{NormConfig, NormStatistics};

/// Threads per cube of both stages (a power of two: the second stage's tree).
const CUBE_THREADS: usize = 256;

/// First-stage cubes, and so partials per channel, at most: with [`CUBE_THREADS`] threads each
/// about one resident wave on an H100 (132 SMs × 2,048 threads), which keeps enough loads in
/// flight to stream the activations, and few enough partials for the second stage.
const MAX_PARTIALS: usize = 1024;

/// Stage 1. Cube `(p, b)` of a `(P, B)` grid of `(X, Y)`-thread cubes: thread `(i, j)` takes the
/// channel vector `cv = b·X + i` of the channels-last contiguous activations and the rows
/// `p·Y + j`, `+ P·Y`, … and accumulates a pair of sums; the cube adds its `Y` rows in shared
/// memory and writes them to `partials[p, 0 | 1, cv]` (`[P, 2, C]`, contiguous):
/// - `backward = false` (only `x` is read): `Σ (x − s)` and `Σ (x − s)²`, shifted by the first
///   row `s = x[0, c, 0, 0]` so that the variance `E[(x−s)²] − E[x−s]²` does not cancel
///   catastrophically when the mean is large against the spread;
/// - `backward = true`: `Σ g` and `Σ g·x̂` with `x̂ = (x − mean[c])·inv_std[c]` and
///   `g = dy·[y > 0]`, the ReLU mask of the forward's `y = max(0, x̂·γ + β)` recomputed as the
///   forward computed it ([`super::normalize::mask`]) rather than read (`mean`, `inv_std`,
///   `gamma`, `beta`: `[C]`).
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
    #[comptime] backward: bool,
    #[define(Y, X, S)] _dtypes: [StorageType; 3],
) {
    let row_vectors = mean.len();
    let cube_rows = CUBE_DIM_Y as usize;
    let cv = CUBE_POS_Y as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    let active = cv < row_vectors;
    let zero = Vector::<S, N>::new(S::from_int(0));
    let mut first_sum = zero;
    let mut second_sum = zero;
    if active {
        let rows = x.len() / row_vectors;
        let mut shift = Vector::<S, N>::cast_from(x[cv]);
        let mut scale = Vector::<S, N>::new(S::from_int(1));
        let mut norm_scale = scale;
        let mut norm_shift = zero;
        if backward {
            shift = mean[cv];
            scale = inv_std[cv];
            norm_scale = gamma[cv] * scale;
            norm_shift = beta[cv];
        }
        let step = CUBE_COUNT_X as usize * cube_rows;
        let mut row = CUBE_POS_X as usize * cube_rows + UNIT_POS_Y as usize;
        while row < rows {
            let at = row * row_vectors + cv;
            let centered = Vector::<S, N>::cast_from(x[at]) - shift;
            if backward {
                let on = mask(centered, norm_scale, norm_shift);
                let g = select_many(on, Vector::<S, N>::cast_from(dy[at]), zero);
                first_sum += g;
                second_sum += g * centered * scale;
            } else {
                first_sum += centered;
                second_sum += centered * centered;
            }
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

/// Stage 2, in a cube per channel `c` of [`CUBE_THREADS`] threads: `Σ_p partials[p, k, c]`
/// (`k` = 0, 1) of the `[P, 2, C]` partials, valid in every thread. The threads stride over `p`,
/// then a tree in shared memory adds their sums.
#[cube]
fn sum_partials(partials: &Tensor<f32>, c: usize, k: usize) -> f32 {
    let channels = partials.shape(2);
    let mut shared = SharedMemory::<f32>::new(CUBE_THREADS);
    let unit = UNIT_POS as usize;
    let threads = CUBE_DIM as usize;
    let mut sum = 0.0f32;
    let mut p = unit;
    while p < partials.shape(0) {
        sum += partials[(p * 2 + k) * channels + c];
        p += threads;
    }
    shared[unit] = sum;
    sync_cube();
    let mut half = threads / 2;
    while half > 0 {
        if unit < half {
            let other = shared[unit + half];
            shared[unit] += other;
        }
        sync_cube();
        half /= 2;
    }
    shared[0]
}

/// The backward's `[2, C]` sums (`Σ g`, `Σ g·x̂`) from its `[P, 2, C]` partials, a cube per channel.
#[cube(launch)]
fn finish_sums_kernel(partials: &Tensor<f32>, sums: &mut Tensor<f32>) {
    let c = CUBE_POS;
    let channels = partials.shape(2);
    let first = sum_partials(partials, c, 0);
    let second = sum_partials(partials, c, 1);
    if UNIT_POS == 0 {
        sums[c] = first;
        sums[channels + c] = second;
    }
}

/// Stage 2 of the forward, a cube per channel `c`: the `[P, 2, C]` partials of the shifted sums
/// (`Σ (x − s)`, `Σ (x − s)²` over `rows` rows, `s` = the first row of the channels-last `x`)
/// added up, then the batch mean, `1/√(σ² + ε)`, `γ·inv_std`, and the running averages blended
/// with `momentum` (the mean shifted by `shift` when `shifted`). All f32 but `x`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn statistics_kernel<X: Float>(
    partials: &Tensor<f32>,
    x: &Tensor<X>,
    gamma: &Tensor<f32>,
    shift: &Tensor<f32>,
    running_mean: &Tensor<f32>,
    running_var: &Tensor<f32>,
    mean: &mut Tensor<f32>,
    inv_std: &mut Tensor<f32>,
    scale: &mut Tensor<f32>,
    running_mean_out: &mut Tensor<f32>,
    running_var_out: &mut Tensor<f32>,
    rows: f32,
    epsilon: f32,
    momentum: f32,
    #[comptime] shifted: bool,
    #[define(X)] _dtype: StorageType,
) {
    let c = CUBE_POS;
    let shifted_sum = sum_partials(partials, c, 0);
    let squares_sum = sum_partials(partials, c, 1);
    if UNIT_POS == 0 {
        let shifted_mean = shifted_sum / rows;
        let raw_var = squares_sum / rows - shifted_mean * shifted_mean;
        let var = select(raw_var > 0.0, raw_var, 0.0);
        let batch_mean = f32::cast_from(x[c]) + shifted_mean;
        let inv = 1.0 / (var + epsilon).sqrt();
        mean[c] = batch_mean;
        inv_std[c] = inv;
        scale[c] = gamma[c] * inv;
        let mut running = batch_mean;
        if shifted {
            running += shift[c];
        }
        running_mean_out[c] = running_mean[c] * (1.0 - momentum) + running * momentum;
        running_var_out[c] = running_var[c] * (1.0 - momentum) + var * momentum;
    }
}

/// Launch geometry of [`channel_sums_kernel`] for `[N, C, H, W]` activations read `lanes`
/// channels per vector: the cube's `(X, Y)` threads and the `(P, B)` grid.
fn sums_geometry(shape: &Shape, lanes: usize) -> (CubeDim, CubeCount, usize) {
    let [n, c, h, w] = shape.dims::<4>();
    let row_vectors = c / lanes;
    let x_threads = row_vectors.min(CUBE_THREADS);
    let y_threads = CUBE_THREADS / x_threads;
    let partials = (n * h * w).div_ceil(y_threads).min(MAX_PARTIALS);
    let channel_blocks = row_vectors.div_ceil(x_threads);
    let cube_dim = CubeDim::new_2d(x_threads as u32, y_threads as u32);
    (cube_dim, CubeCount::Static(partials as u32, channel_blocks as u32, 1), partials)
}

/// Launches [`channel_sums_kernel`] on `[dy, x, mean, inv_std, γ, β]` (`[N, C, H, W]`
/// activations, `[C]` per-channel vectors) into `[P, 2, C]` f32 partials.
fn launch_sums<R: CubeRuntime>(inputs: [CubeTensor<R>; 6], backward: bool) -> CubeTensor<R> {
    let [dy, x, mean, inv_std, gamma, beta] = inputs;
    let shape = x.meta.shape().clone();
    let c = shape[1];
    let lanes = channel_lanes(c, dy.dtype.size().max(x.dtype.size()));
    let (cube_dim, cube_count, partials) = sums_geometry(&shape, lanes);
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
        backward,
        dtypes,
    );
    out
}

/// A cube per channel of [`CUBE_THREADS`] threads (the second stage).
fn per_channel_cubes(channels: usize) -> (CubeDim, CubeCount) {
    (CubeDim::new_1d(CUBE_THREADS as u32), CubeCount::Static(channels as u32, 1, 1))
}

/// The forward: the shifted sums, then [`statistics_kernel`] on `[partials, x, γ, shift (or
/// anything when not `shifted`), running mean, running variance]`.
fn launch_statistics<R: CubeRuntime>(
    inputs: [CubeTensor<R>; 5],
    config: NormConfig,
    shifted: bool,
) -> [CubeTensor<R>; 5] {
    let [x, gamma, shift, running_mean, running_var] = inputs;
    let (client, device) = (x.client.clone(), x.device.clone());
    let [n, channels, h, w] = x.meta.shape().dims::<4>();
    // The forward reads only `x`: `x` fills the unread `dy` slot, `γ` the unread per-channel ones.
    let unread = || gamma.clone();
    let partials = launch_sums([x.clone(), x.clone(), unread(), unread(), unread(), unread()], false);
    let outputs: [CubeTensor<R>; 5] = std::array::from_fn(|_| {
        empty_device_contiguous_dtype(client.clone(), device.clone(), Shape::new([channels]), DType::F32)
    });
    let (cube_dim, cube_count) = per_channel_cubes(channels);
    let x_dtype = x.dtype.into();
    let x = channels_last(x);
    let [gamma, shift, running_mean, running_var] =
        [gamma, shift, running_mean, running_var].map(into_contiguous);
    statistics_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        partials.into_tensor_arg(),
        x.into_tensor_arg(),
        gamma.into_tensor_arg(),
        shift.into_tensor_arg(),
        running_mean.into_tensor_arg(),
        running_var.into_tensor_arg(),
        outputs[0].clone().into_tensor_arg(),
        outputs[1].clone().into_tensor_arg(),
        outputs[2].clone().into_tensor_arg(),
        outputs[3].clone().into_tensor_arg(),
        outputs[4].clone().into_tensor_arg(),
        (n * h * w) as f32,
        config.epsilon as f32,
        config.momentum as f32,
        shifted,
        x_dtype,
    );
    outputs
}

/// The backward: its partials, then [`finish_sums_kernel`] into `[2, C]`.
fn launch_relu_grad_sums<R: CubeRuntime>(
    inputs: [CubeTensor<R>; 6],
    shape: &Shape,
    dtype: DType,
) -> CubeTensor<R> {
    let partials = launch_sums(inputs, true);
    let client = partials.client.clone();
    let sums = empty_device_contiguous_dtype(client.clone(), partials.device.clone(), shape.clone(), dtype);
    let (cube_dim, cube_count) = per_channel_cubes(shape[1]);
    finish_sums_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        partials.into_tensor_arg(),
        sums.clone().into_tensor_arg(),
    );
    sums
}

/// [`crate::train_ops::TrainOps::batch_norm_statistics`] on burn's fused CubeCL backends: the
/// shifted sums' partials (one kernel), then every per-channel result (one kernel).
pub fn batch_norm_statistics<B, R, F, I, BT>(
    x: FusionTensor<R>,
    gamma: FusionTensor<R>,
    mean_shift: Option<FusionTensor<R>>,
    [running_mean, running_var]: [FusionTensor<R>; 2],
    config: NormConfig,
) -> NormStatistics<B>
where
    B: Backend<FloatTensorPrimitive = FusionTensor<R>>,
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let c = x.shape[1];
    let shifted = mean_shift.is_some();
    let shift = mean_shift.unwrap_or_else(|| gamma.clone());
    let inputs = [x, gamma, shift, running_mean, running_var];
    let out = (Shape::new([c]), DType::F32);
    let launch = Box::new(move |t| launch_statistics(t, config, shifted));
    let [mean, inv_std, scale, running_mean, running_var] = custom_op_many::<R, F, I, BT, 5, 5>(
        "bn_statistics",
        inputs,
        std::array::from_fn(|_| out.clone()),
        launch,
    );
    NormStatistics { mean, inv_std, scale, running_mean, running_var }
}

/// The backward's channel sums `[2, C]` (`Σ g`, `Σ g·x̂`) of `[dy, x]` with `[mean, inv_std,
/// γ, β]` (`[C]`): the partials and their sum, two kernels.
pub fn relu_grad_sums<R, F, I, BT>(
    [dy, x]: [FusionTensor<R>; 2],
    [mean, inv_std, gamma, beta]: [FusionTensor<R>; 4],
) -> FusionTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let (shape, dtype) = (Shape::new([2, x.shape[1]]), DType::F32);
    let inputs = [dy, x, mean, inv_std, gamma, beta];
    custom_op::<R, F, I, BT, 6>("bn_relu_grad_sums", inputs, shape, dtype, launch_relu_grad_sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every channel vector has a thread column, every row a stride position, no cube exceeds the
    /// shared memory's [`CUBE_THREADS`], and the first stage stays one wave.
    #[test]
    fn sums_geometry_covers_every_channel_vector_and_row() {
        let cases = [
            ([512, 64, 32, 32], 8, (8, 32), (1024, 1)),
            ([64, 256, 8, 8], 8, (32, 8), (512, 1)),
            ([3, 1032, 3, 2], 4, (256, 1), (18, 2)),
            ([7, 24, 5, 3], 8, (3, 85), (2, 1)),
        ];
        for (dims, lanes, (x, y), (partials, blocks)) in cases {
            let (cube_dim, cube_count, count) = sums_geometry(&Shape::new(dims), lanes);
            assert_eq!((cube_dim.x, cube_dim.y), (x, y), "{dims:?}");
            assert!(matches!(cube_count, CubeCount::Static(p, b, 1) if (p, b) == (partials, blocks)));
            assert_eq!(count, partials as usize);
            let [n, c, h, w] = dims;
            assert!((x * y) as usize <= CUBE_THREADS && count <= MAX_PARTIALS);
            assert!((x * blocks) as usize >= c / lanes);
            assert!(count == MAX_PARTIALS || count * y as usize >= n * h * w);
        }
    }
}
