//! BatchNorm + ReLU's two elementwise passes, each one kernel that reads any layout and dtype and
//! writes channels-last in the dtype the next layer wants.
//!
//! - forward `y = max(0, (x − mean)·scale + beta)`: `x` is the convolution's output (f32, or bf16
//!   with bf16 activations), `y` goes out in the activation dtype, so the next convolution gets
//!   its bf16 operand without a cast kernel;
//! - backward `dx = γ·inv_std·(g − Σg/M − x̂·Σg·x̂/M)` with `g = dy·[y > 0]`, in `x`'s dtype,
//!   the per-channel terms computed from the channel sums in the kernel (no per-channel burn
//!   operations between the reduction and this pass), `dγ` and `dβ` written alongside. The ReLU
//!   mask comes from `x` with the forward's own arithmetic ([`mask`]): `y` is not read (here and
//!   in the backward's channel sums: 2 of 7 full-size passes per layer less).
//!
//! Per-channel vectors (`[C]`, f32) carry the statistics, `[G, C]` when the batch is normalised
//! in `G` groups (a thread finds its group from its row); the arithmetic runs in their dtype.
//! Activations are read channels-last (burn's convolutions write that layout; anything else is
//! copied first) and outputs written `[N, H, W, C]` in memory, viewed as `[N, C, H, W]` — the
//! layout burn's convolutions read without a copy. So both passes are flat elementwise loops
//! over memory: each thread takes [`channel_lanes`] neighbouring channels as one vector load.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::ops::permute_nhwc_to_nchw;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::channel_sums::relu_grad_sums;
use crate::train_ops::cube::{KernelTensor, channels_last, channels_last_output, custom_op, custom_op_many};

/// BatchNorm + ReLU of the centered input `x − mean`: `max(0, centered·scale + shift)` — the
/// forward's arithmetic, which [`mask`] repeats.
#[cube]
fn normalized_relu<S: Float, N: Size>(
    centered: Vector<S, N>,
    scale: Vector<S, N>,
    shift: Vector<S, N>,
) -> Vector<S, N> {
    max(centered * scale + shift, Vector::new(S::from_int(0)))
}

/// The ReLU mask `y ≠ 0` of the forward's output `y` ([`normalized_relu`], `scale = γ·inv_std`)
/// recomputed from the input with the same arithmetic, so that the backward passes agree with
/// the `y` it wrote without reading it.
#[cube]
pub fn mask<S: Float, N: Size>(
    centered: Vector<S, N>,
    scale: Vector<S, N>,
    shift: Vector<S, N>,
) -> Vector<bool, N> {
    Vector::<bool, N>::cast_from(normalized_relu(centered, scale, shift))
}

/// Where the statistics of element `pos` (channel vector `c` of `channel_vectors`) lie: `c`, or
/// with `grouped` statistics `[G, C]` the row's group's entry (`rows_per_group` rows a group).
#[cube]
fn statistic_at(
    pos: usize,
    c: usize,
    channel_vectors: usize,
    rows_per_group: usize,
    #[comptime] grouped: bool,
) -> usize {
    let mut at = c;
    if grouped {
        at += pos / channel_vectors / rows_per_group * channel_vectors;
    }
    at
}

/// `y = max(0, (x − mean)·scale + beta)`, `N` channels per thread: `x`, `y` channels-last
/// contiguous, `beta` `[C]`, `mean`, `scale` `[C]` (or `[G, C]`, `grouped`).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn normalize_relu_kernel<X: Float, Y: Float, S: Float, N: Size>(
    x: &Tensor<Vector<X, N>>,
    mean: &Tensor<Vector<S, N>>,
    scale: &Tensor<Vector<S, N>>,
    beta: &Tensor<Vector<S, N>>,
    y: &mut Tensor<Vector<Y, N>>,
    rows_per_group: usize,
    #[comptime] grouped: bool,
    #[define(X, Y, S)] _dtypes: [StorageType; 3],
) {
    let pos = ABSOLUTE_POS;
    if pos >= y.len() {
        terminate!();
    }
    let channel_vectors = beta.len();
    let c = pos % channel_vectors;
    let at = statistic_at(pos, c, channel_vectors, rows_per_group, grouped);
    let centered = Vector::<S, N>::cast_from(x[pos]) - mean[at];
    y[pos] = Vector::cast_from(normalized_relu(centered, scale[at], beta[c]));
}

