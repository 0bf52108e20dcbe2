//! 3×3 "same" convolution (stride 1, with bias) as a custom autodiff node whose weight gradient
//! is a batched GEMM.
//!
//! Forward and input gradient stay burn's implicit-GEMM kernels (0.3–1.2 ms per layer on an H100).
//! The weight gradient `dW[o, i, kh, kw] = Σ_{n,y,x} dY[n, o, y, x] · Xpad[n, i, y+kh, x+kw]` is a
//! GEMM with M×N = C_out × 9·C_in and K = N·H·W (up to 524,288): burn's kernel parallelises over
//! M×N only, so a few dozen cubes each walk all of K. Here the images are split into G groups
//! and each group is one matrix of a batched GEMM, `dYᵀ[g] (C_out × K/G) · cols[g] (K/G × 9·C_in)`,
//! whose G partial sums are added: split-K through the batch dimension. `cols` holds the nine
//! shifted copies of the (channels-last) input, ordered `(kh, kw, c_in)`
//! ([`TrainOps::im2col_3x3`]: one CubeCL kernel on CUDA, burn's pad + slices + stack elsewhere).
//!
//! With `flipped_input_grad` the input gradient is the forward convolution of `dY` with the
//! kernel transposed (`C_in ↔ C_out`) and flipped in both spatial axes, which runs on burn's
//! forward kernels (TMA loads) instead of its data-gradient kernels (no TMA).

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::ops::{ConvOptions, FloatTensor, PadMode};

use super::{Kernels, TrainOps, to_dtype, unwrap, wrap};

/// Rows (images × pixels) each GEMM of the weight gradient reduces over, at most. Measured on an
/// H100 (whole training step, img/s): 1024 → 19.3k, 2048 → 19.5–19.6k, 4096 → 19.3k,
/// 8192 → 18.5k, 16384 → 17.6k, 32768 → 16.5k: many small matrices fill the GPU best.
const ROWS_PER_GROUP: usize = 2048;

/// Stride 1, padding 1, no dilation, no groups: the model's only convolution.
pub fn same_3x3() -> ConvOptions<2> {
    ConvOptions::new([1, 1], [1, 1], [1, 1], 1)
}

/// Number of image groups G for a batch of `images` with `pixels` each: the largest divisor of
/// `images` with at least [`ROWS_PER_GROUP`] rows per group (1 for small batches).
pub fn image_groups(images: usize, pixels: usize) -> usize {
    let wanted = (images * pixels / ROWS_PER_GROUP).clamp(1, images);
    (1..=wanted).rev().find(|g| images.is_multiple_of(*g)).unwrap_or(1)
}

/// The dtype of a float tensor primitive.
fn dtype_of<B: Backend>(t: &FloatTensor<B>) -> FloatDType {
    use burn::tensor::TensorMetadata;
    t.dtype().into()
}

/// Forward convolution in `x`'s dtype (weight and bias cast to it), on the tuned kernels when
/// `tuned` ([`TrainOps::conv3x3_nobias`]). burn 0.21's bf16 convolution kernels mishandle a bias
/// (on an H100 its output came out 10 % off, and training with it stalled at loss ln 10 while
/// the same step without the bias learned), so in any dtype but f32 the bias is added as a
/// separate broadcast.
pub fn forward<B: TrainOps>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    tuned: bool,
) -> FloatTensor<B> {
    let dtype = dtype_of::<B>(&x);
    let weight = unwrap(to_dtype(wrap::<B, 4>(weight), dtype));
    let bias = bias.map(|b| to_dtype(wrap::<B, 1>(b), dtype));
    match bias {
        Some(bias) if dtype != FloatDType::F32 => {
            let c_out = bias.dims()[0];
            let out = wrap::<B, 4>(B::conv3x3_nobias(x, weight, tuned));
            unwrap(out + bias.reshape([1, c_out, 1, 1]))
        }
        None => B::conv3x3_nobias(x, weight, tuned),
        bias => B::conv2d(x, weight, bias.map(unwrap), same_3x3()),
    }
}

