//! 3×3 "same" convolution (stride 1, with bias) as a custom autodiff node whose weight gradient
//! is a batched GEMM.
//!
//! Forward and input gradient run on burn's implicit-GEMM kernels, with `tconv` on tilings
//! tuned for the model, or with `cudnn` on cuDNN ([`ConvOps::conv3x3_nobias`], which then also
//! takes the weight gradient: [`ConvOps::conv3x3_weight_grad`]); with `xgemm` the image's few-channel
//! convolution is one explicit GEMM over its im2col matrix instead ([`reference::forward_by_gemm`]).
//! The weight gradient `dW[o, i, kh, kw] = Σ_{n,y,x} dY[n, o, y, x] · Xpad[n, i, y+kh, x+kw]` is a
//! GEMM with M×N = C_out × 9·C_in and K = N·H·W (up to 524,288): burn's kernel parallelises over
//! M×N only, so a few dozen cubes each walk all of K. Here the images are split into G groups
//! and each group is one matrix of a batched GEMM, `dYᵀ[g] (C_out × K/G) · cols[g] (K/G × 9·C_in)`,
//! whose G partial sums are added: split-K through the batch dimension. `cols` holds the nine
//! shifted copies of the (channels-last) input, ordered `(kh, kw, c_in)`
//! ([`ConvOps::im2col_3x3`]: one CubeCL kernel on CUDA, burn's pad + slices + stack elsewhere).
//!
//! With `flipped_input_grad` the input gradient is the forward convolution of `dY` with the
//! kernel transposed (`C_in ↔ C_out`) and flipped in both spatial axes, which runs on burn's
//! forward kernels (TMA loads) instead of its data-gradient kernels (no TMA); both operands (the
//! kernel in the convolution's dtype and its flipped transpose) come from one
//! [`ConvOps::conv_operands`] call in the forward, or for all of a model's layers at once from
//! [`ConvOps::conv_operands_many`] ([`layer_operands`]).

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
pub use cuda::cudnn::library_version as cudnn_library_version;
pub mod grouped;
pub mod library;
mod node;
pub mod per_model;
pub mod reference;
#[cfg(test)]
mod tests;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;

use super::{ConvEngine, ImageCores, Kernels, to_dtype, unwrap, wrap};
use reference::{dtype_of, weight_grad};

/// Bytes of cuDNN's workspace on each stream (each job slot) that runs its convolutions: 256 MiB
/// left the fused step's fast data-gradient algorithm out.
pub const CUDNN_WORKSPACE_BYTES: u64 = 1 << 30;

/// Input channels below which a convolution is the image's layer, which cuDNN takes in sets
/// without `xgemm` (in place of that part's im2col matrix and two f32 matmuls, 346 µs a step on
/// an H100 under Nsight Compute): in f32, or in bf16 with its channels padded to this many; fused
/// groups' bf16 image layers run on the single model's direct kernels.
pub const IMAGE_CHANNELS: usize = 8;

/// The convolution's operations as backend methods: the defaults are burn's ops
/// ([`reference`]); `Autodiff<B>` runs [`ConvOps::conv3x3_same`] as the custom node, burn's CUDA
/// backend the hooks as CubeCL kernels (`cuda`).
pub trait ConvOps: Backend {
    /// 3×3 convolution, stride 1, padding 1, with bias, in the dtype of `x` (weight and bias
    /// cast to it; f32 accumulation); its gradients as `kernels` says.
    ///
    /// `feeds_batch_norm`: the output goes straight into the fused BatchNorm, which takes the
    /// bias into its mean, so it is not added. In training that BatchNorm subtracts every
    /// channel's batch mean, so the bias cannot change the loss: the caller adds it to the batch
    /// mean that feeds the running average, and its gradient is exactly zero (one reduction over
    /// the output gradient less per layer, and no bias in burn's bf16 convolution, which
    /// mishandles one); in inference the caller subtracts it from the running mean.
    ///
    /// `operands`: the weight's [`Self::conv_operands`] in `x`'s dtype, made beforehand with
    /// the other layers' ([`Self::conv_operands_many`]); the node makes them itself without
    /// (or in another dtype). The default is the inference forward on the `kernels`'
    /// convolution engine, which reads the weight itself.
    fn conv3x3_same(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        operands: Option<[FloatTensor<Self>; 2]>,
        kernels: Kernels,
        feeds_batch_norm: bool,
    ) -> FloatTensor<Self> {
        let _ = operands;
        let bias = (!feeds_batch_norm).then_some(bias);
        reference::forward::<Self>(x, weight, bias, kernels.conv_engine())
    }

