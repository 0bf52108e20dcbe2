//! The BatchNorm node against autodiff of its reference, and the CUDA kernels against burn's ops.

use super::reference::*;
use super::*;
use crate::train_ops::{to_dtype, unwrap, wrap};
use burn::backend::Flex;
use burn::tensor::Distribution;

type Ad = Autodiff<Flex>;

fn max_abs_diff<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

/// `(y, mean, var, dx, dγ, dβ)` of sum(y · r), y in f32, through the custom node
/// (`custom`) or autodiff of the reference, the output written in `dtype`, BatchNorm over
/// `groups` groups of the batch.
fn outputs(
    inputs: [&Tensor<Ad, 4>; 4],
    custom: bool,
    dtype: FloatDType,
    groups: usize,
) -> [Tensor<Flex, 4>; 6] {
    outputs_of(inputs, custom, dtype, groups, false)
}

/// [`outputs`], the output 2×2 average pooled with `pooled` (`r` then of the pooled shape).
fn outputs_of(
    [x, gamma, beta, r]: [&Tensor<Ad, 4>; 4],
    custom: bool,
    dtype: FloatDType,
    groups: usize,
    pooled: bool,
) -> [Tensor<Flex, 4>; 6] {
    let (x, g, b) = (x.clone().require_grad(), gamma.clone().require_grad(), beta.clone().require_grad());
    let (px, pg, pb) =
        (unwrap(x.clone()), unwrap(g.clone().flatten::<1>(0, 3)), unwrap(b.clone().flatten::<1>(0, 3)));
    // Momentum 1 and a zero mean shift: the running averages come back as the batch's mean
    // and variance.
    let c = x.dims()[1];
    let zeros = || unwrap(Tensor::<Ad, 1>::zeros([c], &Default::default()));
    let inputs = NormInputs {
        gamma: pg,
        beta: pb,
        mean_shift: Some(zeros()),
        running_mean: zeros(),
        running_var: zeros(),
    };
    let config = NormConfig { epsilon: 1e-3, momentum: 1.0, groups };
    let (y, mean, var) = match (custom, pooled) {
        (true, false) => Ad::batch_norm_relu_train(px, inputs, config, dtype),
        (true, true) => Ad::batch_norm_relu_pool_train(px, inputs, config, dtype),
        (false, pooled) => unfused::<Ad>(px, inputs, config, dtype, pooled),
    };
    let y = wrap::<Ad, 4>(y);
    assert_eq!(y.dtype(), dtype.into());
    let y = to_dtype(y, FloatDType::F32);
    let grads = (y.clone() * r.clone()).sum().backward();
    let [mean, var] = [mean, var].map(|t| wrap::<Ad, 1>(t).inner().reshape([1, 1, 1, -1]));
    let [dg, db] = [g, b].map(|t| t.grad(&grads).unwrap());
    [y.inner(), mean, var, x.grad(&grads).unwrap(), dg, db]
}

/// Fixed pseudo-random `[x, γ, β, r]` for a `[4, 3, 5, 6]` activation (γ, β as `[1, 1, 1, 3]`),
/// from seeded generators of their own: the backend's is shared by tests running in parallel,
/// so its draws (and a bf16 bound's margin) would change from run to run.
fn inputs() -> [Tensor<Ad, 4>; 4] {
    inputs_of([4, 3, 5, 6], [4, 3, 5, 6])
}

/// [`inputs`] for an activation of shape `x` and an output (so `r`) of shape `y`.
fn inputs_of(x: [usize; 4], y: [usize; 4]) -> [Tensor<Ad, 4>; 4] {
    use rand::{Rng, SeedableRng};
    let normal = |shape: [usize; 4], mean: f32, std: f32, seed: u64| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // The sum of twelve uniforms less six: mean 0, variance 1, close to normal.
        let n = shape.iter().product::<usize>();
        let values: Vec<f32> =
            (0..n).map(|_| mean + std * ((0..12).map(|_| rng.random::<f32>()).sum::<f32>() - 6.0)).collect();
        Tensor::<Ad, 4>::from_data(TensorData::new(values, shape), &Default::default())
    };
    [
        normal(x, 0.5, 2.0, 1),
        normal([1, 1, 1, x[1]], 1.0, 0.5, 2),
        normal([1, 1, 1, x[1]], 0.0, 0.5, 3),
        normal(y, 0.0, 1.0, 4),
    ]
}