/// Input gradient in `dy`'s dtype (= `x`'s): burn's data-gradient kernel.
fn input_grad<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
    let weight = unwrap(to_dtype(wrap::<B, 4>(weight), dtype_of::<B>(&dy)));
    B::conv2d_x_backward(x, weight, dy, same_3x3())
}

/// [`TrainOps::conv_operands`] through burn's ops: a cast, and a transpose, flip and cast.
pub fn operands_by_ops<B: Backend>(weight: FloatTensor<B>, dtype: FloatDType) -> [FloatTensor<B>; 2] {
    let weight = wrap::<B, 4>(weight);
    let flipped = to_dtype(weight.clone().swap_dims(0, 1).flip([2, 3]), dtype);
    [unwrap(to_dtype(weight, dtype)), unwrap(flipped)]
}

/// Bias gradient `Σ_{n,y,x} dY[n, o, y, x]` of `dy: [N, C_out, H, W]`, in two stages over the
/// channels-last rows: per image group (as the weight gradient splits them), then the groups.
fn bias_grad<B: Backend>(dy: Tensor<B, 4>) -> Tensor<B, 1> {
    let [n, c_out, h, w] = dy.dims();
    let groups = image_groups(n, h * w);
    let rows =
        to_dtype(dy.permute([0, 2, 3, 1]), FloatDType::F32).reshape([groups, n / groups * h * w, c_out]);
    rows.sum_dim(1).sum_dim(0).reshape([c_out])
}

/// [`TrainOps::im2col_3x3`] through burn's ops: the channels-last input padded, nine shifted
/// slices of it stacked along a new axis before the channels.
pub fn im2col_3x3_by_slices<B: Backend>(x: FloatTensor<B>, dtype: FloatDType) -> FloatTensor<B> {
    let x = wrap::<B, 4>(x);
    let [n, c, h, w] = x.dims();
    // Channels-last view: free for burn-cubecl's conv outputs, which are NHWC in memory.
    // Padded in f32: burn pads with a default-dtype (f32) tensor.
    let channels_last = to_dtype(x.permute([0, 2, 3, 1]), FloatDType::F32);
    let padded = to_dtype(channels_last.pad([(0, 0), (1, 1), (1, 1), (0, 0)], PadMode::Constant(0.0)), dtype);
    let taps: Vec<Tensor<B, 4>> = (0..9)
        .map(|t| {
            let (kh, kw) = (t / 3, t % 3);
            padded.clone().slice([0..n, kh..kh + h, kw..kw + w, 0..c])
        })
        .collect();
    unwrap(Tensor::stack::<5>(taps, 3).reshape([n * h * w, 9 * c]))
}

/// Weight gradient (f32) of a 3×3 same convolution of `x: [N, C_in, H, W]` whose output
/// gradient is `dy: [N, C_out, H, W]` (both in the convolution's dtype), as grouped GEMMs (see
/// the module docs) with f32 results (f32 accumulation inside each group, the group sum in f32).
pub fn weight_grad<B: TrainOps>(x: Tensor<B, 4>, dy: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c_in, h, w] = x.dims();
    let c_out = dy.dims()[1];
    let groups = image_groups(n, h * w);
    let rows_per_group = n / groups * h * w;
    let dtype = dy.dtype().into();
    let cols = wrap::<B, 2>(B::im2col_3x3(unwrap(x), dtype)).reshape([groups, rows_per_group, 9 * c_in]);
    let dy = dy.permute([0, 2, 3, 1]).reshape([groups, rows_per_group, c_out]);
    wrap::<B, 3>(B::matmul_to_f32(unwrap(dy.swap_dims(1, 2)), unwrap(cols)))
        .sum_dim(0)
        .reshape([c_out, 3, 3, c_in])
        .permute([0, 3, 1, 2])
}

/// The backward node: gradients as `kernels` says; no bias gradient (it is exactly zero) when
/// the output feeds a training-mode BatchNorm ([`TrainOps::conv3x3_same`]), so the optimizer
/// leaves the bias as it is, as Adam would with a zero gradient.
#[derive(Debug)]
struct Conv3x3Backward {
    kernels: Kernels,
    zero_bias_grad: bool,
}

