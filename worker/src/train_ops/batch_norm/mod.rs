//! Training-mode BatchNorm + ReLU as one custom autodiff node with the closed-form backward.
//!
//! On the channels-last view `x: [M = N·H·W, C]` (free for burn-cubecl's NHWC conv outputs):
//! forward `μ = mean(x)`, `σ² = mean((x − μ)²)`, `x̂ = (x − μ)/√(σ² + ε)`, `y = max(0, γ·x̂ + β)`;
//! backward with `g = dy · [y > 0]`: `dβ = Σ g`, `dγ = Σ g·x̂`,
//! `dx = γ/√(σ² + ε) · (g − dβ/M − x̂·dγ/M)`. That is two channel reductions and one elementwise
//! pass, where autodiff through burn's `BatchNorm` (`swap_dims(0, 1).reshape(..)` per statistic)
//! copies the activation to channels-first and back and makes about ten full-tensor passes.
//!
//! The forward is two [`TrainOps`] hooks: [`TrainOps::batch_norm_statistics`] (the batch
//! statistics and the updated running averages, every per-channel `[C]` result of the layer at
//! once) and [`TrainOps::normalize_relu`] (the elementwise pass); the backward is one,
//! [`TrainOps::batch_norm_relu_grad`]. On CUDA each is one or two CubeCL kernels (`cube`):
//! per-channel arithmetic as separate burn operations cost ~15 launches and their host-side
//! recording per layer. Elsewhere they run as burn's ops ([`by_ops`], the trait defaults).
//! Statistics are f32 whatever the activations' dtype; the output comes in the dtype asked for
//! (bf16 activations), the input gradient in the input's.

pub mod by_ops;
#[cfg(test)]
mod tests;

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

use super::TrainOps;

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

/// `(output, running mean', running variance')` of [`TrainOps::batch_norm_relu_train`].
pub type NormOutputs<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// Forward on backend `B`, the output in `dtype`, with the statistics.
fn forward<B: TrainOps>(
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
pub fn reference<B: TrainOps>(
    x: FloatTensor<B>,
    inputs: NormInputs<B>,
    config: NormConfig,
    dtype: FloatDType,
) -> NormOutputs<B> {
    let (y, stats) = forward::<B>(x, inputs, config, dtype);
    let detached = |t: FloatTensor<B>| super::unwrap(super::wrap::<B, 1>(t).detach());
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

impl<B: TrainOps> Backward<B, 3> for BatchNormReluBackward {
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

/// [`TrainOps::batch_norm_relu_train`] for `Autodiff<B, C>`.
pub(super) fn autodiff_batch_norm_relu<B: TrainOps, C: CheckpointStrategy>(
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