/// The node that pools its output (`bnpool`) against autodiff of the reference followed by
/// burn's average pooling: output, statistics and all gradients, over 1, 2 and 4 groups.
#[test]
fn pooled_node_matches_autodiff_of_the_reference_then_pooling() {
    let [x, gamma, beta, r] = inputs_of([4, 3, 6, 4], [4, 3, 3, 2]);
    for groups in [1, 2, 4] {
        let run = |custom| outputs_of([&x, &gamma, &beta, &r], custom, FloatDType::F32, groups, true);
        let (custom, reference) = (run(true), run(false));
        assert_eq!(custom[0].dims(), [4, 3, 3, 2]);
        let dx_scale: f32 = reference[3].clone().abs().max().into_scalar();
        assert!(dx_scale > 0.01, "input gradient {dx_scale} too small to compare");
        let names = ["output", "mean", "variance", "input grad", "gamma grad", "beta grad"];
        for ((name, c), s) in names.iter().zip(custom).zip(reference) {
            let err = max_abs_diff(c, s);
            assert!(err < 1e-4, "{name} ({groups} groups): differs by {err}");
        }
    }
}

#[test]
fn bf16_output_matches_the_f32_reference_within_bf16_rounding() {
    let [x, gamma, beta, r] = inputs();
    let custom = outputs([&x, &gamma, &beta, &r], true, FloatDType::BF16, 1);
    let reference = outputs([&x, &gamma, &beta, &r], false, FloatDType::F32, 1);
    let names = ["output", "mean", "variance", "input grad", "gamma grad", "beta grad"];
    for ((name, c), s) in names.iter().zip(custom).zip(reference) {
        let scale: f32 = s.clone().abs().max().into_scalar();
        let err = max_abs_diff(c, s);
        assert!(scale > 1e-2 && err <= 1e-2 * scale, "{name}: differs by {err} (scale {scale})");
    }
}

#[test]
fn custom_node_matches_autodiff_of_the_reference() {
    for groups in [1, 2, 4] {
        custom_node_matches_autodiff_of_the_reference_in(groups);
    }
}

fn custom_node_matches_autodiff_of_the_reference_in(groups: usize) {
    let [x, gamma, beta, r] = inputs();
    let custom = outputs([&x, &gamma, &beta, &r], true, FloatDType::F32, groups);
    let reference = outputs([&x, &gamma, &beta, &r], false, FloatDType::F32, groups);
    let zeros = reference[0].clone().lower_equal_elem(0.0).int().sum().into_scalar();
    assert!(zeros > 0, "ReLU never clipped: the test would not cover the mask");
    let dx_scale: f32 = reference[3].clone().abs().max().into_scalar();
    assert!(dx_scale > 0.1, "input gradient {dx_scale} too small to compare");
    let names = ["output", "mean", "variance", "input grad", "gamma grad", "beta grad"];
    let tolerances = [1e-5, 1e-6, 1e-5, 1e-4, 1e-4, 1e-4];
    for (((name, c), s), tolerance) in names.iter().zip(custom).zip(reference).zip(tolerances) {
        let err = max_abs_diff(c, s);
        assert!(err < tolerance, "{name} ({groups} groups): differs by {err}");
    }
}

/// BatchNorm over groups is BatchNorm of each group on its own: outputs and input gradients
/// equal those of the group's images alone, `dγ`/`dβ` and the running averages are the sum and
/// the mean over the groups.
#[test]
fn groups_normalise_like_separate_batches() {
    let [x, gamma, beta, r] = inputs();
    let groups = 2;
    let whole = outputs([&x, &gamma, &beta, &r], true, FloatDType::F32, groups);
    let half = x.dims()[0] / groups;
    let parts: Vec<[Tensor<Flex, 4>; 6]> = (0..groups)
        .map(|g| {
            let slice = |t: &Tensor<Ad, 4>| t.clone().narrow(0, g * half, half);
            outputs([&slice(&x), &gamma, &beta, &slice(&r)], true, FloatDType::F32, 1)
        })
        .collect();
    let cat = |k: usize| Tensor::cat(parts.iter().map(|p| p[k].clone()).collect(), 0);
    let mean_of = |k: usize| Tensor::cat(parts.iter().map(|p| p[k].clone()).collect(), 0).mean_dim(0);
    let sum_of = |k: usize| Tensor::cat(parts.iter().map(|p| p[k].clone()).collect(), 0).sum_dim(0);
    let expected = [cat(0), mean_of(1), mean_of(2), cat(3), sum_of(4), sum_of(5)];
    let names = ["output", "running mean", "running variance", "input grad", "gamma grad", "beta grad"];
    for ((name, got), want) in names.iter().zip(whole).zip(expected) {
        assert_eq!(got.dims(), want.dims(), "{name}");
        let err = max_abs_diff(got, want);
        assert!(err < 1e-4, "{name}: differs by {err}");
    }
    // And the groups are not the whole batch: the statistics differ.
    let batch = outputs([&x, &gamma, &beta, &r], true, FloatDType::F32, 1);
    let [grouped_var, batch_var] =
        [outputs([&x, &gamma, &beta, &r], true, FloatDType::F32, groups), batch].map(|o| o[2].clone());
    assert!(max_abs_diff(grouped_var, batch_var) > 1e-3, "group statistics equal the batch's");
}

