//! Training-step operations that burn 0.21 runs slowly on the GPU, re-expressed so that its fast
//! kernels do the work, as custom autodiff nodes ([`TrainOps`]):
//!
//! - [`conv`]: 3×3 "same" convolution whose **weight gradient** is a batched GEMM over groups of
//!   images (output gradient × input taps, summed over the groups). burn's implicit-GEMM weight
//!   gradient has no split-K: for 64×64 channels at 32×32 it launches a handful of cubes that each
//!   reduce over all 524,288 pixels (14 ms on an H100, 63 ms of the 100 ms step over 9 layers).
//!   Its **input gradient** can run as a forward convolution of the output gradient with the
//!   flipped, transposed kernel: burn's data-gradient kernels cannot use TMA loads (twice the
//!   time of the forward kernels on an H100).
//! - [`batch_norm`]: training-mode BatchNorm + ReLU with the closed-form backward (two channel
//!   reductions + one elementwise pass) on a channels-last view, instead of autodiff through
//!   burn's `BatchNorm` graph (transpose copies, ~10 full-tensor passes per layer).
//!
//! - `cube` (feature `cuda`): CubeCL kernels behind [`TrainOps`] hooks on burn's CUDA backend —
//!   the weight gradient's im2col matrix ([`TrainOps::im2col_3x3`]) and its bf16 → f32 matmul
//!   with the group sum ([`TrainOps::summed_matmul_to_f32`]), BatchNorm's statistics with the
//!   running averages ([`TrainOps::batch_norm_statistics`]), its normalising pass
//!   ([`TrainOps::normalize_relu`]) and its backward ([`TrainOps::batch_norm_relu_grad`]); other
//!   backends (the CPU) run the same formulations through burn's ops (trait defaults).
//! - bf16 activations ([`Kernels::bf16_activations`]): the BatchNorm node writes bf16, the
//!   convolutions compute in their input's dtype, everything with state stays f32.
//! - tuned bf16 convolutions ([`Kernels::tuned_conv`], [`TrainOps::conv3x3_nobias`]): cubek's
//!   convolution kernels on tilings tuned for the model's shapes (`cube::conv`).
//! - [`cross_entropy`]: the experiment's cross-entropy and its gradient as one node (one kernel
//!   on CUDA).
//! - [`adam`]: Adam as one update per step ([`TrainOps::adam_update_many`], one kernel for all
//!   parameters on CUDA) instead of burn's dozen tensor operations per parameter.
//!
//! The non-autodiff backends (inference, validation) use the stock burn ops (trait defaults).
//! [`Kernels`] picks per model which implementation runs, so benchmarks can compare both.

pub mod adam;
pub mod batch_norm;
pub mod conv;
pub mod cross_entropy;
#[cfg(feature = "cuda")]
mod cube;
mod kernels;
pub mod pool;

pub use kernels::{KERNELS_HELP, KernelChoice, Kernels};

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::ops::{FloatTensor, IntTensor, ModuleOps};

pub use batch_norm::{NormConfig, NormInputs, NormOutputs, NormStatistics};

/// Backends the model trains on. The defaults are the stock burn formulations (used by the
/// inner, non-autodiff backends); `Autodiff<B>` overrides them with the custom nodes.
pub trait TrainOps: Backend {
    /// 3×3 convolution, stride 1, padding 1, with bias, in the dtype of `x` (weight and bias
    /// cast to it; f32 accumulation); its gradients as `kernels` says.
    ///
    /// `feeds_batch_norm` (honoured by the training node, `Autodiff<B>`): the output goes
    /// straight into [`TrainOps::batch_norm_relu_train`], which subtracts every channel's batch
    /// mean, so the bias cannot change the loss: it is not added (the caller adds it to the
    /// batch mean that feeds the running average) and its gradient is exactly zero (one
    /// reduction over the output gradient less per layer, and no bias in burn's bf16
    /// convolution, which mishandles one).
    fn conv3x3_same(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        kernels: Kernels,
        feeds_batch_norm: bool,
    ) -> FloatTensor<Self> {
        let _ = (kernels, feeds_batch_norm); // inference: always with the bias
        conv::forward::<Self>(x, weight, Some(bias), false)
    }

    /// Training-mode BatchNorm (batch statistics, biased variance) followed by ReLU on
    /// `x: [N, C, H, W]`, the output in `dtype` (statistics in f32 whatever `x`'s dtype);
    /// returns `(output, running mean', running variance')`, the running averages updated with
    /// the batch's statistics and detached.
    fn batch_norm_relu_train(
        x: FloatTensor<Self>,
        inputs: NormInputs<Self>,
        config: NormConfig,
        dtype: FloatDType,
    ) -> NormOutputs<Self> {
        batch_norm::reference::<Self>(x, inputs, config, dtype)
    }