    /// Batched matmul `[B, M, K] × [B, K, N] → [B, M, N]` accumulated and returned in f32
    /// whatever the operands' dtype. Default: the operands cast to f32 (a CPU's bf16 matmul may
    /// accumulate in bf16); the CUDA backend reads bf16 operands and writes f32 directly.
    fn matmul_to_f32(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        let [lhs, rhs] = [lhs, rhs].map(|t| to_dtype(wrap::<Self, 3>(t), FloatDType::F32));
        unwrap(lhs.matmul(rhs))
    }

    /// `Σ_b lhs[b]·rhs[b]`: `[B, M, K] × [B, K, N] → [M, N]` accumulated and returned in f32
    /// (the weight gradient's split-K GEMM over image groups). Default: [`Self::matmul_to_f32`]
    /// and a sum over the batch; the CUDA backend sums the products in one kernel.
    fn summed_matmul_to_f32(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        let products = wrap::<Self, 3>(Self::matmul_to_f32(lhs, rhs));
        let [_, m, n] = products.dims();
        unwrap(products.sum_dim(0).reshape([m, n]))
    }

    /// [`Self::summed_matmul_to_f32`] for `sums` J runs of consecutive batches: `[J·S, M, K] ×
    /// [J·S, K, N] → [J, M, N]`, run `j` the sum of products `j·S .. (j+1)·S` (the weight
    /// gradients of J fused models, each split over S image groups). Default: the products
    /// summed over each run by burn's ops; the CUDA backend sums them in one kernel.
    fn grouped_summed_matmul_to_f32(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        sums: usize,
    ) -> FloatTensor<Self> {
        let products = wrap::<Self, 3>(Self::matmul_to_f32(lhs, rhs));
        let [batches, m, n] = products.dims();
        unwrap(products.reshape([sums, batches / sums, m, n]).sum_dim(1).reshape([sums, m, n]))
    }

    /// The im2col matrix of a 3×3 "same" convolution (zero padding) of `x: [N, C, H, W]`:
    /// `[N·H·W, 9·C]` in `dtype`, columns ordered `(kh, kw, c)`. Default: a padded copy, nine
    /// slices and a stack through burn's ops; the CUDA backend runs one kernel.
    fn im2col_3x3(x: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        reference::im2col_3x3_by_slices::<Self>(x, dtype)
    }

    /// [`Self::im2col_3x3`] of `x: [N, G·C, H, W]` whose channels are `groups` G groups side by
    /// side (the channels of G fused models): one matrix per group, `[G·N·H·W, 9·C]` with group
    /// `g`'s rows from `g·N·H·W` on. Default: [`Self::im2col_3x3`] and a permuted copy; the CUDA
    /// backend writes it in one kernel.
    fn im2col_3x3_grouped(x: FloatTensor<Self>, groups: usize, dtype: FloatDType) -> FloatTensor<Self> {
        grouped::im2col_by_ops::<Self>(x, groups, dtype)
    }

