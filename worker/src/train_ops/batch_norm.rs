//! Training-mode BatchNorm + ReLU as one custom autodiff node with the closed-form backward.
//!
//! On the channels-last view `x: [M = N·H·W, C]` (free for burn-cubecl's NHWC conv outputs):
//! forward `μ = mean(x)`, `σ² = mean((x − μ)²)`, `x̂ = (x − μ)/√(σ² + ε)`, `y = max(0, γ·x̂ + β)`;
//! backward with `g = dy · [y > 0]`: `dβ = Σ g`, `dγ = Σ g·x̂`,
//! `dx = γ/√(σ² + ε) · (g − dβ/M − x̂·dγ/M)`. That is two channel reductions and one elementwise
//! pass, where autodiff through burn's `BatchNorm` (`swap_dims(0, 1).reshape(..)` per statistic)
//! copies the activation to channels-first and back and makes about ten full-tensor passes. The
//! channel sums go through [`TrainOps::channel_moments`] and [`TrainOps::relu_norm_grad_sums`],
//! the elementwise passes through [`TrainOps::normalize_relu`] and
//! [`TrainOps::normalize_relu_grad`] (one-pass CubeCL kernels on CUDA; burn's ops here, the trait
//! defaults). Statistics are f32 whatever the activations' dtype; the output comes in the dtype
//! asked for (bf16 activations), the input gradient in the input's.

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

use super::{NormOutputs, TrainOps, to_dtype, unwrap, wrap};

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

/// Channels-last f32 rows `[N·H·W, C]` of `x: [N, C, H, W]` in any dtype.
fn f32_rows<B: Backend>(x: FloatTensor<B>) -> Tensor<B, 2> {
    to_dtype(rows(wrap::<B, 4>(x)), FloatDType::F32)
}

/// [`TrainOps::channel_moments`] through burn's reductions: the mean, then the mean of the
/// squared deviations (two passes, two-stage sums each), in f32.
pub fn moments_by_reductions<B: Backend>(x: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let x = f32_rows::<B>(x);
    let mean = channel_mean(x.clone());
    let var = channel_mean((x - mean.clone()).square());
    (unwrap(mean), unwrap(var))
}

/// [`TrainOps::relu_norm_grad_sums`] through burn's ops: `g` and `g·x̂` written out, then
/// two-stage sums.
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

/// [`TrainOps::normalize_relu`] through burn's ops, on f32 channels-last rows.
pub fn normalize_relu_by_ops<B: Backend>(
    x: FloatTensor<B>,
    [mean, scale, beta]: [FloatTensor<B>; 3],
    dtype: FloatDType,
) -> FloatTensor<B> {
    let dims = wrap::<B, 4>(x.clone()).dims();
    let y = ((f32_rows::<B>(x) - row(mean)) * row(scale) + row(beta)).clamp_min(0.0);
    unwrap(unrows(to_dtype(y, dtype), dims))
}

/// [`TrainOps::normalize_relu_grad`] through burn's ops, on f32 channels-last rows.
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

/// Forward on backend `B`, the output in `dtype`: `(y, mean [C], inv_std [C], var [C])`, the
/// statistics in f32.
fn forward<B: TrainOps>(
    x: FloatTensor<B>,
    [gamma, beta]: [FloatTensor<B>; 2],
    epsilon: f64,
    dtype: FloatDType,
) -> (FloatTensor<B>, Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) {
    let (mean, var) = B::channel_moments(x.clone());
    let [mean, var] = [mean, var].map(|t| wrap::<B, 2>(t).flatten::<1>(0, 1));
    let inv_std = var.clone().add_scalar(epsilon).sqrt().recip();
    let scale = wrap::<B, 1>(gamma) * inv_std.clone();
    let y = B::normalize_relu(x, [unwrap(mean.clone()), unwrap(scale), beta], dtype);
    (y, mean, inv_std, var)
}