    /// BatchNorm's batch statistics of `x: [N, C, H, W]` (any dtype) and the running averages
    /// `[running_mean, running_var]` updated with them, every `[C]` f32 vector the layer needs
    /// ([`NormStatistics`]). Default: burn's ops; the CUDA backend runs a channel-sums kernel
    /// (per-cube partials) and one per-channel kernel that adds them up and finishes.
    fn batch_norm_statistics(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean_shift: Option<FloatTensor<Self>>,
        running: [FloatTensor<Self>; 2],
        config: NormConfig,
    ) -> NormStatistics<Self> {
        batch_norm::by_ops::statistics::<Self>(x, gamma, mean_shift, running, config)
    }

    /// BatchNorm + ReLU's forward pass `max(0, (x − mean)·scale + beta)` on `x: [N, C, H, W]`
    /// (any dtype) with per-channel `[C]` f32 vectors, in `dtype`. Default: burn's ops; the CUDA
    /// backend runs one kernel that writes channels-last.
    fn normalize_relu(
        x: FloatTensor<Self>,
        [mean, scale, beta]: [FloatTensor<Self>; 3],
        dtype: FloatDType,
    ) -> FloatTensor<Self> {
        batch_norm::by_ops::normalize_relu_by_ops::<Self>(x, [mean, scale, beta], dtype)
    }

    /// BatchNorm + ReLU's backward `[dx, dγ, dβ]` from `dy`, the output `y` and input `x`
    /// (`[N, C, H, W]`) and `[mean, inv_std, γ, β]` (`[C]` f32): `dβ = Σ g`, `dγ = Σ g·x̂`,
    /// `dx = γ·inv_std·(g − dβ/M − x̂·dγ/M)` with `g = dy·[y > 0]`, `dx` in `x`'s dtype. The
    /// mask `y > 0` may be recomputed from `x` as the forward computed `y`
    /// (`(x − mean)·γ·inv_std + β > 0`) instead of read: the CUDA kernels do, one full-size
    /// read fewer in each of their two passes.
    /// Default: burn's ops; the CUDA backend runs a channel-sums kernel (per-cube partials),
    /// one per-channel kernel that adds them up and one elementwise kernel.
    fn batch_norm_relu_grad(
        activations: [FloatTensor<Self>; 3],
        per_channel: [FloatTensor<Self>; 4],
    ) -> [FloatTensor<Self>; 3] {
        batch_norm::by_ops::relu_grad::<Self>(activations, per_channel)
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

    /// The im2col matrix of a 3×3 "same" convolution (zero padding) of `x: [N, C, H, W]`:
    /// `[N·H·W, 9·C]` in `dtype`, columns ordered `(kh, kw, c)`. Default: a padded copy, nine
    /// slices and a stack through burn's ops; the CUDA backend runs one kernel.
    fn im2col_3x3(x: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        conv::im2col_3x3_by_slices::<Self>(x, dtype)
    }

    /// 3×3 "same" convolution (stride 1, padding 1) without bias of `x: [N, C_in, H, W]` by
    /// `weight: [C_out, C_in, 3, 3]` of the same dtype. Default: burn's `conv2d`; with `tuned`,
    /// the CUDA backend runs bf16 convolutions on tilings tuned for the model's shapes
    /// (`cube::conv`).
    fn conv3x3_nobias(x: FloatTensor<Self>, weight: FloatTensor<Self>, tuned: bool) -> FloatTensor<Self> {
        let _ = tuned;
        Self::conv2d(x, weight, None, conv::same_3x3())
    }

    /// 2×2 average pooling, stride 2, of `x: [N, C, H, W]` (even H and W), in `x`'s dtype.
    /// Default: burn's `avg_pool2d`; the CUDA backend runs one channels-last kernel.
    fn avg_pool_2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::avg_pool2d(x, pool::WINDOW, pool::WINDOW, [0, 0], true, false)
    }

    /// The input gradient of [`TrainOps::avg_pool_2x2`] of `x` for the output gradient `dy`, in
    /// `x`'s dtype. Default: burn's `avg_pool2d_backward`; the CUDA backend runs one kernel.
    fn avg_pool_2x2_grad(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::avg_pool2d_backward(x, dy, pool::WINDOW, pool::WINDOW, [0, 0], true, false)
    }

    /// Global average pooling of `x: [N, C, H, W]` (any dtype) to `[N, C]` f32, the head's
    /// input. Default: a cast and two means through burn's ops; the CUDA backend runs one kernel.
    fn global_avg_pool(x: FloatTensor<Self>) -> FloatTensor<Self> {
        pool::global_avg_pool_by_ops::<Self>(x)
    }