/// The CUDA hooks (statistics with running averages, the normalising pass, the backward)
/// against burn's ops on the same GPU, on channels-last activations (as burn's convolutions produce) in f32 and bf16,
/// with a mean far from zero (the shifted variance) and ReLU zeros (the mask). Needs a CUDA
/// GPU: `cargo test -p worker -- --ignored cuda`.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_batch_norm_kernels_match_burns_ops() {
    type G = burn_cuda::Cuda;
    let device = Default::default();
    let close = assert_close::<2>;
    let sums_close = |name: &str, a: FloatTensor<G>, b: FloatTensor<G>| {
        close(name, wrap::<G, 1>(a).unsqueeze(), wrap::<G, 1>(b).unsqueeze(), 5e-4)
    };
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
            // More channel vectors than a cube has threads (f32: 258), two blocks of them.
            ([3, 1032, 3, 2], true),
            // Pooled, with a group's rows not a multiple of a cube's.
            ([6, 24, 6, 2], true),
        ];
        // Groups of the batch: the whole batch, and as many groups as images allow (up to 16).
        let group_counts = |n: usize| [1, (1..=16.min(n)).rev().find(|g| n.is_multiple_of(*g)).unwrap_or(1)];
        for (([n, c, h, w], channels_last), groups) in
            shapes.into_iter().flat_map(|shape| group_counts(shape.0[0]).map(|groups| (shape, groups)))
        {
            let nhwc = |mean: f64, std: f64, dtype: FloatDType| {
                let normal = Distribution::Normal(mean, std);
                let t = if channels_last {
                    crate::model::drawn(|| Tensor::<G, 4>::random([n, h, w, c], normal, &device))
                        .permute([0, 3, 1, 2])
                } else {
                    crate::model::drawn(|| Tensor::<G, 4>::random([n, c, h, w], normal, &device))
                };
                to_dtype(t, dtype)
            };
            let x = nhwc(4.0, 0.5, x_dtype);
            let vector = |mean: f64| {
                unwrap(crate::model::drawn(|| {
                    Tensor::<G, 1>::random([c], Distribution::Normal(mean, 0.5), &device)
                }))
            };
            // Statistics and running averages, with and without a mean shift.
            let config = NormConfig { epsilon: 1e-3, momentum: 0.25, groups };
            let (gamma, running) = (vector(1.0), [vector(0.0), vector(1.0)]);
            for shift in [Some(vector(3.0)), None] {
                let stats = |kernel: bool| {
                    let args = (unwrap(x.clone()), gamma.clone(), shift.clone(), running.clone(), config);
                    let s = if kernel {
                        G::batch_norm_statistics(args.0, args.1, args.2, args.3, args.4)
                    } else {
                        statistics::<G>(args.0, args.1, args.2, args.3, args.4)
                    };
                    [s.mean, s.inv_std, s.scale, s.running_mean, s.running_var]
                };
                let names = ["mean", "inv_std", "scale", "running mean", "running variance"];
                for ((name, k), r) in names.iter().zip(stats(true)).zip(stats(false)) {
                    sums_close(name, k, r);
                }
            }
            let stats = statistics::<G>(unwrap(x.clone()), gamma.clone(), None, running.clone(), config);

            let beta = vector(0.0);
            let per_channel = [stats.mean.clone(), stats.scale.clone(), beta.clone()];
            let y_k = G::normalize_relu(unwrap(x.clone()), per_channel.clone(), dtype);
            let y_r = normalize_relu_by_ops::<G>(unwrap(x.clone()), per_channel, dtype);
            let rows_of = |t: FloatTensor<G>| rows(wrap::<G, 4>(t));
            assert_eq!(wrap::<G, 4>(y_k.clone()).dtype(), dtype.into());
            close("normalized output", rows_of(y_k.clone()), rows_of(y_r), tolerance);

            if h % 2 == 0 && w % 2 == 0 {
                pooled_kernels_match_burns_ops(&x, [&gamma, &beta], &stats, (dtype, tolerance));
            }
            // The backward with the forward's own output, whose ReLU mask the kernels recompute
            // from `x` (β ~ N(0, 0.5): about a third of the outputs are zeros).
            let dy = nhwc(0.0, 1.0, dtype);
            let activations = [unwrap(dy), y_k, unwrap(x)];
            let per_channel = [stats.mean, stats.inv_std, gamma.clone(), beta];
            let [dx_k, dg_k, db_k] = G::batch_norm_relu_grad(activations.clone(), per_channel.clone());
            assert_eq!(wrap::<G, 4>(dx_k.clone()).dtype(), x_dtype.into());
            let [dx_r, dg_r, db_r] = relu_grad::<G>(activations, per_channel);
            close("input gradient", rows_of(dx_k), rows_of(dx_r), tolerance);
            sums_close("gamma gradient", dg_k, dg_r);
            sums_close("beta gradient", db_k, db_r);
        }
    }
}

