//! Training-mode BatchNorm + ReLU as one custom autodiff node with the closed-form backward.
//!
//! On the channels-last view `x: [M = N·H·W, C]` (free for burn-cubecl's NHWC conv outputs):
//! forward `μ = mean(x)`, `σ² = mean((x − μ)²)`, `x̂ = (x − μ)/√(σ² + ε)`, `y = max(0, γ·x̂ + β)`;
//! backward with `g = dy · [y > 0]`: `dβ = Σ g`, `dγ = Σ g·x̂`,
//! `dx = γ/√(σ² + ε) · (g − dβ/M − x̂·dγ/M)`. That is two channel reductions and one elementwise
//! pass, where autodiff through burn's `BatchNorm` (`swap_dims(0, 1).reshape(..)` per statistic)
//! copies the activation to channels-first and back and makes about ten full-tensor passes. The
//! channel sums go through [`TrainOps::channel_moments`] and [`TrainOps::relu_norm_grad_sums`]
//! (one-pass CubeCL kernels on CUDA; burn's two-stage reductions here, the trait defaults).

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;

use super::{NormOutputs, TrainOps, unwrap, wrap};

/// Channels-last rows `[N·H·W, C]` of `x: [N, C, H, W]`.
fn rows<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
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

/// [`TrainOps::channel_moments`] through burn's reductions: the mean, then the mean of the
/// squared deviations (two passes, two-stage sums each).
pub fn moments_by_reductions<B: Backend>(x: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let x = rows(wrap::<B, 4>(x));
    let mean = channel_mean(x.clone());
    let var = channel_mean((x - mean.clone()).square());
    (unwrap(mean), unwrap(var))
}

/// [`TrainOps::relu_norm_grad_sums`] through burn's ops: `g` and `g·x̂` written out, then
/// two-stage sums.
pub fn relu_norm_grad_sums_by_reductions<B: Backend>(
    [dy, y, x, mean, inv_std]: [FloatTensor<B>; 5],
) -> (FloatTensor<B>, FloatTensor<B>) {
    let [dy, y, x] = [dy, y, x].map(|t| rows(wrap::<B, 4>(t)));
    let (g, x_hat) = relu_grad_and_x_hat(dy, y, x, wrap(mean), wrap(inv_std));
    (unwrap(channel_sum(g.clone())), unwrap(channel_sum(g * x_hat)))
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

/// Forward on backend `B`: `(y, mean [1, C], inv_std [1, C], var [1, C])`.
fn forward<B: TrainOps>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> (Tensor<B, 4>, Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
    let dims = x.dims();
    let c = dims[1];
    let (mean, var) = B::channel_moments(unwrap(x.clone()));
    let (mean, var) = (wrap::<B, 2>(mean), wrap::<B, 2>(var));
    let inv_std = var.clone().add_scalar(epsilon).sqrt().recip();
    let scale = gamma.reshape([1, c]) * inv_std.clone();
    let y = ((rows(x) - mean.clone()) * scale + beta.reshape([1, c])).clamp_min(0.0);
    (unrows(y, dims), mean, inv_std, var)
}

/// The stock formulation, differentiated by whatever backend runs it (trait default, and the
/// reference the tests compare the custom node against).
pub fn reference<B: TrainOps>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> NormOutputs<B> {
    let c = gamma_len::<B>(&gamma);
    let (y, mean, _, var) = forward::<B>(wrap(x), wrap(gamma), wrap(beta), epsilon);
    (unwrap(y), unwrap(mean.detach().reshape([c])), unwrap(var.detach().reshape([c])))
}

fn gamma_len<B: Backend>(gamma: &FloatTensor<B>) -> usize {
    use burn::tensor::TensorMetadata;
    gamma.shape()[0]
}

#[derive(Debug)]
struct BatchNormReluBackward;

/// What the backward needs: checkpointed input, γ, and the forward's output and statistics.
#[derive(Debug, Clone)]
struct SavedStats<B: Backend> {
    x: NodeId,
    gamma: NodeId,
    output: FloatTensor<B>,
    mean: FloatTensor<B>,
    inv_std: FloatTensor<B>,
}

impl<B: TrainOps> Backward<B, 3> for BatchNormReluBackward {
    type State = SavedStats<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = wrap::<B, 4>(grads.consume::<B>(&ops.node));
        let saved = ops.state;
        let x = wrap::<B, 4>(checkpointer.retrieve_node_output(saved.x));
        let gamma = wrap::<B, 1>(checkpointer.retrieve_node_output(saved.gamma));
        let (mean, inv_std) = (wrap::<B, 2>(saved.mean), wrap::<B, 2>(saved.inv_std));
        let dims = x.dims();
        let (m, c) = ((dims[0] * dims[2] * dims[3]) as f64, dims[1]);
        let output = wrap::<B, 4>(saved.output);
        let (d_beta, d_gamma) = B::relu_norm_grad_sums([
            unwrap(dy.clone()),
            unwrap(output.clone()),
            unwrap(x.clone()),
            unwrap(mean.clone()),
            unwrap(inv_std.clone()),
        ]);
        let (d_beta, d_gamma) = (wrap::<B, 2>(d_beta), wrap::<B, 2>(d_gamma));
        if let Some(node) = node_x {
            // All layout views first: burn's fusion ends an elementwise kernel at every permute,
            // so interleaving them with the arithmetic would split it into one kernel per op.
            let (x, output, dy) = (rows(x), rows(output), rows(dy));
            let (g, x_hat) = relu_grad_and_x_hat(dy, output, x, mean, inv_std.clone());
            let coeff = gamma.reshape([1, c]) * inv_std;
            let dx = (g - d_beta.clone().div_scalar(m) - x_hat * d_gamma.clone().div_scalar(m)) * coeff;
            grads.register::<B>(node.id, unwrap(unrows(dx, dims)));
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, unwrap(d_gamma.reshape([c])));
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, unwrap(d_beta.reshape([c])));
        }
    }
}

