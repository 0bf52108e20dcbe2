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
//! layout burn's convolutions read without a copy. So both passes are flat loops over memory:
//! each thread takes [`channel_lanes`] neighbouring channels as one vector load, in
//! [`ROWS_PER_THREAD`] rows. The backward also takes the gradient of a pooled output
//! ([`gradient_row`]; the pooled forward is [`super::pooled`]).

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::ops::permute_nhwc_to_nchw;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::channel_sums::relu_grad_sums;
use super::rows::{ROWS_PER_THREAD, rows_geometry, statistic_at, thread_rows};
use crate::train_ops::cube::{KernelTensor, channels_last, channels_last_output, custom_op, custom_op_many};

/// BatchNorm + ReLU of the centered input `x − mean`: `max(0, centered·scale + shift)` — the
/// forward's arithmetic, which [`mask`] repeats.
#[cube]
pub(super) fn normalized_relu<S: Float, N: Size>(
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

/// The row of a 2×2 pooling's output `[N, H/2, W/2, C]` whose window holds row `row` of its
/// input `[N, H, W, C]` (even H; `width`: W). With `row = (n·H + y)·W + x` that is
/// `((n·H + y) / 2)·(W/2) + x/2`: one division, where four (image, pixel, its row and column)
/// made the pooled layers' backward passes instruction-bound (1.3–1.8 TB/s against 2.3–2.9).
#[cube]
pub(super) fn pooled_row(row: usize, width: usize) -> usize {
    let image_row = row / width;
    image_row / 2 * (width / 2) + (row - image_row * width) / 2
}

/// The output gradient's row for activation row `row` of `x` (`[N, H, W, C]`): the same row,
/// or with `pooled` gradients ([`pooled_row`]) its window's.
#[cube]
pub(super) fn gradient_row<X: Float, N: Size>(
    row: usize,
    x: &Tensor<Vector<X, N>>,
    #[comptime] pooled: bool,
) -> usize {
    let mut at = row;
    if pooled {
        at = pooled_row(row, x.shape(2));
    }
    at
}

/// `dy` read as f32, a quarter of it with `pooled` gradients (the 2×2 average's share).
#[cube]
pub(super) fn gradient<Y: Float, N: Size>(dy: Vector<Y, N>, #[comptime] pooled: bool) -> Vector<f32, N> {
    let mut g = Vector::<f32, N>::cast_from(dy);
    if pooled {
        g *= Vector::new(0.25);
    }
    g
}

/// `y = max(0, (x − mean)·scale + beta)`, `N` channels per vector, [`ROWS_PER_THREAD`] rows a
/// thread ([`rows_geometry`]): `x`, `y` channels-last contiguous, `beta` `[C]`, `mean`,
/// `scale` `[G, C]` (`G` = 1: the whole batch); `row_groups`: a group may change within a cube.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn normalize_relu_kernel<X: Float, Y: Float, S: Float, N: Size>(
    x: &Tensor<Vector<X, N>>,
    mean: &Tensor<Vector<S, N>>,
    scale: &Tensor<Vector<S, N>>,
    beta: &Tensor<Vector<S, N>>,
    y: &mut Tensor<Vector<Y, N>>,
    rows_per_group: usize,
    #[comptime] row_groups: bool,
    #[define(X, Y, S)] _dtypes: [StorageType; 3],
) {
    let row_vectors = beta.len();
    let (cv, first, active) = thread_rows(row_vectors);
    if !active {
        terminate!();
    }
    let rows = y.len() / row_vectors;
    let mut at = statistic_at(first, cv, row_vectors, rows_per_group);
    let (mut m, mut s, b) = (mean[at], scale[at], beta[cv]);
    let mut values = Array::<Vector<X, N>>::new(ROWS_PER_THREAD);
    #[unroll]
    for k in 0..ROWS_PER_THREAD {
        let row = first + k * CUBE_DIM_Y as usize;
        values[k] = x[select(row < rows, row, rows - 1) * row_vectors + cv];
    }
    #[unroll]
    for k in 0..ROWS_PER_THREAD {
        let row = first + k * CUBE_DIM_Y as usize;
        if row < rows {
            if row_groups {
                at = statistic_at(row, cv, row_vectors, rows_per_group);
                m = mean[at];
                s = scale[at];
            }
            let centered = Vector::<S, N>::cast_from(values[k]) - m;
            y[row * row_vectors + cv] = Vector::cast_from(normalized_relu(centered, s, b));
        }
    }
}