    /// `groups` G 3×3 "same" convolutions without bias side by side (the layers of G fused
    /// models): `x: [N, G·C_in, H, W]`, `weight: [G·C_out, C_in, 3, 3]` (f32, cast to `x`'s
    /// dtype). Default: burn's grouped `conv2d`; `Autodiff<B>` runs the batched-GEMM node
    /// ([`grouped`]).
    fn grouped_conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, groups: usize) -> FloatTensor<Self> {
        grouped::by_burn_conv::<Self>(x, weight, groups)
    }

    /// [`Self::grouped_conv3x3`] one model at a time on the single model's convolutions, as
    /// `kernels` says ([`per_model`]). Default: each model's forward, the outputs side by side;
    /// `Autodiff<B>` runs it as a node with each model's gradients as the single model's node
    /// computes them.
    fn per_model_conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        groups: usize,
        kernels: Kernels,
    ) -> FloatTensor<Self> {
        per_model::forward_per_model::<Self>(x, weight, groups, kernels)
    }

    /// `groups` G convolutions side by side as the library's grouped convolution (the `cudnn`
    /// part's fused path, [`library`]): `x: [N, G·C_in, H, W]`, `weight: [G·C_out, C_in, 3, 3]`
    /// (f32, cast to `x`'s dtype); the image's layer on `cores`. Default:
    /// [`Self::library_grouped_forward`]; `Autodiff<B>` runs it as a node of the three library
    /// calls.
    fn library_grouped_conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        groups: usize,
        cores: ImageCores,
    ) -> FloatTensor<Self> {
        let [operand, flipped] = Self::conv_operands(weight, groups, dtype_of::<Self>(&x));
        Self::library_grouped_forward(x, operand, flipped, groups, cores)
    }

    /// The forward of [`Self::library_grouped_conv3x3`] by `operand: [G·C_out, C_in, 3, 3]` in
    /// `x`'s dtype, with its `flipped` kernels `[G·C_in, C_out, 3, 3]` ([`Self::conv_operands`])
    /// to run as the faster of two calls. Default: burn's grouped `conv2d` by `operand`; the CUDA
    /// backend: cuDNN (bf16) as the faster of its two calls ([`Self::conv3x3_either`]), the
    /// image's layer on its direct kernels on `cores`.
    fn library_grouped_forward(
        x: FloatTensor<Self>,
        operand: FloatTensor<Self>,
        flipped: FloatTensor<Self>,
        groups: usize,
        cores: ImageCores,
    ) -> FloatTensor<Self> {
        let _ = (flipped, cores);
        grouped::by_burn_conv::<Self>(x, operand, groups)
    }

    /// The input gradient of [`Self::library_grouped_forward`] from `dy: [N, G·C_out, H, W]`.
    /// Default: burn's grouped `conv2d` of `dy` by `flipped`; the CUDA backend: cuDNN as the
    /// faster of its two calls.
    fn library_grouped_input_grad(
        dy: FloatTensor<Self>,
        operand: FloatTensor<Self>,
        flipped: FloatTensor<Self>,
        groups: usize,
    ) -> FloatTensor<Self> {
        let _ = operand;
        grouped::by_burn_conv::<Self>(dy, flipped, groups)
    }

    /// The weight gradient of [`Self::library_grouped_forward`], f32 `[G·C_out, C_in, 3, 3]`.
    /// Default: [`library::weight_grad_by_im2col`]; the CUDA backend: cuDNN, the image's layer
    /// on its direct kernel on `cores`.
    fn library_grouped_weight_grad(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        groups: usize,
        cores: ImageCores,
    ) -> FloatTensor<Self> {
        let _ = cores;
        library::weight_grad_by_im2col::<Self>(x, dy, groups)
    }

    /// 3×3 "same" convolution (stride 1, padding 1) without bias of `x: [N, C_in, H, W]` by
    /// `weight: [C_out, C_in, 3, 3]` of the same dtype. Default: burn's `conv2d`; the CUDA
    /// backend runs bf16 convolutions (and with [`ConvEngine::Cudnn`] the f32 image's) on the
    /// `engine`'s kernels.
    fn conv3x3_nobias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        engine: ConvEngine,
    ) -> FloatTensor<Self> {
        let _ = engine;
        Self::conv2d(x, weight, None, reference::same_3x3())
    }

    /// [`Self::conv3x3_nobias`] where `flipped` is `weight` transposed and flipped (as
    /// [`Self::conv_operands`] makes it): with [`ConvEngine::Cudnn`] the CUDA backend runs
    /// whichever of the convolution by `weight` and the input-gradient pass by `flipped` cuDNN
    /// times faster for the shape. Default: [`Self::conv3x3_nobias`].
    fn conv3x3_either(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        flipped: FloatTensor<Self>,
        engine: ConvEngine,
    ) -> FloatTensor<Self> {
        let _ = flipped;
        Self::conv3x3_nobias(x, weight, engine)
    }

    /// Weight gradient, f32 `[C_out, C_in, 3, 3]`, of a 3×3 "same" convolution of `x: [N, C_in,
    /// H, W]` whose output gradient is `dy: [N, C_out, H, W]` (both in the convolution's dtype).
    /// Default: the split-K GEMM over image groups ([`reference::weight_grad`]); with
    /// [`ConvEngine::Cudnn`] the CUDA backend asks cuDNN for bf16 operands and the f32 image's.
    fn conv3x3_weight_grad(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        engine: ConvEngine,
    ) -> FloatTensor<Self> {
        let _ = engine;
        unwrap(weight_grad::<Self>(wrap(x), wrap(dy)))
    }

    /// The f32 `weight: [G·C_out, C_in, 3, 3]` of `groups` G convolutions side by side (one: a
    /// model's layer) as the operands of their forward and input-gradient passes, in `dtype`:
    /// `[weight, flipped]` with `flipped: [G·C_in, C_out, 3, 3]`, `flipped[g·C_in + i, o, kh, kw]
    /// = weight[g·C_out + o, i, 2 − kh, 2 − kw]`. Default: burn's ops (a cast; a transpose and
    /// flip); the CUDA backend writes both in one kernel, in the channels-last layout its
    /// convolutions read.
    fn conv_operands(weight: FloatTensor<Self>, groups: usize, dtype: FloatDType) -> [FloatTensor<Self>; 2] {
        reference::operands_by_ops::<Self>(weight, groups, dtype)
    }

    /// Single models' weights `[C_out, C_in, 3, 3]` (a model's layers) each as
    /// [`Self::conv_operands`] makes them, in `dtype`; not differentiable (the convolution's
    /// node takes its weight's gradient itself). Default: one [`Self::conv_operands`] each; the
    /// CUDA backend writes them all in one launch.
    fn conv_operands_many(weights: Vec<FloatTensor<Self>>, dtype: FloatDType) -> Vec<[FloatTensor<Self>; 2]> {
        weights.into_iter().map(|weight| Self::conv_operands(weight, 1, dtype)).collect()
    }
}

