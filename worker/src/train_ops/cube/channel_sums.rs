//! BatchNorm's per-channel sums in one pass over the activation each.
//!
//! Through burn's ops every sum was a two-stage reduction (chunks of rows, then the chunk table)
//! over an intermediate that an elementwise kernel first wrote out: `x` and `(x − μ)²` in the
//! forward, `g = dy·[y > 0]` and `g·x̂` in the backward — 8 reduction launches and 4 extra
//! full-size tensors per layer (reductions were 4.9 of 28 ms per profiled step on an H100).
//! Here one thread per (chunk of [`CHUNK_ROWS`] rows, channel) walks its rows and accumulates
//! both sums of a pair in registers; burn sums the small `[2, C, chunks]` table (contiguous along
//! the chunks). Neighbouring threads take neighbouring channels: coalesced on channels-last
//! activations, which burn's convolutions produce.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::{empty_device_contiguous_dtype, empty_device_dtype};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement};
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use super::{FusionTensor, channel_lanes, channels_last, custom_op, custom_op_many};
use crate::train_ops::{NormConfig, NormStatistics, unwrap, wrap};

/// Rows each thread sums.
const CHUNK_ROWS: usize = 64;

/// One thread per (chunk, `N` neighbouring channels) walks the chunk's rows of the
/// channels-last contiguous activations and writes the pair of sums to `partials[0 | 1, c, chunk]`:
/// - `backward = false` (only `x` is read): `Σ (x − s)` and `Σ (x − s)²`, shifted by the first
///   row `s = x[0, c, 0, 0]` so that the variance `E[(x−s)²] − E[x−s]²` does not cancel
///   catastrophically when the mean is large against the spread;
/// - `backward = true`: `Σ g` and `Σ g·x̂` with `g = dy·[y ≠ 0]` (`y` a ReLU output) and
///   `x̂ = (x − mean[c])·inv_std[c]` (`mean`, `inv_std`: `[C]`).
///
/// `dy` and `y` may be bf16 (activations) and `x` too; the sums accumulate in `S`, the dtype of
/// the statistics and the table (f32).
#[cube(launch)]
fn channel_sums_kernel<Y: Float, X: Float, S: Float, N: Size>(
    dy: &Tensor<Vector<Y, N>>,
    y: &Tensor<Vector<Y, N>>,
    x: &Tensor<Vector<X, N>>,
    mean: &Tensor<Vector<S, N>>,
    inv_std: &Tensor<Vector<S, N>>,
    partials: &mut Tensor<S>,
    #[comptime] backward: bool,
    #[define(Y, X, S)] _dtypes: [StorageType; 3],
) {
    let lanes = x.vector_size();
    let row_vectors = partials.shape(1) / lanes;
    let rows = x.len() / row_vectors;
    let pos = ABSOLUTE_POS;
    if pos >= partials.shape(2) * row_vectors {
        terminate!();
    }
    let cv = pos % row_vectors;
    let chunk = pos / row_vectors;
    let first = chunk * CHUNK_ROWS;
    let end = select(first + CHUNK_ROWS < rows, first + CHUNK_ROWS, rows);
    let zero = Vector::<S, N>::new(S::from_int(0));
    let mut shift = Vector::<S, N>::cast_from(x[cv]);
    let mut scale = Vector::<S, N>::new(S::from_int(1));
    if backward {
        shift = mean[cv];
        scale = inv_std[cv];
    }
    let mut first_sum = zero;
    let mut second_sum = zero;
    for row in first..end {
        let at = row * row_vectors + cv;
        let centered = Vector::<S, N>::cast_from(x[at]) - shift;
        if backward {
            let active = Vector::<bool, N>::cast_from(y[at]);
            let g = select_many(active, Vector::<S, N>::cast_from(dy[at]), zero);
            first_sum += g;
            second_sum += g * centered * scale;
        } else {
            first_sum += centered;
            second_sum += centered * centered;
        }
    }
    #[unroll]
    for lane in 0..lanes {
        let out = (cv * lanes + lane) * partials.stride(1) + chunk * partials.stride(2);
        partials[out] = first_sum[lane];
        partials[out + partials.stride(0)] = second_sum[lane];
    }
}

/// `[2, C, chunks]` partial-sum table for `x: [N, C, H, W]`.
fn partials_shape(x: &Shape) -> Shape {
    let [n, c, h, w] = x.dims::<4>();
    Shape::new([2, c, (n * h * w).div_ceil(CHUNK_ROWS)])
}

/// Launches [`channel_sums_kernel`] on `[dy, y, x, mean, inv_std]` into a table of `dtype`.
fn launch_sums<R: CubeRuntime>(
    [dy, y, x, mean, inv_std]: [CubeTensor<R>; 5],
    shape: &Shape,
    dtype: DType,
    backward: bool,
) -> CubeTensor<R> {
    let partials = empty_device_dtype(x.client.clone(), x.device.clone(), shape.clone(), dtype);
    let lanes = channel_lanes(shape[1], dy.dtype.size().max(x.dtype.size()));
    let threads = shape[1] / lanes * shape[2];
    let client = x.client.clone();
    let cube_dim = CubeDim::new(&client, threads);
    let cube_count = calculate_cube_count_elemwise(&client, threads, cube_dim);
    let dtypes = [dy.dtype.into(), x.dtype.into(), dtype.into()];
    let [dy, y, x] = [dy, y, x].map(channels_last);
    let [mean, inv_std] = [mean, inv_std].map(into_contiguous);
    channel_sums_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        lanes,
        dy.into_tensor_arg(),
        y.into_tensor_arg(),
        x.into_tensor_arg(),
        mean.into_tensor_arg(),
        inv_std.into_tensor_arg(),
        partials.clone().into_tensor_arg(),
        backward,
        dtypes,
    );
    partials
}