impl<B: TrainOps> Backward<B, 3> for Conv3x3Backward {
    /// Checkpointed input and weight, and with `flipped_input_grad` the flipped kernel in the
    /// convolution's dtype ([`TrainOps::conv_operands`]).
    type State = (NodeId, NodeId, Option<FloatTensor<B>>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, flipped) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_state);
        if let Some(node) = node_x {
            // dX[i, p, q] = Σ_{o, kh, kw} W[o, i, 2−kh, 2−kw] · dYpad[o, p+kh, q+kw]: the forward
            // convolution of dY by the flipped kernel.
            let dx = match flipped {
                Some(flipped) => B::conv3x3_nobias(grad.clone(), flipped, self.kernels.tuned_conv),
                None => input_grad::<B>(x.clone(), weight.clone(), grad.clone()),
            };
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_bias.filter(|_| !self.zero_bias_grad) {
            grads.register::<B>(node.id, unwrap(bias_grad(wrap::<B, 4>(grad.clone()))));
        }
        if let Some(node) = node_weight {
            let dw = if self.kernels.gemm_weight_grad {
                weight_grad::<B>(wrap(x), wrap(grad))
            } else {
                stock_weight_grad::<B>(x, weight, grad)
            };
            grads.register::<B>(node.id, unwrap(dw));
        }
    }
}

/// burn's own weight-gradient kernel (implicit GEMM) in the convolution's dtype, returned in f32.
fn stock_weight_grad<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> Tensor<B, 4> {
    let operand = unwrap(to_dtype(wrap::<B, 4>(weight), dtype_of::<B>(&x)));
    to_dtype(wrap(B::conv2d_weight_backward(x, operand, dy, same_3x3())), FloatDType::F32)
}