    /// The input gradient of [`TrainOps::global_avg_pool`] of `x` for `dy: [N, C]` (f32), in
    /// `x`'s dtype. Default: burn's ops (a broadcast); the CUDA backend runs one kernel.
    fn global_avg_pool_grad(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        pool::global_avg_pool_grad_by_ops::<Self>(x, dy)
    }

    /// A convolution's f32 `weight: [C_out, C_in, 3, 3]` as the operands of its forward and
    /// input-gradient convolutions, in `dtype`: `[weight, flipped]` with `flipped: [C_in, C_out,
    /// 3, 3]`, `flipped[i, o, kh, kw] = weight[o, i, 2 − kh, 2 − kw]`. Default: burn's ops (a
    /// cast; a transpose, flip and cast); the CUDA backend writes both in one kernel, in the
    /// channels-last layout its convolutions read.
    fn conv_operands(weight: FloatTensor<Self>, dtype: FloatDType) -> [FloatTensor<Self>; 2] {
        conv::operands_by_ops::<Self>(weight, dtype)
    }

    /// Adam's update of one f32 parameter: `[param, grad, m, v]` (same shape, any layout) →
    /// `[param', m', v']` ([`adam::FusedAdam`]). Default: burn's ops on flattened views; the
    /// CUDA backend runs one kernel.
    fn adam_update(inputs: [FloatTensor<Self>; 4], scalars: adam::AdamScalars) -> [FloatTensor<Self>; 3] {
        use burn::tensor::TensorMetadata;
        let shape = inputs[0].shape();
        let flat = inputs.map(|t| wrap::<Self, 1>(Self::float_reshape(t, [shape.num_elements()].into())));
        adam::update_by_ops(flat, scalars).map(|t| Self::float_reshape(unwrap(t), shape.clone()))
    }

    /// The experiment's cross-entropy of f32 `logits: [N, C]` and `labels: [N]`
    /// ([`crate::loss::cross_entropy`]): `[1]`. Default: burn's ops; `Autodiff<B>` runs it as one
    /// node ([`cross_entropy`]) on [`TrainOps::cross_entropy_and_grad`].
    fn cross_entropy(logits: FloatTensor<Self>, labels: IntTensor<Self>) -> FloatTensor<Self> {
        unwrap(crate::loss::cross_entropy(wrap::<Self, 2>(logits), Tensor::from_primitive(labels)))
    }

    /// The cross-entropy of [`TrainOps::cross_entropy`] and its gradient by the logits per unit
    /// of loss: `[loss: [1], grad: [N, C]]`. Default: burn's ops; the CUDA backend runs one kernel.
    fn cross_entropy_and_grad(logits: FloatTensor<Self>, labels: IntTensor<Self>) -> [FloatTensor<Self>; 2] {
        cross_entropy::by_ops::<Self>(logits, labels)
    }

    /// Adam's update of several f32 parameters at the same step, `[param, grad, m, v]` →
    /// `[param', m', v']` each ([`adam::ModuleAdam`]). Default: [`TrainOps::adam_update`] per
    /// parameter; the CUDA backend updates them all in one kernel, every gradient read in its
    /// own layout.
    fn adam_update_many(
        inputs: Vec<[FloatTensor<Self>; 4]>,
        scalars: adam::AdamScalars,
    ) -> Vec<[FloatTensor<Self>; 3]> {
        inputs.into_iter().map(|inputs| Self::adam_update(inputs, scalars)).collect()
    }
}

impl TrainOps for burn::backend::Flex {}

#[cfg(feature = "cuda")]
impl TrainOps for burn_cuda::Cuda {
    fn adam_update(inputs: [FloatTensor<Self>; 4], scalars: adam::AdamScalars) -> [FloatTensor<Self>; 3] {
        cube::adam::adam_update::<_, f32, i32, u8>(inputs, scalars)
    }

    fn adam_update_many(
        inputs: Vec<[FloatTensor<Self>; 4]>,
        scalars: adam::AdamScalars,
    ) -> Vec<[FloatTensor<Self>; 3]> {
        cube::adam::adam_update_many::<_, f32, i32, u8>(inputs, scalars)
    }

    fn cross_entropy_and_grad(logits: FloatTensor<Self>, labels: IntTensor<Self>) -> [FloatTensor<Self>; 2] {
        cube::cross_entropy::cross_entropy_and_grad::<_, f32, i32, u8>(logits, labels)
    }

    fn conv3x3_nobias(x: FloatTensor<Self>, weight: FloatTensor<Self>, tuned: bool) -> FloatTensor<Self> {
        if tuned && cube::conv::tunable(&x, &weight) {
            cube::conv::conv3x3::<_, f32, i32, u8>(x, weight)
        } else {
            Self::conv2d(x, weight, None, conv::same_3x3())
        }
    }