/// The forward sums: only `x` is read (it fills the unused activation slots, an unread
/// one-element table the statistics' slots).
fn launch_moments<R: CubeRuntime>([x]: [CubeTensor<R>; 1], shape: &Shape, dtype: DType) -> CubeTensor<R> {
    let c = shape[1];
    let unread = empty_device_dtype(x.client.clone(), x.device.clone(), Shape::new([c]), dtype);
    launch_sums([x.clone(), x.clone(), x.clone(), unread.clone(), unread], shape, dtype, false)
}

fn launch_relu_norm_grad<R: CubeRuntime>(
    inputs: [CubeTensor<R>; 5],
    shape: &Shape,
    dtype: DType,
) -> CubeTensor<R> {
    launch_sums(inputs, shape, dtype, true)
}

/// Per channel `c` (one thread each), from the summed table `sums: [2, C]` of the forward's
/// shifted sums (`Σ (x − s)`, `Σ (x − s)²` over `rows` rows, `s` = the first row of the
/// channels-last `x`): the batch mean, `1/√(σ² + ε)`, `γ·inv_std`, and the running averages
/// blended with `momentum` (the mean shifted by `shift` when `shifted`). All f32 but `x`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn statistics_kernel<X: Float>(
    sums: &Tensor<f32>,
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
    let c = ABSOLUTE_POS;
    if c >= mean.len() {
        terminate!();
    }
    let shifted_mean = sums[c] / rows;
    let raw_var = sums[mean.len() + c] / rows - shifted_mean * shifted_mean;
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

/// Launches [`statistics_kernel`] on `[sums [2, C, 1], x, γ, shift (or anything when not
/// `shifted`), running mean, running variance]`.
fn launch_statistics<R: CubeRuntime>(
    inputs: [CubeTensor<R>; 6],
    rows: usize,
    config: NormConfig,
    shifted: bool,
) -> [CubeTensor<R>; 5] {
    let [sums, x, gamma, shift, running_mean, running_var] = inputs;
    let (client, device) = (x.client.clone(), x.device.clone());
    let channels = gamma.meta.shape()[0];
    let outputs: [CubeTensor<R>; 5] = std::array::from_fn(|_| {
        empty_device_contiguous_dtype(client.clone(), device.clone(), Shape::new([channels]), DType::F32)
    });
    let cube_dim = CubeDim::new(&client, channels);
    let cube_count = calculate_cube_count_elemwise(&client, channels, cube_dim);
    let x_dtype = x.dtype.into();
    let x = channels_last(x);
    let [sums, gamma, shift, running_mean, running_var] =
        [sums, gamma, shift, running_mean, running_var].map(into_contiguous);
    statistics_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        sums.into_tensor_arg(),
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
        rows as f32,
        config.epsilon as f32,
        config.momentum as f32,
        shifted,
        x_dtype,
    );
    outputs
}

/// [`crate::train_ops::TrainOps::batch_norm_statistics`] on burn's fused CubeCL backends: the
/// shifted sums (one kernel), their table summed (one burn reduction), every per-channel result
/// (one kernel).
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
    let [n, c, h, w] = x.shape.dims::<4>();
    let (shape, dtype) = (partials_shape(&x.shape), DType::F32);
    let partials = custom_op::<R, F, I, BT, 1>("bn_moments", [x.clone()], shape, dtype, launch_moments);
    let sums = unwrap(wrap::<B, 3>(partials).sum_dim(2));
    let shifted = mean_shift.is_some();
    let shift = mean_shift.unwrap_or_else(|| gamma.clone());
    let inputs = [sums, x, gamma, shift, running_mean, running_var];
    let out = (Shape::new([c]), DType::F32);
    let launch = Box::new(move |t| launch_statistics(t, n * h * w, config, shifted));
    let [mean, inv_std, scale, running_mean, running_var] = custom_op_many::<R, F, I, BT, 6, 5>(
        "bn_statistics",
        inputs,
        std::array::from_fn(|_| out.clone()),
        launch,
    );
    NormStatistics { mean, inv_std, scale, running_mean, running_var }
}

/// The backward's channel sums `[2, C, 1]` (`Σ g`, `Σ g·x̂`) of `[dy, y, x]` with `[mean,
/// inv_std]` (`[C]`): one kernel, then one burn reduction.
pub fn relu_grad_sums<B, R, F, I, BT>(
    [dy, y, x]: [FusionTensor<R>; 3],
    [mean, inv_std]: [FusionTensor<R>; 2],
) -> FusionTensor<R>
where
    B: Backend<FloatTensorPrimitive = FusionTensor<R>>,
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let (shape, dtype) = (partials_shape(&x.shape), mean.dtype);
    let inputs = [dy, y, x, mean, inv_std];
    let partials =
        custom_op::<R, F, I, BT, 5>("bn_relu_grad_sums", inputs, shape, dtype, launch_relu_norm_grad);
    unwrap(wrap::<B, 3>(partials).sum_dim(2))
}
