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
mod layer;
pub mod pooled;
pub mod reference;
#[cfg(test)]
mod tests;

pub use layer::{batch_norm_relu, pools_output, set_running};

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;

use super::{unwrap, wrap};

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
        unfused::<Self>(x, inputs, config, dtype, false)
    }

    /// [`BatchNormOps::batch_norm_relu_train`] with its output 2×2 average pooled (stride 2):
    /// `[N, C, H/2, W/2]` ([`pooled`]).
    fn batch_norm_relu_pool_train(
        x: FloatTensor<Self>,
        inputs: NormInputs<Self>,
        config: NormConfig,
        dtype: FloatDType,
    ) -> NormOutputs<Self> {
        unfused::<Self>(x, inputs, config, dtype, true)
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

    /// [`BatchNormOps::normalize_relu`] then 2×2 average pooling (stride 2) of its output (even
    /// H and W): `[N, C, H/2, W/2]` in `dtype`. Default: the two through burn's ops; the CUDA
    /// backend runs one kernel, which never writes the full-size output.
    fn normalize_relu_pool(
        x: FloatTensor<Self>,
        per_channel: [FloatTensor<Self>; 3],
        dtype: FloatDType,
    ) -> FloatTensor<Self> {
        pooled::normalize_relu_pool_by_ops::<Self>(x, per_channel, dtype)
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

    /// [`BatchNormOps::batch_norm_relu_grad`] of [`BatchNormOps::normalize_relu_pool`]'s layer:
    /// `dy` is the pooled output's gradient `[N, C, H/2, W/2]` (each element's `g` a quarter of
    /// its window's, masked), `[dy, x]`. Default: the output recomputed, burn's pooling gradient
    /// and [`reference::relu_grad`]; the CUDA backend's two passes read `dy` at each window.
    fn batch_norm_relu_pool_grad(
        activations: [FloatTensor<Self>; 2],
        per_channel: [FloatTensor<Self>; 4],
    ) -> [FloatTensor<Self>; 3] {
        pooled::relu_pool_grad_by_ops::<Self>(activations, per_channel)
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
        autodiff_batch_norm_relu::<B, C>(x, inputs, config, dtype, false)
    }

    fn batch_norm_relu_pool_train(
        x: FloatTensor<Self>,
        inputs: NormInputs<Self>,
        config: NormConfig,
        dtype: FloatDType,
    ) -> NormOutputs<Self> {
        autodiff_batch_norm_relu::<B, C>(x, inputs, config, dtype, true)
    }
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
    pooled: bool,
) -> (FloatTensor<B>, NormStatistics<B>) {
    let running = [inputs.running_mean, inputs.running_var];
    let stats = B::batch_norm_statistics(x.clone(), inputs.gamma, inputs.mean_shift, running, config);
    let per_channel = [stats.mean.clone(), stats.scale.clone(), inputs.beta];
    let y = match pooled {
        true => B::normalize_relu_pool(x, per_channel, dtype),
        false => B::normalize_relu(x, per_channel, dtype),
    };
    (y, stats)
}

/// The stock formulation, differentiated by whatever backend runs it (trait default, and the
/// reference the tests compare the custom node against); the running averages detached;
/// `pooled`: the output 2×2 average pooled.
pub fn unfused<B: BatchNormOps>(
    x: FloatTensor<B>,
    inputs: NormInputs<B>,
    config: NormConfig,
    dtype: FloatDType,
    pooled: bool,
) -> NormOutputs<B> {
    let (y, stats) = forward::<B>(x, inputs, config, dtype, pooled);
    let detached = |t: FloatTensor<B>| unwrap(wrap::<B, 1>(t).detach());
    (y, detached(stats.running_mean), detached(stats.running_var))
}

#[derive(Debug)]
struct BatchNormReluBackward;

/// What the backward needs: checkpointed input and γ, β, and the forward's output (none when
/// the node pooled it) and statistics.
#[derive(Debug, Clone)]
struct SavedStats<B: Backend> {
    x: NodeId,
    gamma: NodeId,
    beta: FloatTensor<B>,
    output: Option<FloatTensor<B>>,
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
        let per_channel = [saved.mean, saved.inv_std, gamma, saved.beta];
        let [dx, d_gamma, d_beta] = match saved.output {
            Some(y) => B::batch_norm_relu_grad([dy, y, x], per_channel),
            None => B::batch_norm_relu_pool_grad([dy, x], per_channel),
        };
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
    pooled: bool,
) -> NormOutputs<Autodiff<B, C>> {
    let (gamma, beta) = (inputs.gamma, inputs.beta);
    let inner = NormInputs::<B> {
        gamma: gamma.primitive.clone(),
        beta: beta.primitive.clone(),
        mean_shift: inputs.mean_shift.map(|shift| shift.primitive),
        running_mean: inputs.running_mean.primitive,
        running_var: inputs.running_var.primitive,
    };
    let (y, stats) = forward::<B>(x.primitive.clone(), inner, config, dtype, pooled);
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
                output: (!pooled).then(|| y.clone()),
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
