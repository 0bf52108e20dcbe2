//! BatchNorm + ReLU whose output the model pools next (2×2 average, stride 2; kernel part
//! `bnpool`): the layer's node writes only the pooled output and its backward takes the pooled
//! output's gradient, so the full-size output is never written, nor its gradient, nor read back
//! (on CUDA the pooling is folded into the normalising pass, and the backward's two passes read
//! the gradient where each element's window lies). Here the hooks' reference through burn's ops.

use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::ops::FloatTensor;

use super::reference::{normalize_relu_by_ops, relu_grad};
use crate::train_ops::pool::WINDOW;
use crate::train_ops::{unwrap, wrap};

/// [`super::BatchNormOps::normalize_relu_pool`] through burn's ops: the normalising pass, then
/// burn's average pooling.
pub fn normalize_relu_pool_by_ops<B: Backend>(
    x: FloatTensor<B>,
    per_channel: [FloatTensor<B>; 3],
    dtype: FloatDType,
) -> FloatTensor<B> {
    let y = normalize_relu_by_ops::<B>(x, per_channel, dtype);
    B::avg_pool2d(y, WINDOW, WINDOW, [0, 0], true, false)
}

/// [`super::BatchNormOps::batch_norm_relu_pool_grad`] through burn's ops: the forward's output
/// recomputed (its ReLU mask, and the shape burn's pooling gradient asks for), the pooling's
/// gradient, then [`relu_grad`].
pub fn relu_pool_grad_by_ops<B: Backend>(
    [dy, x]: [FloatTensor<B>; 2],
    [mean, inv_std, gamma, beta]: [FloatTensor<B>; 4],
) -> [FloatTensor<B>; 3] {
    let channels = wrap::<B, 4>(x.clone()).dims()[1];
    let groups = wrap::<B, 1>(mean.clone()).dims()[0] / channels;
    let scale = wrap::<B, 1>(inv_std.clone()) * wrap::<B, 1>(gamma.clone()).repeat_dim(0, groups);
    let dtype = wrap::<B, 4>(dy.clone()).dtype().into();
    let y = normalize_relu_by_ops::<B>(x.clone(), [mean.clone(), unwrap(scale), beta.clone()], dtype);
    let full = B::avg_pool2d_backward(y.clone(), dy, WINDOW, WINDOW, [0, 0], true, false);
    relu_grad::<B>([full, y, x], [mean, inv_std, gamma, beta])
}
