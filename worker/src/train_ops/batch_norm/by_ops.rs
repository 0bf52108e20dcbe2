//! BatchNorm + ReLU's formulations through burn's tensor ops: the
//! [`TrainOps`](crate::train_ops::TrainOps) defaults (the CPU,
//! and the inner backends of inference) and the references the CUDA kernels are tested against.

use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::ops::FloatTensor;

use super::{NormConfig, NormStatistics};
use crate::train_ops::{to_dtype, unwrap, wrap};

/// Channels-last rows `[N·H·W, C]` of `x: [N, C, H, W]`.
pub(super) fn rows<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, c, h, w] = x.dims();
    x.permute([0, 2, 3, 1]).reshape([n * h * w, c])
}

/// `[N·H·W, C]` rows back to `[N, C, H, W]` (a channels-last view).
fn unrows<B: Backend>(rows: Tensor<B, 2>, [n, c, h, w]: [usize; 4]) -> Tensor<B, 4> {
    rows.reshape([n, h, w, c]).permute([0, 3, 1, 2])
}

/// Longest run of rows summed by the first stage of [`channel_sum`].
const CHUNK_ROWS: usize = 512;

/// Per-channel sums `[1, C]` of channels-last `rows: [M, C]`, in two stages: sums of chunks of
/// up to [`CHUNK_ROWS`] consecutive rows (`[M/chunk, C]` outputs, each thread walking one
/// channel down its chunk, neighbouring threads on neighbouring channels: coalesced), then the
/// small `[M/chunk, C]` table. A one-stage reduction over the strided M axis leaves only C
/// threads (64–256) to read the whole tensor.
fn channel_sum<B: Backend>(rows: Tensor<B, 2>) -> Tensor<B, 2> {
    let [m, c] = rows.dims();
    let chunk = (1..=CHUNK_ROWS.min(m)).rev().find(|d| m.is_multiple_of(*d)).unwrap_or(1);
    rows.reshape([m / chunk, chunk, c]).sum_dim(1).reshape([m / chunk, c]).sum_dim(0)
}

/// Per-channel means `[1, C]` of `rows: [M, C]`.
fn channel_mean<B: Backend>(rows: Tensor<B, 2>) -> Tensor<B, 2> {
    let m = rows.dims()[0] as f64;
    channel_sum(rows).div_scalar(m)
}

/// Channels-last f32 rows `[N·H·W, C]` of `x: [N, C, H, W]` in any dtype.
fn f32_rows<B: Backend>(x: FloatTensor<B>) -> Tensor<B, 2> {
    to_dtype(rows(wrap::<B, 4>(x)), FloatDType::F32)
}

/// Per-channel batch mean and biased variance (`[1, C]` each, f32) of `x: [N, C, H, W]` through
/// burn's reductions: the mean, then the mean of the squared deviations (two passes, two-stage
/// sums each).
pub fn moments_by_reductions<B: Backend>(x: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let x = f32_rows::<B>(x);
    let mean = channel_mean(x.clone());
    let var = channel_mean((x - mean.clone()).square());
    (unwrap(mean), unwrap(var))
}

/// The two channel sums of the backward, `(Σ g, Σ g·x̂)` (`[1, C]` each) with `g = dy·[y > 0]`
/// and `x̂ = (x − mean)·inv_std` (`mean`, `inv_std`: `[1, C]`), through burn's ops: `g` and
/// `g·x̂` written out, then two-stage sums.
pub fn relu_norm_grad_sums_by_reductions<B: Backend>(
    [dy, y, x, mean, inv_std]: [FloatTensor<B>; 5],
) -> (FloatTensor<B>, FloatTensor<B>) {
    let [dy, y, x] = [dy, y, x].map(f32_rows::<B>);
    let (g, x_hat) = relu_grad_and_x_hat(dy, y, x, wrap(mean), wrap(inv_std));
    (unwrap(channel_sum(g.clone())), unwrap(channel_sum(g * x_hat)))
}

/// A per-channel `[C]` vector as a `[1, C]` row.
fn row<B: Backend>(v: FloatTensor<B>) -> Tensor<B, 2> {
    let v = wrap::<B, 1>(v);
    let c = v.dims()[0];
    v.reshape([1, c])
}

/// [`TrainOps::normalize_relu`](crate::train_ops::TrainOps::normalize_relu) through burn's ops,
/// on f32 channels-last rows.
pub fn normalize_relu_by_ops<B: Backend>(
    x: FloatTensor<B>,
    [mean, scale, beta]: [FloatTensor<B>; 3],
    dtype: FloatDType,
) -> FloatTensor<B> {
    let dims = wrap::<B, 4>(x.clone()).dims();
    let y = ((f32_rows::<B>(x) - row(mean)) * row(scale) + row(beta)).clamp_min(0.0);
    unwrap(unrows(to_dtype(y, dtype), dims))
}

