//! Training-mode BatchNorm + ReLU as one custom autodiff node with the closed-form backward.
//!
//! On the channels-last view `x: [M = N·H·W, C]` (free for burn-cubecl's NHWC conv outputs):
//! forward `μ = mean(x)`, `σ² = mean((x − μ)²)`, `x̂ = (x − μ)/√(σ² + ε)`, `y = max(0, γ·x̂ + β)`;
//! backward with `g = dy · [y > 0]`: `dβ = Σ g`, `dγ = Σ g·x̂`,
//! `dx = γ/√(σ² + ε) · (g − dβ/M − x̂·dγ/M)`. That is two channel reductions and one elementwise
//! pass, where autodiff through burn's `BatchNorm` (`swap_dims(0, 1).reshape(..)` per statistic)
//! copies the activation to channels-first and back and makes about ten full-tensor passes.
//!
//! The forward is two [`BatchNormOps`] hooks: [`BatchNormOps::batch_norm_statistics`] (the batch
//! statistics and the updated running averages, every per-channel `[C]` result of the layer at
//! once) and [`BatchNormOps::normalize_relu`] (the elementwise pass); the backward is one,
//! [`BatchNormOps::batch_norm_relu_grad`]. On CUDA each is one or two CubeCL kernels (`cuda`):
//! per-channel arithmetic as separate burn operations cost ~15 launches and their host-side
//! recording per layer. Elsewhere they run as burn's ops ([`reference`], the trait defaults).
//!
//! With `groups` > 1 ([`NormConfig::groups`]) each equal group of the batch's images is
//! normalised over its own statistics ("ghost batches", as the replicas of a data-parallel run
//! normalise their share): the statistics are `[G, C]` and the running averages take their mean
//! over the groups, which is what a run whose replicas keep their own averages (Keras under a
//! distribution strategy, read as the mean of the replicas') holds, the average being linear.
//! Statistics are f32 whatever the activations' dtype; the output comes in the dtype asked for
//! (bf16 activations), the input gradient in the input's.

#[cfg(feature = "cuda")]
mod cuda;
pub mod reference;
#[cfg(test)]
mod tests;

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::module::{ModuleMapper, Param, RunningState};
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::activation::relu;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;

use super::{Kernels, to_dtype, unwrap, wrap};

/// BatchNorm + ReLU's operations as backend methods: the defaults are burn's ops
/// ([`reference`]); `Autodiff<B>` runs [`BatchNormOps::batch_norm_relu_train`] as the custom
/// node, burn's CUDA backend the hooks as CubeCL kernels (`cuda`).
pub trait BatchNormOps: Backend {
    /// Training-mode BatchNorm (batch statistics, biased variance; per group with
    /// `config.groups` > 1) followed by ReLU on `x: [N, C, H, W]`, the output in `dtype`
    /// (statistics in f32 whatever `x`'s dtype); returns `(output, running mean', running
    /// variance')`, the running averages updated and detached.
    fn batch_norm_relu_train(
        x: FloatTensor<Self>,
        inputs: NormInputs<Self>,
        config: NormConfig,
        dtype: FloatDType,
    ) -> NormOutputs<Self> {
        unfused::<Self>(x, inputs, config, dtype)
    }

    /// BatchNorm's batch statistics of `x: [N, C, H, W]` (any dtype), per group of the batch
    /// (`[G·C]`), and the running averages `[running_mean, running_var]` (`[C]`) updated with
    /// them ([`NormStatistics`]). Default: burn's ops; the CUDA backend runs a channel-sums
    /// kernel (per-cube partials) and one per-channel kernel that adds them up and finishes.
    fn batch_norm_statistics(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean_shift: Option<FloatTensor<Self>>,
        running: [FloatTensor<Self>; 2],
        config: NormConfig,
    ) -> NormStatistics<Self> {
        reference::statistics::<Self>(x, gamma, mean_shift, running, config)
    }

    /// BatchNorm + ReLU's forward pass `max(0, (x − mean)·scale + beta)` on `x: [N, C, H, W]`
    /// (any dtype) with f32 `mean`, `scale` (`[C]`, or `[G·C]` per group) and `beta` (`[C]`), in
    /// `dtype`. Default: burn's ops; the CUDA backend runs one kernel that writes channels-last.
    fn normalize_relu(
        x: FloatTensor<Self>,
        [mean, scale, beta]: [FloatTensor<Self>; 3],
        dtype: FloatDType,
    ) -> FloatTensor<Self> {
        reference::normalize_relu_by_ops::<Self>(x, [mean, scale, beta], dtype)
    }