/// The stock formulation, differentiated by whatever backend runs it (trait default, and the
/// reference the tests compare the custom node against).
pub fn reference<B: TrainOps>(
    x: FloatTensor<B>,
    gamma_beta: [FloatTensor<B>; 2],
    epsilon: f64,
    dtype: FloatDType,
) -> NormOutputs<B> {
    let (y, mean, _, var) = forward::<B>(x, gamma_beta, epsilon, dtype);
    (y, unwrap(mean.detach()), unwrap(var.detach()))
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
        let dy = grads.consume::<B>(&ops.node);
        let saved = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(saved.x);
        let gamma = wrap::<B, 1>(checkpointer.retrieve_node_output(saved.gamma));
        let (mean, inv_std) = (wrap::<B, 1>(saved.mean), wrap::<B, 1>(saved.inv_std));
        let [n, c, h, w] = wrap::<B, 4>(x.clone()).dims();
        let m = (n * h * w) as f64;
        let as_row = |v: &Tensor<B, 1>| unwrap(v.clone().reshape([1, c]));
        let (d_beta, d_gamma) = B::relu_norm_grad_sums([
            dy.clone(),
            saved.output.clone(),
            x.clone(),
            as_row(&mean),
            as_row(&inv_std),
        ]);
        let [d_beta, d_gamma] = [d_beta, d_gamma].map(|t| wrap::<B, 2>(t).reshape([c]));
        if let Some(node) = node_x {
            // dx = coeff·(g − dβ/M − x̂·dγ/M), x̂ = (x − mean)·inv_std, coeff = γ·inv_std.
            let coeff = gamma * inv_std.clone();
            let bias_term = coeff.clone() * d_beta.clone().div_scalar(m);
            let x_term = coeff.clone() * inv_std * d_gamma.clone().div_scalar(m);
            let per_channel = [mean, coeff, bias_term, x_term].map(unwrap);
            let dx = B::normalize_relu_grad([dy, saved.output, x], per_channel);
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, unwrap(d_gamma));
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, unwrap(d_beta));
        }
    }
}