/// [`TrainOps::batch_norm_relu_train`] for `Autodiff<B, C>`.
pub(super) fn autodiff_batch_norm_relu<B: TrainOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    gamma: FloatTensor<Autodiff<B, C>>,
    beta: FloatTensor<Autodiff<B, C>>,
    epsilon: f64,
) -> NormOutputs<Autodiff<B, C>> {
    let c = gamma_len::<B>(&gamma.primitive);
    let (y, mean, inv_std, var) = forward::<B>(
        wrap(x.primitive.clone()),
        wrap(gamma.primitive.clone()),
        wrap(beta.primitive.clone()),
        epsilon,
    );
    let detached = |t: Tensor<B, 2>| Autodiff::<B, C>::from_inner(unwrap(t.reshape([c])));
    let (batch_mean, batch_var) = (detached(mean.clone()), detached(var));
    let prepared = BatchNormReluBackward
        .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful();
    let out = match prepared {
        OpsKind::Tracked(mut prep) => {
            let saved = SavedStats {
                x: prep.checkpoint(&x),
                gamma: prep.checkpoint(&gamma),
                output: unwrap(y.clone()),
                mean: unwrap(mean),
                inv_std: unwrap(inv_std),
            };
            prep.finish(saved, unwrap(y))
        }
        OpsKind::UnTracked(prep) => prep.finish(unwrap(y)),
    };
    (out, batch_mean, batch_var)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    type Ad = Autodiff<Flex>;

    fn max_abs_diff<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    #[test]
    fn custom_node_matches_autodiff_of_the_reference() {
        let device = Default::default();
        let x = Tensor::<Ad, 4>::random([4, 3, 5, 6], Distribution::Normal(0.5, 2.0), &device);
        let gamma = Tensor::<Ad, 1>::random([3], Distribution::Normal(1.0, 0.5), &device);
        let beta = Tensor::<Ad, 1>::random([3], Distribution::Normal(0.0, 0.5), &device);
        let r = Tensor::<Ad, 4>::random([4, 3, 5, 6], Distribution::Normal(0.0, 1.0), &device);
        let run = |custom: bool| {
            let (x, g, b) =
                (x.clone().require_grad(), gamma.clone().require_grad(), beta.clone().require_grad());
            let (px, pg, pb) = (unwrap(x.clone()), unwrap(g.clone()), unwrap(b.clone()));
            let (y, mean, var) = if custom {
                Ad::batch_norm_relu_train(px, pg, pb, 1e-3)
            } else {
                reference::<Ad>(px, pg, pb, 1e-3)
            };
            let y = wrap::<Ad, 4>(y);
            let grads = (y.clone() * r.clone()).sum().backward();
            let (mean, var) = (wrap::<Ad, 1>(mean).inner(), wrap::<Ad, 1>(var).inner());
            (y.inner(), mean, var, x.grad(&grads).unwrap(), g.grad(&grads).unwrap(), b.grad(&grads).unwrap())
        };
        let (y_c, mean_c, var_c, dx_c, dg_c, db_c) = run(true);
        let (y_s, mean_s, var_s, dx_s, dg_s, db_s) = run(false);
        let zeros = y_s.clone().lower_equal_elem(0.0).int().sum().into_scalar();
        assert!(zeros > 0, "ReLU never clipped: the test would not cover the mask");
        assert!(max_abs_diff(y_c, y_s) < 1e-5);
        assert!(max_abs_diff(mean_c, mean_s) < 1e-6);
        assert!(max_abs_diff(var_c, var_s) < 1e-5);
        assert!(dx_s.clone().abs().max().into_scalar() > 0.1);
        assert!(max_abs_diff(dx_c, dx_s) < 1e-4);
        assert!(max_abs_diff(dg_c, dg_s) < 1e-4);
        assert!(max_abs_diff(db_c, db_s) < 1e-4);
    }

    /// The CUDA channel-sum kernels against burn's reductions on the same GPU, on channels-last
    /// activations (as burn's convolutions produce) with a mean far from zero (the shifted
    /// variance) and ReLU zeros (the mask). Needs a CUDA GPU: `cargo test -p worker -- --ignored cuda`.
    #[cfg(feature = "cuda")]
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_channel_sums_match_burns_reductions() {
        type G = burn_cuda::Cuda;
        let device = Default::default();
        let close = |name: &str, a: FloatTensor<G>, b: FloatTensor<G>| {
            let (a, b) = (wrap::<G, 2>(a), wrap::<G, 2>(b));
            let scale: f32 = b.clone().abs().max().into_scalar();
            let err: f32 = (a - b).abs().max().into_scalar();
            assert!(scale > 1e-3 && err <= 5e-4 * scale, "{name}: differs by {err} (scale {scale})");
        };
        for [n, c, h, w] in [[512, 64, 32, 32], [7, 24, 5, 3], [64, 256, 8, 8]] {
            let nhwc = |mean: f64, std: f64| {
                Tensor::<G, 4>::random([n, h, w, c], Distribution::Normal(mean, std), &device)
                    .permute([0, 3, 1, 2])
            };
            let x = nhwc(4.0, 0.5);
            let (mean_k, var_k) = G::channel_moments(unwrap(x.clone()));
            let (mean_r, var_r) = moments_by_reductions::<G>(unwrap(x.clone()));
            close("mean", mean_k, mean_r.clone());
            close("variance", var_k, var_r.clone());
            let inv_std = wrap::<G, 2>(var_r).add_scalar(1e-3).sqrt().recip();
            let (dy, y) = (nhwc(0.0, 1.0), nhwc(0.0, 1.0).clamp_min(0.0));
            let inputs = [unwrap(dy), unwrap(y), unwrap(x), mean_r, unwrap(inv_std)];
            let (g_k, g_x_hat_k) = G::relu_norm_grad_sums(inputs.clone());
            let (g_r, g_x_hat_r) = relu_norm_grad_sums_by_reductions::<G>(inputs);
            close("sum g", g_k, g_r);
            close("sum g x_hat", g_x_hat_k, g_x_hat_r);
        }
    }
}
