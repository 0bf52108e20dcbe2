//! The model's BatchNorm + ReLU layer on its module's parameters: training through the node
//! (pooled or not), inference in one normalising pass, the running averages written back.

use burn::module::{ModuleMapper, Param, RunningState};
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::activation::relu;

use super::{BatchNormOps, NormConfig, NormInputs};
use crate::train_ops::{Kernels, to_dtype, unwrap, wrap};

/// The model's BatchNorm + ReLU layer with `kernels`' `bn` part: in training the fused node, the
/// output in `dtype`, each of `groups` equal groups of the batch normalised on its own, and the
/// running statistics updated as burn's `BatchNorm::forward` updates them; in inference one
/// normalising pass over the running statistics ([`inference`]). Without the part, burn's module
/// and ReLU. `conv_bias` is the bias of a convolution that left it out of `x`
/// ([`super::ConvOps::conv3x3_same`]): in training it shifts only the batch mean, so it goes in
/// as the mean shift of the running mean; in inference it is subtracted from the running mean.
/// `pooled` (only where [`pools_output`]): the output 2×2 average pooled by the node.
pub fn batch_norm_relu<B: BatchNormOps>(
    norm: &BatchNorm<B>,
    x: Tensor<B, 4>,
    kernels: Kernels,
    groups: usize,
    conv_bias: Option<Tensor<B, 1>>,
    pooled: bool,
) -> Tensor<B, 4> {
    debug_assert!(!pooled || pools_output::<B>(kernels, &x.device()), "pooled without the node");
    if !kernels.fused_batch_norm {
        return relu(norm.forward(x));
    }
    let dtype = kernels.activation_dtype();
    if !B::ad_enabled(&x.device()) {
        return inference(norm, x, dtype, conv_bias);
    }
    let device = x.device();
    let running = |state: &RunningState<Tensor<B, 1>>| unwrap(state.value_sync().to_device(&device));
    let inputs = NormInputs {
        gamma: unwrap(norm.gamma.val()),
        beta: unwrap(norm.beta.val()),
        mean_shift: conv_bias.map(|bias| unwrap(bias.detach())),
        running_mean: running(&norm.running_mean),
        running_var: running(&norm.running_var),
    };
    let config = NormConfig { epsilon: norm.epsilon, momentum: norm.momentum, groups };
    let (y, running_mean, running_var) = match pooled {
        true => B::batch_norm_relu_pool_train(unwrap(x), inputs, config, dtype),
        false => B::batch_norm_relu_train(unwrap(x), inputs, config, dtype),
    };
    set_running(&norm.running_mean, wrap::<B, 1>(running_mean).detach());
    set_running(&norm.running_var, wrap::<B, 1>(running_var).detach());
    wrap(y)
}

/// Whether a BatchNorm + ReLU layer followed by the 2×2 pooling takes the pooling into its
/// node ([`batch_norm_relu`]'s `pooled`): training with `kernels`' `bnpool` part.
pub fn pools_output<B: Backend>(kernels: Kernels, device: &B::Device) -> bool {
    kernels.pooled_norm && kernels.fused_batch_norm && B::ad_enabled(device)
}

/// Makes `value` the value of `state` (shared by its clones). burn's `RunningState::update`
/// keeps one value per thread and averages them at the next read: a `div_scalar` per state and
/// step (18 of a step's operations), and a stale average should the model change threads.
pub fn set_running<B: Backend>(state: &RunningState<Tensor<B, 1>>, value: Tensor<B, 1>) {
    /// Puts its tensor in place of the one float tensor it maps.
    struct Set<B: Backend>(Option<Tensor<B, 1>>);
    impl<B: Backend> ModuleMapper<B> for Set<B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let Some(value) = self.0.take() else { return param };
            let (id, _, mapper) = param.consume();
            Param::from_mapped_value(id, Tensor::from_primitive(value.into_primitive()), mapper)
        }
    }
    // Pending per-thread updates (burn's own `BatchNorm::forward`) go first, or a later read
    // would average them over `value`.
    let _ = state.value_sync();
    let _ = state.clone().map(&mut Set(Some(value)));
}

/// Inference: `max(0, (x + conv_bias − running_mean)·γ/√(running_var + ε) + β)` in `dtype`, as
/// [`BatchNormOps::normalize_relu`] (one kernel on CUDA) with the bias folded into the mean;
/// burn's module computes the same in separate passes over f32 copies.
fn inference<B: BatchNormOps>(
    norm: &BatchNorm<B>,
    x: Tensor<B, 4>,
    dtype: FloatDType,
    conv_bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 4> {
    let f32 = |t: Tensor<B, 1>| to_dtype(t, FloatDType::F32);
    let running_mean = f32(norm.running_mean.value());
    let mean = match conv_bias {
        Some(bias) => running_mean - f32(bias),
        None => running_mean,
    };
    let scale = f32(norm.gamma.val()) / (f32(norm.running_var.value()) + norm.epsilon).sqrt();
    let per_channel = [mean, scale, f32(norm.beta.val())].map(unwrap);
    wrap(B::normalize_relu(unwrap(x), per_channel, dtype))
}
