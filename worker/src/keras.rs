//! Keras 2's categorical cross-entropy as the experiment's code used it: the prediction
//! renormalised over its last axis, clipped to `[ε, 1 − ε]` with `ε = 1e-7`, and
//! `−Σ t·log(o)` averaged over the batch. The loss variants ([`crate::loss`]) and the fused
//! cross-entropy node ([`crate::train_ops::cross_entropy`]) are both defined by it.

use burn::prelude::*;
use burn::tensor::activation::softmax;

/// Keras' fuzz factor `K.epsilon()`.
pub const KERAS_EPSILON: f32 = 1e-7;
/// Number of CIFAR-10 classes.
pub const NUM_CLASSES: usize = 10;
/// Keras `categorical_crossentropy(target, output)`: renormalise `output` over the last axis,
/// clip to `[ε, 1 − ε]`, return the batch mean of `−Σ target·log(output)` as a 1-element tensor.
pub fn kcce<B: Backend>(target: Tensor<B, 2>, output: Tensor<B, 2>) -> Tensor<B, 1> {
    let total = output.clone().sum_dim(1);
    let normalised = output.div(total).clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON);
    target.mul(normalised.log()).sum_dim(1).neg().mean()
}

/// One-hot float labels `[N, 10]` from integer labels `[N]`, built on the device (burn's
/// `Tensor::one_hot` reads the labels back to the host, a sync per batch on a GPU).
pub fn one_hot<B: Backend>(labels: Tensor<B, 1, Int>) -> Tensor<B, 2> {
    let n = labels.dims()[0];
    let classes = Tensor::<B, 1, Int>::arange(0..NUM_CLASSES as i64, &labels.device());
    labels
        .unsqueeze_dim::<2>(1)
        .expand([n, NUM_CLASSES])
        .equal(classes.unsqueeze_dim::<2>(0).expand([n, NUM_CLASSES]))
        .float()
}

/// The plain 10-class term `kcce(y, softmax(logits))`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    kcce(one_hot(labels), softmax(logits, 1))
}