/// [`TrainOps::batch_norm_relu_train`] for `Autodiff<B, C>`.
pub(super) fn autodiff_batch_norm_relu<B: TrainOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    [gamma, beta]: [FloatTensor<Autodiff<B, C>>; 2],
    epsilon: f64,
    dtype: FloatDType,
) -> NormOutputs<Autodiff<B, C>> {
    let gamma_beta = [gamma.primitive.clone(), beta.primitive.clone()];
    let (y, mean, inv_std, var) = forward::<B>(x.primitive.clone(), gamma_beta, epsilon, dtype);
    let detached = |t: Tensor<B, 1>| Autodiff::<B, C>::from_inner(unwrap(t));
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
                output: y.clone(),
                mean: unwrap(mean),
                inv_std: unwrap(inv_std),
            };
            prep.finish(saved, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
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

    /// `(y, mean, var, dx, dγ, dβ)` of sum(y · r), y in f32, through the custom node
    /// (`custom`) or autodiff of the reference, the output written in `dtype`.
    fn outputs(
        [x, gamma, beta, r]: [&Tensor<Ad, 4>; 4],
        custom: bool,
        dtype: FloatDType,
    ) -> [Tensor<Flex, 4>; 6] {
        let (x, g, b) = (x.clone().require_grad(), gamma.clone().require_grad(), beta.clone().require_grad());
        let (px, pg, pb) =
            (unwrap(x.clone()), unwrap(g.clone().flatten::<1>(0, 3)), unwrap(b.clone().flatten::<1>(0, 3)));
        let (y, mean, var) = if custom {
            Ad::batch_norm_relu_train(px, [pg, pb], 1e-3, dtype)
        } else {
            reference::<Ad>(px, [pg, pb], 1e-3, dtype)
        };
        let y = wrap::<Ad, 4>(y);
        assert_eq!(y.dtype(), dtype.into());
        let y = to_dtype(y, FloatDType::F32);
        let grads = (y.clone() * r.clone()).sum().backward();
        let [mean, var] = [mean, var].map(|t| wrap::<Ad, 1>(t).inner().reshape([1, 1, 1, -1]));
        let [dg, db] = [g, b].map(|t| t.grad(&grads).unwrap());
        [y.inner(), mean, var, x.grad(&grads).unwrap(), dg, db]
    }

    /// Random `[x, γ, β, r]` for a `[4, 3, 5, 6]` activation (γ, β as `[1, 1, 1, 3]`).
    fn inputs() -> [Tensor<Ad, 4>; 4] {
        let device = Default::default();
        let random = |shape: [usize; 4], mean: f64, std: f64| {
            Tensor::<Ad, 4>::random(shape, Distribution::Normal(mean, std), &device)
        };
        [
            random([4, 3, 5, 6], 0.5, 2.0),
            random([1, 1, 1, 3], 1.0, 0.5),
            random([1, 1, 1, 3], 0.0, 0.5),
            random([4, 3, 5, 6], 0.0, 1.0),
        ]
    }

    #[test]
    fn bf16_output_matches_the_f32_reference_within_bf16_rounding() {
        let [x, gamma, beta, r] = inputs();
        let custom = outputs([&x, &gamma, &beta, &r], true, FloatDType::BF16);
        let reference = outputs([&x, &gamma, &beta, &r], false, FloatDType::F32);
        let names = ["output", "mean", "variance", "input grad", "gamma grad", "beta grad"];
        for ((name, c), s) in names.iter().zip(custom).zip(reference) {
            let scale: f32 = s.clone().abs().max().into_scalar();
            let err = max_abs_diff(c, s);
            assert!(scale > 1e-2 && err <= 1e-2 * scale, "{name}: differs by {err} (scale {scale})");
        }
    }

    #[test]
    fn custom_node_matches_autodiff_of_the_reference() {
        let [x, gamma, beta, r] = inputs();
        let custom = outputs([&x, &gamma, &beta, &r], true, FloatDType::F32);
        let reference = outputs([&x, &gamma, &beta, &r], false, FloatDType::F32);
        let zeros = reference[0].clone().lower_equal_elem(0.0).int().sum().into_scalar();
        assert!(zeros > 0, "ReLU never clipped: the test would not cover the mask");
        let dx_scale: f32 = reference[3].clone().abs().max().into_scalar();
        assert!(dx_scale > 0.1, "input gradient {dx_scale} too small to compare");
        let names = ["output", "mean", "variance", "input grad", "gamma grad", "beta grad"];
        let tolerances = [1e-5, 1e-6, 1e-5, 1e-4, 1e-4, 1e-4];
        for (((name, c), s), tolerance) in names.iter().zip(custom).zip(reference).zip(tolerances) {
            let err = max_abs_diff(c, s);
            assert!(err < tolerance, "{name}: differs by {err}");
        }
    }

    /// The CUDA kernels (channel sums, the two elementwise passes) against burn's ops on the
    /// same GPU, on channels-last activations (as burn's convolutions produce) in f32 and bf16,
    /// with a mean far from zero (the shifted variance) and ReLU zeros (the mask). Needs a CUDA
    /// GPU: `cargo test -p worker -- --ignored cuda`.
    #[cfg(feature = "cuda")]
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_batch_norm_kernels_match_burns_ops() {
        type G = burn_cuda::Cuda;
        let device = Default::default();
        let close = |name: &str, a: Tensor<G, 2>, b: Tensor<G, 2>, tolerance: f32| {
            let (a, b) = (to_dtype(a, FloatDType::F32), to_dtype(b, FloatDType::F32));
            let scale: f32 = b.clone().abs().max().into_scalar();
            let err: f32 = (a - b).abs().max().into_scalar();
            assert!(scale > 1e-3 && err <= tolerance * scale, "{name}: differs by {err} (scale {scale})");
        };
        let sums_close =
            |name: &str, a: FloatTensor<G>, b: FloatTensor<G>| close(name, wrap(a), wrap(b), 5e-4);
        // (x's dtype, the activations' dtype): f32, bf16, and the model's first layer (an f32
        // convolution output normalised into bf16 activations).
        let (f32, bf16) = (FloatDType::F32, FloatDType::BF16);
        for (x_dtype, dtype) in [(f32, f32), (bf16, bf16), (f32, bf16)] {
            // Same-input results: f32 arithmetic in another order, rounded once to `dtype`.
            let tolerance = if dtype == f32 && x_dtype == f32 { 1e-5 } else { 1e-2 };
            // Channels-last as burn's convolutions write it, and one channels-first (copied by the
            // kernels) with an odd channel count (one channel per vector).
            let shapes = [
                ([512, 64, 32, 32], true),
                ([7, 24, 5, 3], true),
                ([5, 7, 6, 3], false),
                ([64, 256, 8, 8], true),
            ];
            for ([n, c, h, w], channels_last) in shapes {
                let nhwc = |mean: f64, std: f64, dtype: FloatDType| {
                    let normal = Distribution::Normal(mean, std);
                    let t = if channels_last {
                        Tensor::<G, 4>::random([n, h, w, c], normal, &device).permute([0, 3, 1, 2])
                    } else {
                        Tensor::<G, 4>::random([n, c, h, w], normal, &device)
                    };
                    to_dtype(t, dtype)
                };
                let x = nhwc(4.0, 0.5, x_dtype);
                let (mean_k, var_k) = G::channel_moments(unwrap(x.clone()));
                let (mean_r, var_r) = moments_by_reductions::<G>(unwrap(x.clone()));
                sums_close("mean", mean_k, mean_r.clone());
                sums_close("variance", var_k, var_r.clone());
                let inv_std = wrap::<G, 2>(var_r).add_scalar(1e-3).sqrt().recip();
                let (dy, y) = (nhwc(0.0, 1.0, dtype), nhwc(0.0, 1.0, dtype).clamp_min(0.0));
                let inputs = [
                    unwrap(dy.clone()),
                    unwrap(y.clone()),
                    unwrap(x.clone()),
                    mean_r.clone(),
                    unwrap(inv_std.clone()),
                ];
                let (g_k, g_x_hat_k) = G::relu_norm_grad_sums(inputs.clone());
                let (g_r, g_x_hat_r) = relu_norm_grad_sums_by_reductions::<G>(inputs);
                sums_close("sum g", g_k, g_r);
                sums_close("sum g x_hat", g_x_hat_k, g_x_hat_r);

                let vector =
                    |mean: f64| Tensor::<G, 1>::random([c], Distribution::Normal(mean, 0.5), &device);
                let mean = wrap::<G, 2>(mean_r).reshape([c]);
                let per_channel = [mean.clone(), inv_std.reshape([c]), vector(0.0)].map(unwrap);
                let y_k = G::normalize_relu(unwrap(x.clone()), per_channel.clone(), dtype);
                let y_r = normalize_relu_by_ops::<G>(unwrap(x.clone()), per_channel, dtype);
                let rows_of = |t: FloatTensor<G>| rows(wrap::<G, 4>(t));
                assert_eq!(wrap::<G, 4>(y_k.clone()).dtype(), dtype.into());
                close("normalized output", rows_of(y_k), rows_of(y_r), tolerance);
                let per_channel = [mean, vector(1.0), vector(0.0), vector(0.0)].map(unwrap);
                let activations = [dy, y, x].map(unwrap);
                let dx_k = G::normalize_relu_grad(activations.clone(), per_channel.clone());
                assert_eq!(wrap::<G, 4>(dx_k.clone()).dtype(), x_dtype.into());
                let dx_r = normalize_relu_grad_by_ops::<G>(activations, per_channel);
                close("input gradient", rows_of(dx_k), rows_of(dx_r), tolerance);
            }
        }
    }
}