    /// BatchNorm + ReLU's backward `[dx, dγ, dβ]` from `dy`, the output `y` and input `x`
    /// (`[N, C, H, W]`) and `[mean, inv_std, γ, β]` (f32; `mean`, `inv_std` per group): per
    /// group `dβ_g = Σ g`, `dγ_g = Σ g·x̂`, `dx = γ·inv_std·(g − dβ_g/M − x̂·dγ_g/M)` with
    /// `g = dy·[y > 0]`, `dx` in `x`'s dtype, `dγ`/`dβ` the sums over the groups. The mask
    /// `y > 0` may be recomputed from `x` as the forward computed `y` instead of read: the CUDA
    /// kernels do, one full-size read fewer in each of their two passes. Default: burn's ops;
    /// the CUDA backend runs a channel-sums kernel (per-cube partials), one per-channel kernel
    /// that adds them up and one elementwise kernel.
    fn batch_norm_relu_grad(
        activations: [FloatTensor<Self>; 3],
        per_channel: [FloatTensor<Self>; 4],
    ) -> [FloatTensor<Self>; 3] {
        reference::relu_grad::<Self>(activations, per_channel)
    }
}

impl BatchNormOps for burn::backend::Flex {}

impl<B: BatchNormOps, C: CheckpointStrategy> BatchNormOps for Autodiff<B, C> {
    fn batch_norm_relu_train(
        x: FloatTensor<Self>,
        inputs: NormInputs<Self>,
        config: NormConfig,
        dtype: FloatDType,
    ) -> NormOutputs<Self> {
        autodiff_batch_norm_relu::<B, C>(x, inputs, config, dtype)
    }
}