/// The input gradient `coeff·g − bias_term − (x − mean)·x_term` (`g = dy·[y > 0]`, in `x`'s
/// dtype) through burn's ops, on f32 channels-last rows.
pub fn normalize_relu_grad_by_ops<B: Backend>(
    [dy, y, x]: [FloatTensor<B>; 3],
    [mean, coeff, bias_term, x_term]: [FloatTensor<B>; 4],
) -> FloatTensor<B> {
    let x = wrap::<B, 4>(x);
    let (dims, dtype) = (x.dims(), x.dtype().into());
    // All layout views first: burn's fusion ends an elementwise kernel at every permute, so
    // interleaving them with the arithmetic would split it into one kernel per op.
    let [dy, y, x] = [dy, y, unwrap(x)].map(f32_rows::<B>);
    let g = dy.mask_fill(y.lower_equal_elem(0.0), 0.0);
    let dx = g * row(coeff) - row(bias_term) - (x - row(mean)) * row(x_term);
    unwrap(unrows(to_dtype(dx, dtype), dims))
}

/// `g = dy·[y > 0]` and `x̂ = (x − mean)·inv_std` on channels-last rows.
fn relu_grad_and_x_hat<B: Backend>(
    dy: Tensor<B, 2>,
    y: Tensor<B, 2>,
    x: Tensor<B, 2>,
    mean: Tensor<B, 2>,
    inv_std: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    (dy.mask_fill(y.lower_equal_elem(0.0), 0.0), (x - mean) * inv_std)
}

/// [`TrainOps::batch_norm_statistics`](crate::train_ops::TrainOps::batch_norm_statistics)
/// through burn's ops: moments by reductions, then the per-channel arithmetic.
pub fn statistics<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    mean_shift: Option<FloatTensor<B>>,
    [running_mean, running_var]: [FloatTensor<B>; 2],
    config: NormConfig,
) -> NormStatistics<B> {
    let (mean, var) = moments_by_reductions::<B>(x);
    let [mean, var] = [mean, var].map(|t| wrap::<B, 2>(t).flatten::<1>(0, 1));
    let inv_std = var.clone().add_scalar(config.epsilon).sqrt().recip();
    let scale = wrap::<B, 1>(gamma) * inv_std.clone();
    let shifted_mean = match mean_shift {
        Some(shift) => mean.clone() + wrap(shift),
        None => mean.clone(),
    };
    let blend = |running: FloatTensor<B>, batch: Tensor<B, 1>| {
        unwrap(wrap::<B, 1>(running).mul_scalar(1.0 - config.momentum).add(batch.mul_scalar(config.momentum)))
    };
    NormStatistics {
        running_mean: blend(running_mean, shifted_mean),
        running_var: blend(running_var, var),
        mean: unwrap(mean),
        inv_std: unwrap(inv_std),
        scale: unwrap(scale),
    }
}

/// [`TrainOps::batch_norm_relu_grad`](crate::train_ops::TrainOps::batch_norm_relu_grad) through
/// burn's ops: the two channel sums, the per-channel terms, the elementwise pass (the ReLU mask
/// read from `y`; `β` unused).
pub fn relu_grad<B: Backend>(
    [dy, y, x]: [FloatTensor<B>; 3],
    [mean, inv_std, gamma, _beta]: [FloatTensor<B>; 4],
) -> [FloatTensor<B>; 3] {
    let [n, c, h, w] = wrap::<B, 4>(x.clone()).dims();
    let m = (n * h * w) as f64;
    let as_row = |v: &FloatTensor<B>| unwrap(row::<B>(v.clone()));
    let inputs = [dy.clone(), y.clone(), x.clone(), as_row(&mean), as_row(&inv_std)];
    let (d_beta, d_gamma) = relu_norm_grad_sums_by_reductions::<B>(inputs);
    let [d_beta, d_gamma] = [d_beta, d_gamma].map(|t| wrap::<B, 2>(t).reshape([c]));
    // dx = coeff·(g − dβ/M − x̂·dγ/M), x̂ = (x − mean)·inv_std, coeff = γ·inv_std.
    let inv_std = wrap::<B, 1>(inv_std);
    let coeff = wrap::<B, 1>(gamma) * inv_std.clone();
    let bias_term = coeff.clone() * d_beta.clone().div_scalar(m);
    let x_term = coeff.clone() * inv_std * d_gamma.clone().div_scalar(m);
    let per_channel = [mean, unwrap(coeff), unwrap(bias_term), unwrap(x_term)];
    let dx = normalize_relu_grad_by_ops::<B>([dy, y, x], per_channel);
    [dx, unwrap(d_gamma), unwrap(d_beta)]
}