    fn avg_pool_2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        cube::pool::avg_pool_2x2::<_, f32, i32, u8>(x)
    }

    fn avg_pool_2x2_grad(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        cube::pool::avg_pool_2x2_grad::<_, f32, i32, u8>(x, dy)
    }

    fn global_avg_pool(x: FloatTensor<Self>) -> FloatTensor<Self> {
        cube::pool::global_avg_pool::<_, f32, i32, u8>(x)
    }

    fn global_avg_pool_grad(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        cube::pool::global_avg_pool_grad::<_, f32, i32, u8>(x, dy)
    }

    fn conv_operands(weight: FloatTensor<Self>, dtype: FloatDType) -> [FloatTensor<Self>; 2] {
        cube::weights::conv_operands::<_, f32, i32, u8>(weight, dtype.into())
    }

    fn im2col_3x3(x: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        cube::im2col::im2col_3x3::<_, f32, i32, u8>(x, dtype.into())
    }

    fn batch_norm_statistics(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean_shift: Option<FloatTensor<Self>>,
        running: [FloatTensor<Self>; 2],
        config: NormConfig,
    ) -> NormStatistics<Self> {
        cube::channel_sums::batch_norm_statistics::<Self, _, f32, i32, u8>(
            x, gamma, mean_shift, running, config,
        )
    }

    fn normalize_relu(
        x: FloatTensor<Self>,
        per_channel: [FloatTensor<Self>; 3],
        dtype: FloatDType,
    ) -> FloatTensor<Self> {
        cube::normalize::normalize_relu::<_, f32, i32, u8>(x, per_channel, dtype.into())
    }

    fn batch_norm_relu_grad(
        activations: [FloatTensor<Self>; 3],
        per_channel: [FloatTensor<Self>; 4],
    ) -> [FloatTensor<Self>; 3] {
        cube::normalize::batch_norm_relu_grad::<_, f32, i32, u8>(activations, per_channel)
    }

    fn matmul_to_f32(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        use burn::tensor::{DType, TensorMetadata};
        if lhs.dtype() == DType::F32 && rhs.dtype() == DType::F32 {
            // burn's own path: its fusion can fuse what follows into the matmul.
            return unwrap(wrap::<Self, 3>(lhs).matmul(wrap(rhs)));
        }
        cube::matmul_to_f32::<_, f32, i32, u8>(lhs, rhs)
    }

    fn summed_matmul_to_f32(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        cube::summed_matmul::summed_matmul_to_f32::<_, f32, i32, u8>(lhs, rhs)
    }
}

impl<B: TrainOps, C: CheckpointStrategy> TrainOps for Autodiff<B, C> {
    fn conv3x3_same(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        kernels: Kernels,
        feeds_batch_norm: bool,
    ) -> FloatTensor<Self> {
        conv::autodiff_conv3x3::<B, C>(x, weight, bias, kernels, feeds_batch_norm)
    }

    fn batch_norm_relu_train(
        x: FloatTensor<Self>,
        inputs: NormInputs<Self>,
        config: NormConfig,
        dtype: FloatDType,
    ) -> NormOutputs<Self> {
        batch_norm::autodiff_batch_norm_relu::<B, C>(x, inputs, config, dtype)
    }

    fn avg_pool_2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        pool::autodiff_pool::<B, C>(x, pool::Pooling::Window)
    }

    fn global_avg_pool(x: FloatTensor<Self>) -> FloatTensor<Self> {
        pool::autodiff_pool::<B, C>(x, pool::Pooling::Global)
    }

    fn cross_entropy(logits: FloatTensor<Self>, labels: IntTensor<Self>) -> FloatTensor<Self> {
        cross_entropy::autodiff_cross_entropy::<B, C>(logits, labels)
    }
}

/// Wraps a float primitive of backend `B` as a tensor.
pub fn wrap<B: Backend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(primitive))
}

/// `t` in `dtype` (a cast only when it differs).
pub fn to_dtype<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
    if t.dtype() == dtype.into() { t } else { t.cast(dtype) }
}

/// The float primitive of a tensor.
pub fn unwrap<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> FloatTensor<B> {
    tensor.into_primitive().tensor()
}

/// An autodiff backend the model trains on: [`TrainOps`] for the training graph and for the
/// inner backend that validation runs on.
pub trait TrainBackend: burn::tensor::backend::AutodiffBackend<InnerBackend: TrainOps> + TrainOps {}

impl<B> TrainBackend for B where B: burn::tensor::backend::AutodiffBackend<InnerBackend: TrainOps> + TrainOps {}