/// The model's BatchNorm + ReLU layer with `kernels`' `bn` part: in training the fused node, the
/// output in `dtype`, each of `groups` equal groups of the batch normalised on its own, and the
/// running statistics updated as burn's `BatchNorm::forward` updates them; in inference one
/// normalising pass over the running statistics ([`inference`]). Without the part, burn's module
/// and ReLU. `conv_bias` is the bias of a convolution that left it out of `x`
/// ([`super::ConvOps::conv3x3_same`]): in training it shifts only the batch mean, so it goes in
/// as the mean shift of the running mean; in inference it is subtracted from the running mean.
pub fn batch_norm_relu<B: BatchNormOps>(
    norm: &BatchNorm<B>,
    x: Tensor<B, 4>,
    kernels: Kernels,
    groups: usize,
    conv_bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 4> {
    if !kernels.fused_batch_norm {
        return relu(norm.forward(x));
    }
    let dtype = if kernels.bf16_activations { FloatDType::BF16 } else { FloatDType::F32 };
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
    let (y, running_mean, running_var) = B::batch_norm_relu_train(unwrap(x), inputs, config, dtype);
    set_running(&norm.running_mean, wrap::<B, 1>(running_mean).detach());
    set_running(&norm.running_var, wrap::<B, 1>(running_var).detach());
    wrap(y)
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

/// What the training BatchNorm reads besides the activation, `[C]` f32 vectors.
#[derive(Debug, Clone)]
pub struct NormInputs<B: Backend> {
    /// Scale γ (trained).
    pub gamma: FloatTensor<B>,
    /// Shift β (trained).
    pub beta: FloatTensor<B>,
    /// Added to the batch mean that feeds the running mean: the bias of a convolution that
    /// left it out of the activation (it cannot change the normalised output).
    pub mean_shift: Option<FloatTensor<B>>,
    /// Running mean before this batch.
    pub running_mean: FloatTensor<B>,
    /// Running variance before this batch.
    pub running_var: FloatTensor<B>,
}

/// BatchNorm's constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormConfig {
    /// Added to the variance.
    pub epsilon: f64,
    /// Weight of the batch statistic in the running averages (burn's convention).
    pub momentum: f64,
    /// Equal groups of the batch's images normalised each over its own statistics (1: the
    /// whole batch). The running averages take the mean of the groups' statistics.
    pub groups: usize,
}

/// A batch's statistics and the running averages updated with them, `[C]` f32 each.
#[derive(Debug, Clone)]
pub struct NormStatistics<B: Backend> {
    /// Batch mean.
    pub mean: FloatTensor<B>,
    /// `1/√(σ² + ε)` of the biased batch variance σ².
    pub inv_std: FloatTensor<B>,
    /// `γ · inv_std`.
    pub scale: FloatTensor<B>,
    /// `(1 − momentum)·running_mean + momentum·(mean + mean_shift)`.
    pub running_mean: FloatTensor<B>,
    /// `(1 − momentum)·running_var + momentum·σ²`.
    pub running_var: FloatTensor<B>,
}

/// `(output, running mean', running variance')` of [`BatchNormOps::batch_norm_relu_train`].
pub type NormOutputs<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// Forward on backend `B`, the output in `dtype`, with the statistics.
fn forward<B: BatchNormOps>(
    x: FloatTensor<B>,
    inputs: NormInputs<B>,
    config: NormConfig,
    dtype: FloatDType,
) -> (FloatTensor<B>, NormStatistics<B>) {
    let running = [inputs.running_mean, inputs.running_var];
    let stats = B::batch_norm_statistics(x.clone(), inputs.gamma, inputs.mean_shift, running, config);
    let y = B::normalize_relu(x, [stats.mean.clone(), stats.scale.clone(), inputs.beta], dtype);
    (y, stats)
}

/// The stock formulation, differentiated by whatever backend runs it (trait default, and the
/// reference the tests compare the custom node against); the running averages detached.
pub fn unfused<B: BatchNormOps>(
    x: FloatTensor<B>,
    inputs: NormInputs<B>,
    config: NormConfig,
    dtype: FloatDType,
) -> NormOutputs<B> {
    let (y, stats) = forward::<B>(x, inputs, config, dtype);
    let detached = |t: FloatTensor<B>| unwrap(wrap::<B, 1>(t).detach());
    (y, detached(stats.running_mean), detached(stats.running_var))
}

#[derive(Debug)]
struct BatchNormReluBackward;

/// What the backward needs: checkpointed input and γ, β, and the forward's output and statistics.
#[derive(Debug, Clone)]
struct SavedStats<B: Backend> {
    x: NodeId,
    gamma: NodeId,
    beta: FloatTensor<B>,
    output: FloatTensor<B>,
    mean: FloatTensor<B>,
    inv_std: FloatTensor<B>,
}

impl<B: BatchNormOps> Backward<B, 3> for BatchNormReluBackward {
    type State = SavedStats<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let saved = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(saved.x);
        let gamma: FloatTensor<B> = checkpointer.retrieve_node_output(saved.gamma);
        let [dx, d_gamma, d_beta] =
            B::batch_norm_relu_grad([dy, saved.output, x], [saved.mean, saved.inv_std, gamma, saved.beta]);
        for (node, grad) in [(node_x, dx), (node_gamma, d_gamma), (node_beta, d_beta)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// [`BatchNormOps::batch_norm_relu_train`] for `Autodiff<B, C>`.
fn autodiff_batch_norm_relu<B: BatchNormOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    inputs: NormInputs<Autodiff<B, C>>,
    config: NormConfig,
    dtype: FloatDType,
) -> NormOutputs<Autodiff<B, C>> {
    let (gamma, beta) = (inputs.gamma, inputs.beta);
    let inner = NormInputs::<B> {
        gamma: gamma.primitive.clone(),
        beta: beta.primitive.clone(),
        mean_shift: inputs.mean_shift.map(|shift| shift.primitive),
        running_mean: inputs.running_mean.primitive,
        running_var: inputs.running_var.primitive,
    };
    let (y, stats) = forward::<B>(x.primitive.clone(), inner, config, dtype);
    let prepared = BatchNormReluBackward
        .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful();
    let out = match prepared {
        OpsKind::Tracked(mut prep) => {
            let saved = SavedStats {
                x: prep.checkpoint(&x),
                gamma: prep.checkpoint(&gamma),
                beta: beta.primitive.clone(),
                output: y.clone(),
                mean: stats.mean,
                inv_std: stats.inv_std,
            };
            prep.finish(saved, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    let detached = Autodiff::<B, C>::from_inner;
    (out, detached(stats.running_mean), detached(stats.running_var))
}