/// [`TrainOps::conv3x3_same`] for `Autodiff<B, C>`.
pub(super) fn autodiff_conv3x3<B: TrainOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
    kernels: Kernels,
    feeds_batch_norm: bool,
) -> FloatTensor<Autodiff<B, C>> {
    let prepared = Conv3x3Backward { kernels, zero_bias_grad: feeds_batch_norm }
        .prepare::<C>([x.node.clone(), weight.node.clone(), bias.node.clone()])
        .compute_bound()
        .stateful();
    // Ahead of the BatchNorm node the bias is left to it (see `TrainOps::conv3x3_same`).
    let bias = (!feeds_batch_norm).then_some(bias.primitive);
    let tuned = kernels.tuned_conv;
    match prepared {
        OpsKind::Tracked(mut prep) if kernels.flipped_input_grad => {
            let state = (prep.checkpoint(&x), prep.checkpoint(&weight));
            let [operand, flipped] = B::conv_operands(weight.primitive, dtype_of::<B>(&x.primitive));
            let out = forward::<B>(x.primitive, operand, bias, tuned);
            prep.finish((state.0, state.1, Some(flipped)), out)
        }
        OpsKind::Tracked(mut prep) => {
            let state = (prep.checkpoint(&x), prep.checkpoint(&weight), None);
            prep.finish(state, forward::<B>(x.primitive, weight.primitive, bias, tuned))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward::<B>(x.primitive, weight.primitive, bias, tuned)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;
    use burn::tensor::ElementConversion;
    use burn::tensor::module::conv2d;

    #[test]
    fn groups_divide_the_batch_and_fill_rows() {
        assert_eq!(image_groups(512, 1024), 256);
        assert_eq!(image_groups(512, 256), 64);
        assert_eq!(image_groups(512, 64), 16);
        assert_eq!(image_groups(336, 1024), 168);
        assert_eq!(image_groups(500, 1024), 250);
        assert_eq!(image_groups(7, 1024), 1); // wants 3 groups, but 7 is prime
        assert_eq!(image_groups(3, 16), 1); // 48 rows: fewer than one group's worth → 1
    }

    fn max_abs_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
        (a - b).abs().max().into_scalar().elem()
    }

    /// `(output, input grad, weight grad, bias grad)` of sum(out · r) through the custom node
    /// with `kernels` on backend `B` (`Some`; the input cast to `dtype` first, so that the node
    /// computes in it), or through burn's conv2d (`None`), brought back to the CPU (Flex) in f32.
    fn gradients<B: TrainOps>(
        inputs: [&Tensor<Flex, 4>; 3],
        bias: &Tensor<Flex, 1>,
        kernels: Option<(Kernels, FloatDType)>,
    ) -> [Tensor<Flex, 4>; 4] {
        let device = Default::default();
        let on_b = |t: &Tensor<Flex, 4>| Tensor::<Autodiff<B>, 4>::from_data(t.to_data(), &device);
        let [x, wt, r] = inputs.map(on_b);
        let (x, wt) = (x.require_grad(), wt.require_grad());
        let b = Tensor::<Autodiff<B>, 1>::from_data(bias.to_data(), &device).require_grad();
        let out = match kernels {
            Some((kernels, dtype)) => {
                let xp = unwrap(to_dtype(x.clone(), dtype));
                let [wp, bp] = [unwrap(wt.clone()), unwrap(b.clone())];
                let out = wrap::<Autodiff<B>, 4>(Autodiff::<B>::conv3x3_same(xp, wp, bp, kernels, false));
                assert_eq!(out.dtype(), dtype.into(), "the node computes in its input's dtype");
                to_dtype(out, FloatDType::F32)
            }
            None => conv2d(x.clone(), wt.clone(), Some(b.clone()), same_3x3()),
        };
        let grads = (out.clone() * r).sum().backward();
        let db = b.grad(&grads).unwrap().unsqueeze::<4>();
        let results = [out.inner(), x.grad(&grads).unwrap(), wt.grad(&grads).unwrap(), db];
        for t in &results {
            assert_eq!(t.dtype(), burn::tensor::DType::F32, "outputs and gradients must come back in f32");
        }
        results.map(|t| Tensor::from_data(t.into_data(), &Default::default()))
    }

    /// Gradients of sum(out · r) for a random r, through the custom node with `kernels` and
    /// through burn's conv2d, for `x: [n, c_in, h, w]`, both on the CPU in f32.
    fn compare(n: usize, c_in: usize, c_out: usize, [h, w]: [usize; 2], kernels: &str) {
        compare_on::<Flex>(n, c_in, c_out, [h, w], kernels, FloatDType::F32)
    }

    /// [`compare`] with the custom node on backend `B` computing in `dtype` (its input cast to
    /// it); the reference stays burn's f32 conv2d on the CPU (an independent implementation,
    /// and no GPU autotune of its backward kernels).
    fn compare_on<B: TrainOps>(
        n: usize,
        c_in: usize,
        c_out: usize,
        [h, w]: [usize; 2],
        kernels: &str,
        dtype: FloatDType,
    ) {
        let kernels: Kernels = kernels.parse().unwrap();
        let device = Default::default();
        let random = |shape: [usize; 4], std: f64| {
            Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, std), &device)
        };
        let x = random([n, c_in, h, w], 1.0);
        let wt = random([c_out, c_in, 3, 3], 0.3);
        let b = Tensor::<Flex, 1>::random([c_out], Distribution::Normal(0.0, 1.0), &device);
        let r = random([n, c_out, h, w], 1.0);
        let [out_c, dx_c, dw_c, db_c] = gradients::<B>([&x, &wt, &r], &b, Some((kernels, dtype)));
        let [out_s, dx_s, dw_s, db_s] = gradients::<Flex>([&x, &wt, &r], &b, None);
        // Relative error bounds: f32 reassociation (TF32 GEMMs on a GPU), or bf16 operands
        // (8-bit mantissa, ~4e-3).
        let on_flex = B::name(&Default::default()).contains("flex");
        let tolerance = match (dtype == FloatDType::BF16, on_flex) {
            (true, _) => 2e-2,
            (false, true) => 1e-5,
            (false, false) => 2e-3,
        };
        for (name, custom, stock) in
            [("output", out_c, out_s), ("input grad", dx_c, dx_s), ("weight grad", dw_c, dw_s)]
        {
            let scale: f32 = stock.clone().abs().max().into_scalar();
            assert!(scale > 0.5, "{kernels}: {name} suspiciously small: {scale}");
            let err = max_abs_diff(custom, stock);
            assert!(err < tolerance * scale, "{kernels}: {name} differs by {err} (scale {scale})");
        }
        let db_err = max_abs_diff(db_c, db_s);
        // A sum over n·h·w values of about ±1: f32 rounding grows with the count.
        let db_tolerance = match (dtype == FloatDType::BF16, on_flex) {
            (true, _) => 1e-2 * (n * h * w) as f32,
            (false, true) => 1e-3,
            (false, false) => 1e-5 * (n * h * w) as f32,
        };
        assert!(db_err < db_tolerance, "{kernels}: bias grad differs by {db_err}");
    }

    #[test]
    fn gradients_match_burn_conv2d_single_group() {
        compare(2, 3, 4, [5, 5], "wgrad");
    }

    #[test]
    fn bf16_inputs_convolve_in_bf16_within_its_rounding_with_f32_weight_gradients() {
        compare_on::<Flex>(4, 8, 8, [16, 16], "wgrad", FloatDType::BF16);
        compare_on::<Flex>(4, 8, 8, [16, 12], "wgrad+dgrad", FloatDType::BF16);
    }

    #[test]
    fn gradients_match_burn_conv2d_many_groups() {
        // 16 images of 32×32 = 16,384 rows → 8 groups of 2 images.
        assert_eq!(image_groups(16, 32 * 32), 8);
        compare(16, 2, 3, [32, 32], "wgrad");
    }

    #[test]
    fn im2col_weight_gradient_matches_on_non_square_images() {
        // H ≠ W catches a mixed-up window axis or stride.
        compare(3, 5, 4, [7, 5], "wgrad");
        compare(16, 4, 3, [32, 20], "wgrad");
    }

    #[test]
    fn flipped_kernel_input_gradient_matches_with_either_weight_gradient() {
        compare(3, 4, 5, [6, 7], "dgrad");
        compare(3, 4, 5, [7, 6], "wgrad+dgrad");
    }

    /// The whole node on the GPU against burn's f32 conv2d on the CPU: f32 (the default, and an
    /// odd image shape), and bf16 inputs at the model's channel counts (64 → 64, 64 → 128), with
    /// a bias (added apart from burn's bf16 kernels: `forward`): `cargo test -p worker --
    /// --ignored cuda`.
    #[cfg(feature = "cuda")]
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_gradients_match_burn_conv2d() {
        type B = burn_cuda::Cuda;
        compare_on::<B>(8, 16, 32, [16, 16], "fast", FloatDType::F32);
        compare_on::<B>(5, 8, 8, [7, 5], "wgrad+dgrad", FloatDType::F32);
        compare_on::<B>(8, 64, 64, [16, 16], "fast", FloatDType::BF16);
        compare_on::<B>(4, 64, 128, [8, 8], "fast", FloatDType::BF16);
    }

    /// The bf16 → f32 matmul of the weight gradient (a transposed lhs view, as the node passes
    /// it) against burn's f32 matmul of the same values, at a layer's group shape:
    /// `cargo test -p worker -- --ignored cuda`.
    #[cfg(feature = "cuda")]
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_bf16_matmul_to_f32_matches_the_f32_matmul() {
        type B = burn_cuda::Cuda;
        let device = Default::default();
        let random = |shape: [usize; 3]| {
            Tensor::<B, 3>::random(shape, Distribution::Normal(0.0, 1.0), &device).cast(FloatDType::BF16)
        };
        let (lhs, rhs) = (random([16, 2048, 64]).swap_dims(1, 2), random([16, 2048, 576]));
        let mixed = wrap::<B, 3>(B::matmul_to_f32(unwrap(lhs.clone()), unwrap(rhs.clone())));
        assert_eq!(mixed.dtype(), burn::tensor::DType::F32);
        let full = lhs.cast(FloatDType::F32).matmul(rhs.cast(FloatDType::F32));
        let scale: f32 = full.clone().abs().max().into_scalar();
        let err: f32 = (mixed - full).abs().max().into_scalar();
        assert!(scale > 10.0 && err < 1e-3 * scale, "differs by {err} (scale {scale})");
    }
}
