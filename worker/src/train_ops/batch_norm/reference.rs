//! BatchNorm + ReLU's formulations through burn's tensor ops: the
//! [`BatchNormOps`](super::BatchNormOps) defaults (the CPU,
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

/// The number of groups `G` of per-group statistics `[G·C]` for `c` channels.
fn groups_of<B: Backend>(per_group: &FloatTensor<B>, c: usize) -> usize {
    (wrap::<B, 1>(per_group.clone()).dims()[0] / c).max(1)
}

/// Channels-last rows `[M, C]` as `G` groups `[G, M/G, C]` (images in order: group `g` holds
/// the `g`-th `N/G` images).
fn grouped<B: Backend>(rows: Tensor<B, 2>, groups: usize) -> Tensor<B, 3> {
    let [m, c] = rows.dims();
    rows.reshape([groups, m / groups, c])
}

/// Per-group statistics `[G·C]` as `[G, 1, C]`.
fn per_group<B: Backend>(v: FloatTensor<B>, groups: usize) -> Tensor<B, 3> {
    let v = wrap::<B, 1>(v);
    let c = v.dims()[0] / groups;
    v.reshape([groups, 1, c])
}

/// [`BatchNormOps::normalize_relu`](super::BatchNormOps::normalize_relu) through burn's ops,
/// on f32 channels-last rows; `mean` and `scale` per group (`[G·C]`), `beta` `[C]`.
pub fn normalize_relu_by_ops<B: Backend>(
    x: FloatTensor<B>,
    [mean, scale, beta]: [FloatTensor<B>; 3],
    dtype: FloatDType,
) -> FloatTensor<B> {
    let dims = wrap::<B, 4>(x.clone()).dims();
    let groups = groups_of::<B>(&mean, dims[1]);
    if groups > 1 {
        let x = grouped(f32_rows::<B>(x), groups);
        let beta = row::<B>(beta).unsqueeze::<3>();
        let y = ((x - per_group(mean, groups)) * per_group(scale, groups) + beta).clamp_min(0.0);
        let [g, rows, c] = y.dims();
        return unwrap(unrows(to_dtype(y.reshape([g * rows, c]), dtype), dims));
    }
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

/// [`BatchNormOps::batch_norm_statistics`](super::BatchNormOps::batch_norm_statistics)
/// through burn's ops: moments by reductions, then the per-channel arithmetic.
pub fn statistics<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    mean_shift: Option<FloatTensor<B>>,
    running: [FloatTensor<B>; 2],
    config: NormConfig,
) -> NormStatistics<B> {
    if config.groups > 1 {
        return grouped_statistics::<B>(x, gamma, mean_shift, running, config);
    }
    let [running_mean, running_var] = running;
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

/// [`statistics`] per group: each group's mean and biased variance normalise its images
/// (`mean`, `inv_std`, `scale`: `[G·C]`); the running averages blend in the mean over the groups
/// of their means (the batch mean) and of their variances, as a data-parallel run whose replicas
/// keep their own averages reads them (their mean).
fn grouped_statistics<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    mean_shift: Option<FloatTensor<B>>,
    [running_mean, running_var]: [FloatTensor<B>; 2],
    config: NormConfig,
) -> NormStatistics<B> {
    let groups = config.groups;
    let rows = grouped(f32_rows::<B>(x), groups);
    let [_, m, c] = rows.dims();
    let mean = rows.clone().sum_dim(1).div_scalar(m as f64);
    let var = (rows - mean.clone()).square().sum_dim(1).div_scalar(m as f64);
    let inv_std = var.clone().add_scalar(config.epsilon).sqrt().recip();
    let scale = inv_std.clone() * wrap::<B, 1>(gamma).reshape([1, 1, c]);
    let across = |t: Tensor<B, 3>| t.mean_dim(0).reshape([c]);
    let batch_mean = match mean_shift {
        Some(shift) => across(mean.clone()) + wrap(shift),
        None => across(mean.clone()),
    };
    let blend = |running: FloatTensor<B>, batch: Tensor<B, 1>| {
        unwrap(wrap::<B, 1>(running).mul_scalar(1.0 - config.momentum).add(batch.mul_scalar(config.momentum)))
    };
    let flat = |t: Tensor<B, 3>| unwrap(t.reshape([groups * c]));
    NormStatistics {
        running_mean: blend(running_mean, batch_mean),
        running_var: blend(running_var, across(var)),
        mean: flat(mean),
        inv_std: flat(inv_std),
        scale: flat(scale),
    }
}

/// [`relu_grad`] per group: each group's sums and terms, `dγ` and `dβ` summed over the groups.
fn grouped_relu_grad<B: Backend>(
    [dy, y, x]: [FloatTensor<B>; 3],
    [mean, inv_std, gamma]: [FloatTensor<B>; 3],
    groups: usize,
) -> [FloatTensor<B>; 3] {
    let x = wrap::<B, 4>(x);
    let (dims, dtype) = (x.dims(), x.dtype().into());
    let [dy, y, x] = [dy, y, unwrap(x)].map(|t| grouped(f32_rows::<B>(t), groups));
    let [_, m, c] = x.dims();
    let (mean, inv_std) = (per_group(mean, groups), per_group(inv_std, groups));
    let g = dy.mask_fill(y.lower_equal_elem(0.0), 0.0);
    let x_hat = (x - mean) * inv_std.clone();
    let d_beta = g.clone().sum_dim(1);
    let d_gamma = (g.clone() * x_hat.clone()).sum_dim(1);
    let coeff = inv_std * wrap::<B, 1>(gamma).reshape([1, 1, c]);
    let dx = coeff * (g - d_beta.clone().div_scalar(m as f64) - x_hat * d_gamma.clone().div_scalar(m as f64));
    let dx = unrows(to_dtype(dx.reshape([groups * m, c]), dtype), dims);
    let total = |t: Tensor<B, 3>| unwrap(t.sum_dim(0).reshape([c]));
    [unwrap(dx), total(d_gamma), total(d_beta)]
}

/// [`BatchNormOps::batch_norm_relu_grad`](super::BatchNormOps::batch_norm_relu_grad) through
/// burn's ops: the two channel sums, the per-channel terms, the elementwise pass (the ReLU mask
/// read from `y`; `β` unused). `mean` and `inv_std` per group (`[G·C]`) when the forward
/// normalised groups.
pub fn relu_grad<B: Backend>(
    [dy, y, x]: [FloatTensor<B>; 3],
    [mean, inv_std, gamma, _beta]: [FloatTensor<B>; 4],
) -> [FloatTensor<B>; 3] {
    let [n, c, h, w] = wrap::<B, 4>(x.clone()).dims();
    let groups = groups_of::<B>(&mean, c);
    if groups > 1 {
        return grouped_relu_grad::<B>([dy, y, x], [mean, inv_std, gamma], groups);
    }
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