/// `dx = coeff·(g − Σg/M) − (x − mean)·coeff·inv_std·Σg·x̂/M` with `coeff = γ·inv_std` and
/// `g = dy·[y > 0]`, the forward's ReLU mask recomputed from `x` ([`mask`]), `N` channels per
/// vector, [`ROWS_PER_THREAD`] rows a thread ([`rows_geometry`]): activations channels-last
/// contiguous, `sums` `[G, 2, C]` (`Σ g`, `Σ g·x̂` of each group of `M` rows), `mean`,
/// `inv_std` `[G, C]`, `gamma`, `beta` `[C]`; with `pooled`, `dy` is the gradient of the
/// output's 2×2 average pooling (`[N, H/2, W/2, C]`, [`gradient`]). The first row's threads
/// also write `dβ` and `dγ` (the sums over the groups).
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
    rows_per_group: usize,
    #[comptime] row_groups: bool,
    #[comptime] pooled: bool,
    #[define(X, Y)] _dtypes: [StorageType; 2],
) {
    let row_vectors = gamma.len();
    let (cv, first, active) = thread_rows(row_vectors);
    if !active {
        terminate!();
    }
    let rows = dx.len() / row_vectors;
    if first == 0 {
        let mut total_g = Vector::new(0.0);
        let mut total_g_x_hat = Vector::new(0.0);
        for group in 0..sums.len() / (2 * row_vectors) {
            total_g += sums[2 * group * row_vectors + cv];
            total_g_x_hat += sums[(2 * group + 1) * row_vectors + cv];
        }
        d_beta[cv] = total_g;
        d_gamma[cv] = total_g_x_hat;
    }
    let mut gradients = Array::<Vector<Y, N>>::new(ROWS_PER_THREAD);
    let mut values = Array::<Vector<X, N>>::new(ROWS_PER_THREAD);
    #[unroll]
    for k in 0..ROWS_PER_THREAD {
        let row = first + k * CUBE_DIM_Y as usize;
        let row = select(row < rows, row, rows - 1);
        gradients[k] = dy[gradient_row(row, x, pooled) * row_vectors + cv];
        values[k] = x[row * row_vectors + cv];
    }
    let per_row = Vector::new(1.0 / rows_per_group as f32);
    let (g_gamma, b) = (gamma[cv], beta[cv]);
    let mut at = statistic_at(first, cv, row_vectors, rows_per_group);
    let mut terms = bn_grad_terms(at, cv, row_vectors, sums, mean, inv_std, g_gamma, per_row);
    #[unroll]
    for k in 0..ROWS_PER_THREAD {
        let row = first + k * CUBE_DIM_Y as usize;
        if row < rows {
            if row_groups {
                at = statistic_at(row, cv, row_vectors, rows_per_group);
                terms = bn_grad_terms(at, cv, row_vectors, sums, mean, inv_std, g_gamma, per_row);
            }
            let (m, coeff, mean_g, x_term) = terms;
            let centered = Vector::<f32, N>::cast_from(values[k]) - m;
            let on = mask(centered, coeff, b);
            let g = select_many(on, gradient(gradients[k], pooled), Vector::new(0.0));
            dx[row * row_vectors + cv] = Vector::cast_from(coeff * (g - mean_g) - centered * x_term);
        }
    }
}

/// The backward's per-channel terms of the group whose statistics lie at `at` (channel vector
/// `cv`): `(mean, coeff = γ·inv_std, Σg/M, coeff·inv_std·Σg·x̂/M)`.
#[cube]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn bn_grad_terms<N: Size>(
    at: usize,
    cv: usize,
    row_vectors: usize,
    sums: &Tensor<Vector<f32, N>>,
    mean: &Tensor<Vector<f32, N>>,
    inv_std: &Tensor<Vector<f32, N>>,
    gamma: Vector<f32, N>,
    per_row: Vector<f32, N>,
) -> (Vector<f32, N>, Vector<f32, N>, Vector<f32, N>, Vector<f32, N>) {
    // `[G, 2, C]`: group g's Σg at (2g)·C + c, its Σg·x̂ one row further.
    let sums_at = at + (at - cv);
    let coeff = gamma * inv_std[at];
    let x_term = coeff * inv_std[at] * sums[sums_at + row_vectors] * per_row;
    (mean[at], coeff, sums[sums_at] * per_row, x_term)
}

fn launch_normalize<R: CubeRuntime>(
    [x, mean, scale, beta]: [CubeTensor<R>; 4],
    shape: &Shape,
    dtype: DType,
) -> CubeTensor<R> {
    let (y, lanes, _, _) = channels_last_output(&x, shape, dtype);
    let dtypes = [x.dtype.into(), dtype.into(), mean.dtype.into()];
    let [n, c, h, w] = shape.dims::<4>();
    let groups = mean.meta.shape()[0] / c;
    let rows_per_group = n / groups * h * w;
    let (cube_dim, cube_count, row_groups) = rows_geometry(n * h * w, c / lanes, rows_per_group);
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
        row_groups,
        dtypes,
    );
    permute_nhwc_to_nchw(y)
}

fn launch_normalize_grad<R: CubeRuntime>(
    [dy, x, sums, mean, inv_std, gamma, beta]: [CubeTensor<R>; 7],
    shape: &Shape,
) -> [CubeTensor<R>; 3] {
    let pooled = dy.meta.shape()[2] != shape[2];
    let (dx, lanes, _, _) = channels_last_output(&x, shape, x.dtype);
    let [d_gamma, d_beta] = std::array::from_fn(|_| {
        empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([shape[1]]), DType::F32)
    });
    let [n, c, h, w] = shape.dims::<4>();
    let groups = mean.meta.shape()[0] / c;
    let rows_per_group = n / groups * h * w;
    let (cube_dim, cube_count, row_groups) = rows_geometry(n * h * w, c / lanes, rows_per_group);
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
        rows_per_group,
        row_groups,
        pooled,
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

/// [`crate::train_ops::BatchNormOps::batch_norm_relu_grad`] and
/// [`crate::train_ops::BatchNormOps::batch_norm_relu_pool_grad`] on burn's CubeCL backends, on
/// `[dy, x]` (`dy` pooled when its height is half `x`'s): the channel sums (partials, then their
/// sum), then `dx`, `dγ`, `dβ` in one kernel.
pub fn batch_norm_relu_grad<T: KernelTensor>(
    [dy, x]: [T; 2],
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