impl ConvOps for burn::backend::Flex {}

impl<B: ConvOps, C: CheckpointStrategy> ConvOps for Autodiff<B, C> {
    fn conv3x3_same(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        operands: Option<[FloatTensor<Self>; 2]>,
        kernels: Kernels,
        feeds_batch_norm: bool,
    ) -> FloatTensor<Self> {
        let operands = operands.map(|pair| pair.map(|t| t.primitive));
        node::autodiff_conv3x3::<B, C>(x, weight, bias, operands, kernels, feeds_batch_norm)
    }

    fn conv_operands_many(weights: Vec<FloatTensor<Self>>, dtype: FloatDType) -> Vec<[FloatTensor<Self>; 2]> {
        let weights = weights.into_iter().map(|weight| weight.primitive).collect();
        let operands = B::conv_operands_many(weights, dtype);
        operands.into_iter().map(|pair| pair.map(<Self as AutodiffBackend>::from_inner)).collect()
    }

    fn grouped_conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, groups: usize) -> FloatTensor<Self> {
        grouped::autodiff_grouped::<B, C>(x, weight, groups)
    }

    fn per_model_conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        groups: usize,
        kernels: Kernels,
    ) -> FloatTensor<Self> {
        per_model::autodiff_per_model::<B, C>(x, weight, groups, kernels)
    }

    fn library_grouped_conv3x3(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        groups: usize,
        cores: ImageCores,
    ) -> FloatTensor<Self> {
        library::autodiff_library::<B, C>(x, weight, groups, cores)
    }
}

/// The model's convolution layer: the custom node when `kernels` asks for a custom convolution
/// part and the layer has a bias (the model's do), burn's module otherwise; `operands` as
/// [`ConvOps::conv3x3_same`] takes them ([`layer_operands`]).
pub fn conv3x3<B: ConvOps>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    operands: Option<[FloatTensor<B>; 2]>,
    kernels: Kernels,
    feeds_batch_norm: bool,
) -> Tensor<B, 4> {
    match (&conv.bias, kernels.custom_conv()) {
        (Some(bias), true) => {
            let (weight, bias) = (unwrap(conv.weight.val()), unwrap(bias.val()));
            wrap(B::conv3x3_same(unwrap(x), weight, bias, operands, kernels, feeds_batch_norm))
        }
        _ => conv.forward(x),
    }
}

/// The operands of a model's convolution layers, all at once ([`ConvOps::conv_operands_many`]),
/// in `dtype`, where the training node would make them layer by layer: under autodiff with a
/// custom convolution part that runs the input gradient by the flipped kernel, for every layer
/// but one on an explicit GEMM; `None` for the others (and everywhere else).
pub fn layer_operands<B: ConvOps>(
    convs: &[&Conv2d<B>],
    kernels: Kernels,
    dtype: FloatDType,
) -> Vec<Option<[FloatTensor<B>; 2]>> {
    let takes = |conv: &Conv2d<B>| !node::explicit_gemm(kernels, conv.weight.dims()[1]);
    let Some(first) = convs.first() else { return Vec::new() };
    let made = kernels.custom_conv() && kernels.flipped_input_grad && B::ad_enabled(&first.weight.device());
    if !made {
        return convs.iter().map(|_| None).collect();
    }
    let weights = convs.iter().filter(|conv| takes(conv)).map(|conv| unwrap(conv.weight.val())).collect();
    let mut operands = B::conv_operands_many(weights, dtype).into_iter();
    convs.iter().map(|conv| takes(conv).then(|| operands.next()).flatten()).collect()
}