/// `dx = coeff·(g − Σg/M) − (x − mean)·coeff·inv_std·Σg·x̂/M` with `coeff = γ·inv_std` and
/// `g = dy·[y > 0]`, the forward's ReLU mask recomputed from `x` ([`mask`]), `N` channels per
/// thread: activations channels-last contiguous, `sums` the `[2, C]` table (`Σ g`, `Σ g·x̂`),
/// the rest `[C]`; or, `grouped`, `M` rows per group, `sums` `[G, 2, C]` and `mean`, `inv_std`
/// `[G, C]`. The first row's threads also write `dβ` and `dγ` (the sums over the groups).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn normalize_relu_grad_kernel<X: Float, Y: Float, N: Size>(
    dy: &Tensor<Vector<Y, N>>,
    x: &Tensor<Vector<X, N>>,
    sums: &Tensor<Vector<f32, N>>,
    mean: &Tensor<Vector<f32, N>>,
    inv_std: &Tensor<Vector<f32, N>>,
    gamma: &Tensor<Vector<f32, N>>,
    beta: &Tensor<Vector<f32, N>>,
    dx: &mut Tensor<Vector<X, N>>,
    d_gamma: &mut Tensor<Vector<f32, N>>,
    d_beta: &mut Tensor<Vector<f32, N>>,
    rows: f32,
    rows_per_group: usize,
    #[comptime] grouped: bool,
    #[define(X, Y)] _dtypes: [StorageType; 2],
) {
    let pos = ABSOLUTE_POS;
    if pos >= dx.len() {
        terminate!();
    }
    let channel_vectors = gamma.len();
    let c = pos % channel_vectors;
    let at = statistic_at(pos, c, channel_vectors, rows_per_group, grouped);
    // `[G, 2, C]`: group g's Σg at (2g)·C + c, its Σg·x̂ one row further.
    let sums_at = at + (at - c);
    let (sum_g, sum_g_x_hat) = (sums[sums_at], sums[sums_at + channel_vectors]);
    if pos < channel_vectors {
        let mut total_g = sum_g;
        let mut total_g_x_hat = sum_g_x_hat;
        if grouped {
            let groups = sums.len() / (2 * channel_vectors);
            for group in 1..groups {
                total_g += sums[2 * group * channel_vectors + c];
                total_g_x_hat += sums[(2 * group + 1) * channel_vectors + c];
            }
        }
        d_beta[c] = total_g;
        d_gamma[c] = total_g_x_hat;
    }
    let per_row = Vector::new(1.0 / rows);
    let coeff = gamma[c] * inv_std[at];
    let x_term = coeff * inv_std[at] * sum_g_x_hat * per_row;
    let centered = Vector::<f32, N>::cast_from(x[pos]) - mean[at];
    let active = mask(centered, coeff, beta[c]);
    let g = select_many(active, Vector::<f32, N>::cast_from(dy[pos]), Vector::new(0.0));
    dx[pos] = Vector::cast_from(coeff * (g - sum_g * per_row) - centered * x_term);
}