/// Asserts that a kernel's output `a` matches burn's `b` within `tolerance` of `b`'s largest
/// magnitude, compared in f32, with no NaN (an element never written) in either.
#[cfg(feature = "cuda")]
fn assert_close<const D: usize>(
    name: &str,
    a: Tensor<burn_cuda::Cuda, D>,
    b: Tensor<burn_cuda::Cuda, D>,
    tolerance: f32,
) {
    let (a, b) = (to_dtype(a, FloatDType::F32), to_dtype(b, FloatDType::F32));
    let scale: f32 = b.clone().abs().max().into_scalar();
    // The maximum skips NaNs; a sum keeps them.
    let total: f32 = (a.clone() - b.clone()).abs().sum().into_scalar();
    let err: f32 = (a - b).abs().max().into_scalar();
    assert!(total.is_finite(), "{name}: not finite");
    assert!(scale > 1e-3 && err <= tolerance * scale, "{name}: differs by {err} (scale {scale})");
}

/// The pooled layer's kernels (`bnpool`: the forward pass with the pooling folded in, the
/// backward from the pooled gradient) against burn's ops on the same GPU (see
/// [`cuda_batch_norm_kernels_match_burns_ops`]).
#[cfg(feature = "cuda")]
fn pooled_kernels_match_burns_ops(
    x: &Tensor<burn_cuda::Cuda, 4>,
    [gamma, beta]: [&FloatTensor<burn_cuda::Cuda>; 2],
    stats: &NormStatistics<burn_cuda::Cuda>,
    (dtype, tolerance): (FloatDType, f32),
) {
    type G = burn_cuda::Cuda;
    let close = |name: &str, a: FloatTensor<G>, b: FloatTensor<G>, tolerance: f32| {
        assert_close(name, wrap::<G, 4>(a), wrap::<G, 4>(b), tolerance)
    };
    let [n, c, h, w] = x.dims();
    let per_channel = [stats.mean.clone(), stats.scale.clone(), beta.clone()];
    let y_k = G::normalize_relu_pool(unwrap(x.clone()), per_channel.clone(), dtype);
    let y_r = super::pooled::normalize_relu_pool_by_ops::<G>(unwrap(x.clone()), per_channel, dtype);
    assert_eq!(wrap::<G, 4>(y_k.clone()).dims(), [n, c, h / 2, w / 2]);
    close("pooled output", y_k, y_r, tolerance);
    let dy = crate::model::drawn(|| {
        Tensor::<G, 4>::random([n, h / 2, w / 2, c], Distribution::Normal(0.0, 1.0), &x.device())
    });
    let dy = unwrap(to_dtype(dy.permute([0, 3, 1, 2]), dtype));
    let per_channel = [stats.mean.clone(), stats.inv_std.clone(), gamma.clone(), beta.clone()];
    let activations = [dy, unwrap(x.clone())];
    let kernel = G::batch_norm_relu_pool_grad(activations.clone(), per_channel.clone());
    let reference = super::pooled::relu_pool_grad_by_ops::<G>(activations, per_channel);
    let [dx_k, dg_k, db_k] = kernel;
    let [dx_r, dg_r, db_r] = reference;
    close("pooled input gradient", dx_k, dx_r, tolerance);
    let vector = |t: FloatTensor<G>| unwrap(wrap::<G, 1>(t).reshape([1, 1, 1, c]));
    close("pooled gamma gradient", vector(dg_k), vector(dg_r), 5e-4);
    close("pooled beta gradient", vector(db_k), vector(db_r), 5e-4);
}
