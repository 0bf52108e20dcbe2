//! BatchNorm + ReLU's two elementwise passes, each one kernel that reads any layout and dtype and
//! writes channels-last in the dtype the next layer wants.
//!
//! - forward `y = max(0, (x − mean)·scale + beta)`: `x` is the convolution's output (f32, or bf16
//!   with bf16 activations), `y` goes out in the activation dtype, so the next convolution gets
//!   its bf16 operand without a cast kernel;
//! - backward `dx = coeff·g − bias_term − (x − mean)·x_term` with `g = dy·[y > 0]`, in `x`'s dtype.
//!
//! Per-channel vectors (`[C]`, f32) carry the statistics; the arithmetic runs in their dtype.
//! Activations are read channels-last (burn's convolutions write that layout; anything else is
//! copied first) and outputs written `[N, H, W, C]` in memory, viewed as `[N, C, H, W]` — the
//! layout burn's convolutions read without a copy. So both passes are flat elementwise loops
//! over memory: each thread takes [`channel_lanes`] neighbouring channels as one vector load.

use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::ops::{permute_nchw_to_nhwc_shape, permute_nhwc_to_nchw};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement};
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use super::{FusionTensor, channel_lanes, channels_last, custom_op};

/// `y = max(0, (x − mean)·scale + beta)`, `N` channels per thread: `x`, `y` channels-last
/// contiguous, `mean`, `scale`, `beta` `[C]`.
#[cube(launch)]
fn normalize_relu_kernel<X: Float, Y: Float, S: Float, N: Size>(
    x: &Tensor<Vector<X, N>>,
    mean: &Tensor<Vector<S, N>>,
    scale: &Tensor<Vector<S, N>>,
    beta: &Tensor<Vector<S, N>>,
    y: &mut Tensor<Vector<Y, N>>,
    #[define(X, Y, S)] _dtypes: [StorageType; 3],
) {
    let pos = ABSOLUTE_POS;
    if pos >= y.len() {
        terminate!();
    }
    let c = pos % mean.len();
    let value = (Vector::<S, N>::cast_from(x[pos]) - mean[c]) * scale[c] + beta[c];
    y[pos] = Vector::cast_from(max(value, Vector::new(S::from_int(0))));
}

/// `dx = coeff·g − bias_term − (x − mean)·x_term` with `g = dy·[y ≠ 0]` (`y` is a ReLU
/// output: ≠ 0 means > 0), `N` channels per thread: activations channels-last contiguous, the
/// rest `[C]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn normalize_relu_grad_kernel<X: Float, Y: Float, S: Float, N: Size>(
    dy: &Tensor<Vector<Y, N>>,
    y: &Tensor<Vector<Y, N>>,
    x: &Tensor<Vector<X, N>>,
    mean: &Tensor<Vector<S, N>>,
    coeff: &Tensor<Vector<S, N>>,
    bias_term: &Tensor<Vector<S, N>>,
    x_term: &Tensor<Vector<S, N>>,
    dx: &mut Tensor<Vector<X, N>>,
    #[define(X, Y, S)] _dtypes: [StorageType; 3],
) {
    let pos = ABSOLUTE_POS;
    if pos >= dx.len() {
        terminate!();
    }
    let c = pos % mean.len();
    let active = Vector::<bool, N>::cast_from(y[pos]);
    let g = select_many(active, Vector::<S, N>::cast_from(dy[pos]), Vector::new(S::from_int(0)));
    let centered = Vector::<S, N>::cast_from(x[pos]) - mean[c];
    dx[pos] = Vector::cast_from(coeff[c] * g - bias_term[c] - centered * x_term[c]);
}

/// An `[N, H, W, C]` output of `dtype` for `[N, C, H, W]`-shaped `shape`, the vector width
/// and the launch geometry.
fn channels_last_output<R: CubeRuntime>(
    like: &CubeTensor<R>,
    shape: &Shape,
    dtype: DType,
) -> (CubeTensor<R>, usize, CubeCount, CubeDim) {
    let nhwc = permute_nchw_to_nhwc_shape(shape.clone());
    let output = empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), nhwc, dtype);
    let lanes = channel_lanes(shape[1], like.dtype.size().max(dtype.size()));
    let threads = shape.num_elements() / lanes;
    let cube_dim = CubeDim::new(&like.client, threads);
    let cube_count = calculate_cube_count_elemwise(&like.client, threads, cube_dim);
    (output, lanes, cube_count, cube_dim)
}

fn launch_normalize<R: CubeRuntime>(
    [x, mean, scale, beta]: [CubeTensor<R>; 4],
    shape: &Shape,
    dtype: DType,
) -> CubeTensor<R> {
    let (y, lanes, cube_count, cube_dim) = channels_last_output(&x, shape, dtype);
    let dtypes = [x.dtype.into(), dtype.into(), mean.dtype.into()];
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
        dtypes,
    );
    permute_nhwc_to_nchw(y)
}

fn launch_normalize_grad<R: CubeRuntime>(
    [dy, y, x, mean, coeff, bias_term, x_term]: [CubeTensor<R>; 7],
    shape: &Shape,
    dtype: DType,
) -> CubeTensor<R> {
    let (dx, lanes, cube_count, cube_dim) = channels_last_output(&x, shape, dtype);
    let dtypes = [x.dtype.into(), dy.dtype.into(), mean.dtype.into()];
    let [dy, y, x] = [dy, y, x].map(channels_last);
    let [mean, coeff, bias_term, x_term] = [mean, coeff, bias_term, x_term].map(into_contiguous);
    normalize_relu_grad_kernel::launch::<R>(
        &x.client.clone(),
        cube_count,
        cube_dim,
        lanes,
        dy.into_tensor_arg(),
        y.into_tensor_arg(),
        x.into_tensor_arg(),
        mean.into_tensor_arg(),
        coeff.into_tensor_arg(),
        bias_term.into_tensor_arg(),
        x_term.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        dtypes,
    );
    permute_nhwc_to_nchw(dx)
}

/// [`crate::train_ops::TrainOps::normalize_relu`] on burn's fused CubeCL backends.
pub fn normalize_relu<R, F, I, BT>(
    x: FusionTensor<R>,
    [mean, scale, beta]: [FusionTensor<R>; 3],
    dtype: DType,
) -> FusionTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let shape = x.shape.clone();
    custom_op::<R, F, I, BT, 4>("normalize_relu", [x, mean, scale, beta], shape, dtype, launch_normalize)
}

/// [`crate::train_ops::TrainOps::normalize_relu_grad`] on burn's fused CubeCL backends.
pub fn normalize_relu_grad<R, F, I, BT>(
    [dy, y, x]: [FusionTensor<R>; 3],
    [mean, coeff, bias_term, x_term]: [FusionTensor<R>; 4],
) -> FusionTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let (shape, dtype) = (x.shape.clone(), x.dtype);
    let inputs = [dy, y, x, mean, coeff, bias_term, x_term];
    custom_op::<R, F, I, BT, 7>("normalize_relu_grad", inputs, shape, dtype, launch_normalize_grad)
}