fn launch_normalize<R: CubeRuntime>(
    [x, mean, scale, beta]: [CubeTensor<R>; 4],
    shape: &Shape,
    dtype: DType,
) -> CubeTensor<R> {
    let (y, lanes, cube_count, cube_dim) = channels_last_output(&x, shape, dtype);
    let dtypes = [x.dtype.into(), dtype.into(), mean.dtype.into()];
    let groups = mean.meta.shape()[0] / shape[1];
    let rows_per_group = shape[0] / groups * shape[2] * shape[3];
    let [mean, scale, beta] = [mean, scale, beta].map(into_contiguous);
    normalize_relu_kernel::launch::<R>(
        &x.client.clone(),
        cube_count,
        cube_dim,
        lanes,
        channels_last(x).into_tensor_arg(),
        mean.into_tensor_arg(),
        scale.into_tensor_arg(),
        beta.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        rows_per_group,
        groups > 1,
        dtypes,
    );
    permute_nhwc_to_nchw(y)
}

fn launch_normalize_grad<R: CubeRuntime>(
    [dy, x, sums, mean, inv_std, gamma, beta]: [CubeTensor<R>; 7],
    shape: &Shape,
) -> [CubeTensor<R>; 3] {
    let (dx, lanes, cube_count, cube_dim) = channels_last_output(&x, shape, x.dtype);
    let [d_gamma, d_beta] = std::array::from_fn(|_| {
        empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([shape[1]]), DType::F32)
    });
    let [n, c, h, w] = shape.dims::<4>();
    let groups = mean.meta.shape()[0] / c;
    let rows_per_group = n / groups * h * w;
    let dtypes = [x.dtype.into(), dy.dtype.into()];
    let [dy, x] = [dy, x].map(channels_last);
    // Contiguous `[G, 2, C]`: group g's rows start at element 2g·C.
    let [sums, mean, inv_std, gamma, beta] = [sums, mean, inv_std, gamma, beta].map(into_contiguous);
    debug_assert_eq!(sums.meta.shape().num_elements(), 2 * groups * c);
    normalize_relu_grad_kernel::launch::<R>(
        &x.client.clone(),
        cube_count,
        cube_dim,
        lanes,
        dy.into_tensor_arg(),
        x.into_tensor_arg(),
        sums.into_tensor_arg(),
        mean.into_tensor_arg(),
        inv_std.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        d_gamma.clone().into_tensor_arg(),
        d_beta.clone().into_tensor_arg(),
        rows_per_group as f32,
        rows_per_group,
        groups > 1,
        dtypes,
    );
    [permute_nhwc_to_nchw(dx), d_gamma, d_beta]
}

/// [`crate::train_ops::BatchNormOps::normalize_relu`] on burn's CubeCL backends (statistics
/// `[C]`, or `[G·C]` for `G` groups of the batch).
pub fn normalize_relu<T: KernelTensor>(x: T, [mean, scale, beta]: [T; 3], dtype: DType) -> T {
    let shape = x.shape().clone();
    custom_op::<T, 4>("normalize_relu", [x, mean, scale, beta], shape, dtype, launch_normalize)
}

/// [`crate::train_ops::BatchNormOps::batch_norm_relu_grad`] on burn's CubeCL backends: the
/// channel sums (partials, then their sum), then `dx`, `dγ`, `dβ` in one kernel.
pub fn batch_norm_relu_grad<T: KernelTensor>(
    [dy, _y, x]: [T; 3],
    [mean, inv_std, gamma, beta]: [T; 4],
) -> [T; 3] {
    let per_channel = [mean.clone(), inv_std.clone(), gamma.clone(), beta.clone()];
    let sums = relu_grad_sums([dy.clone(), x.clone()], per_channel);
    let shape = x.shape().clone();
    let outputs = [
        (shape.clone(), x.dtype()),
        (Shape::new([shape[1]]), DType::F32),
        (Shape::new([shape[1]]), DType::F32),
    ];
    let inputs = [dy, x, sums, mean, inv_std, gamma, beta];
    let launch = Box::new(move |t| launch_normalize_grad(t, &shape));
    custom_op_many::<T, 7, 3>("batch_norm_relu_grad", inputs, outputs, launch)
}
