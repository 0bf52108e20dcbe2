//! BatchNorm + ReLU's forward pass with the 2×2 average pooling after it folded in, one kernel:
//! the full-size output is neither written nor read back by a pooling kernel (on the model's
//! first block that is two passes over 67 MB a step at batch 512).

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::permute_nhwc_to_nchw;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::normalize::normalized_relu;
use super::rows::statistic_at;
use crate::train_ops::cube::{KernelTensor, channels_last, channels_last_output, custom_op};

/// `y[n, i, j] = ¼ Σ max(0, (x − mean)·scale + beta)` over the 2×2 window of `x: [N, H, W, C]`
/// at `(2i, 2j)` (both channels-last contiguous, `y: [N, H/2, W/2, C]`), one thread per vector
/// of `N` channels of `y`, the sum in `S` (f32); `beta` `[C]`, `mean`, `scale` `[G, C]` with
/// `rows_per_group` rows of `x` a group (a window lies in one image, so in one group).
#[cube(launch)]
fn normalize_relu_pool_kernel<X: Float, Y: Float, S: Float, N: Size>(
    x: &Tensor<Vector<X, N>>,
    mean: &Tensor<Vector<S, N>>,
    scale: &Tensor<Vector<S, N>>,
    beta: &Tensor<Vector<S, N>>,
    y: &mut Tensor<Vector<Y, N>>,
    rows_per_group: usize,
    #[define(X, Y, S)] _dtypes: [StorageType; 3],
) {
    let pos = ABSOLUTE_POS;
    if pos >= y.len() {
        terminate!();
    }
    let row_vectors = beta.len();
    let cv = pos % row_vectors;
    let pooled_row = pos / row_vectors;
    let (height, width) = (x.shape(1), x.shape(2));
    let (rows, columns) = (height / 2, width / 2);
    let image = pooled_row / (rows * columns);
    let top_left = (image * height + pooled_row / columns % rows * 2) * width + pooled_row % columns * 2;
    let at = statistic_at(top_left, cv, row_vectors, rows_per_group);
    let (m, s, b) = (mean[at], scale[at], beta[cv]);
    let below = width * row_vectors;
    let first = top_left * row_vectors + cv;
    let (a, b2, c, d) = (x[first], x[first + row_vectors], x[first + below], x[first + below + row_vectors]);
    let sum = normalized_relu(Vector::<S, N>::cast_from(a) - m, s, b)
        + normalized_relu(Vector::<S, N>::cast_from(b2) - m, s, b)
        + normalized_relu(Vector::<S, N>::cast_from(c) - m, s, b)
        + normalized_relu(Vector::<S, N>::cast_from(d) - m, s, b);
    y[pos] = Vector::cast_from(sum * Vector::new(S::new(0.25)));
}

fn launch<R: CubeRuntime>(
    [x, mean, scale, beta]: [CubeTensor<R>; 4],
    shape: &Shape,
    dtype: DType,
) -> CubeTensor<R> {
    let (y, lanes, cube_count, cube_dim) = channels_last_output(&x, shape, dtype);
    let dtypes = [x.dtype.into(), dtype.into(), mean.dtype.into()];
    let [n, c, h, w] = x.meta.shape().dims::<4>();
    let groups = mean.meta.shape()[0] / c;
    let [mean, scale, beta] = [mean, scale, beta].map(into_contiguous);
    normalize_relu_pool_kernel::launch::<R>(
        &x.client.clone(),
        cube_count,
        cube_dim,
        lanes,
        channels_last(x).into_tensor_arg(),
        mean.into_tensor_arg(),
        scale.into_tensor_arg(),
        beta.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        n / groups * h * w,
        dtypes,
    );
    permute_nhwc_to_nchw(y)
}

/// [`crate::train_ops::BatchNormOps::normalize_relu_pool`] on burn's CubeCL backends: `x: [N,
/// C, H, W]` (even H and W) → `[N, C, H/2, W/2]` in `dtype`, written channels-last.
pub fn normalize_relu_pool<T: KernelTensor>(x: T, [mean, scale, beta]: [T; 3], dtype: DType) -> T {
    let [n, c, h, w] = x.shape().dims::<4>();
    let shape = Shape::new([n, c, h / 2, w / 2]);
    custom_op::<T, 4>("normalize_relu_pool", [x, mean, scale, beta], shape, dtype, launch)
}
