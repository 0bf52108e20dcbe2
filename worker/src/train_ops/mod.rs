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
//! - `cube` (feature `cuda`): CubeCL kernels behind three [`TrainOps`] hooks on burn's CUDA
//!   backend — the weight gradient's im2col matrix ([`TrainOps::im2col_3x3`]) and BatchNorm's
//!   channel sums ([`TrainOps::channel_moments`], [`TrainOps::relu_norm_grad_sums`]); other
//!   backends (the CPU) run the same formulations through burn's ops (trait defaults).
//!
//! The non-autodiff backends (inference, validation) use the stock burn ops (trait defaults).
//! [`Kernels`] picks per model which implementation runs, so benchmarks can compare both.

pub mod batch_norm;
pub mod conv;
#[cfg(feature = "cuda")]
mod cube;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::ops::FloatTensor;

/// Which implementation of the convolution and normalisation the model's training step uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Kernels {
    /// Weight gradient of the 3×3 convolutions as a batched GEMM over im2col taps ([`conv`]).
    pub gemm_weight_grad: bool,
    /// Input gradient of the 3×3 convolutions as a forward convolution with the flipped kernel.
    pub flipped_input_grad: bool,
    /// BatchNorm + ReLU as one node with a closed-form backward ([`batch_norm`]).
    pub fused_batch_norm: bool,
    /// Convolutions (forward, input and weight gradients) on bf16 copies of their operands,
    /// f32 everywhere else (weights, BatchNorm, loss, Adam): autocast-style mixed precision.
    /// Only with one of the custom convolution parts.
    pub bf16_conv: bool,
}

/// `--kernels` help, shared by every command that trains.
pub const KERNELS_HELP: &str = "Training-node implementation: fast (the default, wgrad+dgrad+bn), stock \
    (burn's modules), or parts joined by +: wgrad (GEMM weight gradient), dgrad (input gradient on the \
    forward conv kernels), bn (fused BatchNorm + ReLU), bf16 (bf16 convolutions)";

/// The parts of a kernel set as `--kernels` spells them, joined by `+` (`wgrad+bn+bf16`).
const PARTS: [&str; 4] = ["wgrad", "dgrad", "bn", "bf16"];

impl Kernels {
    /// burn's stock modules everywhere (the reference).
    pub const STOCK: Kernels = Kernels {
        gemm_weight_grad: false,
        flipped_input_grad: false,
        fused_batch_norm: false,
        bf16_conv: false,
    };
    /// The fastest measured f32 combination (the default): `wgrad+dgrad+bn`.
    pub const FAST: Kernels = Kernels {
        gemm_weight_grad: true,
        flipped_input_grad: true,
        fused_batch_norm: true,
        ..Kernels::STOCK
    };

    fn parts(self) -> [bool; 4] {
        [self.gemm_weight_grad, self.flipped_input_grad, self.fused_batch_norm, self.bf16_conv]
    }

    /// Whether the convolutions run as the custom node ([`conv`]) rather than burn's `Conv2d`.
    pub fn custom_conv(self) -> bool {
        self.gemm_weight_grad || self.flipped_input_grad
    }
}

impl Default for Kernels {
    fn default() -> Self {
        Kernels::FAST
    }
}

impl std::str::FromStr for Kernels {
    type Err = String;

    /// `stock`, `fast`, or parts joined by `+`: `wgrad` (GEMM weight gradient over im2col taps),
    /// `dgrad` (input gradient as a flipped-kernel forward convolution), `bn` (fused BatchNorm +
    /// ReLU), `bf16` (bf16 convolutions; needs `wgrad` or `dgrad`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stock" => return Ok(Kernels::STOCK),
            "fast" => return Ok(Kernels::FAST),
            _ => {}
        }
        let mut on = [false; 4];
        for part in s.split('+') {
            let i = PARTS.iter().position(|p| *p == part).ok_or_else(|| {
                format!(
                    "unknown kernel part {part:?} in {s:?} (expected stock, fast, or {} joined by +)",
                    PARTS.join(", ")
                )
            })?;
            on[i] = true;
        }
        let [gemm_weight_grad, flipped_input_grad, fused_batch_norm, bf16_conv] = on;
        let kernels = Kernels { gemm_weight_grad, flipped_input_grad, fused_batch_norm, bf16_conv };
        if bf16_conv && !kernels.custom_conv() {
            return Err(format!("{s:?}: bf16 convolutions need the wgrad or dgrad part"));
        }
        Ok(kernels)
    }
}

impl std::fmt::Display for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<&str> =
            PARTS.iter().zip(self.parts()).filter(|(_, on)| *on).map(|(p, _)| *p).collect();
        if parts.is_empty() { f.write_str("stock") } else { f.write_str(&parts.join("+")) }
    }
}

/// `(output, batch mean [C], batch variance [C])` of [`TrainOps::batch_norm_relu_train`].
pub type NormOutputs<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// Backends the model trains on. The defaults are the stock burn formulations (used by the
/// inner, non-autodiff backends); `Autodiff<B>` overrides them with the custom nodes.
pub trait TrainOps: Backend {
    /// 3×3 convolution, stride 1, padding 1, with bias; on bf16 operands if `kernels.bf16_conv`
    /// (the output is f32 either way); its gradients as `kernels` says. `feeds_batch_norm`: the
    /// output goes straight into a training-mode BatchNorm, which subtracts every channel's
    /// batch mean, so the bias cannot change the loss: its gradient is exactly zero and is not
    /// computed (one reduction over the output gradient less per layer).
    fn conv3x3_same(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        kernels: Kernels,
        feeds_batch_norm: bool,
    ) -> FloatTensor<Self> {
        let _ = feeds_batch_norm; // only the gradient depends on it
        conv::forward::<Self>(x, weight, bias, kernels.bf16_conv)
    }

    /// Training-mode BatchNorm (batch statistics, biased variance) followed by ReLU on
    /// `x: [N, C, H, W]`; returns `(output, batch mean [C], batch variance [C])`, the statistics
    /// detached (for the running averages).
    fn batch_norm_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> NormOutputs<Self> {
        batch_norm::reference::<Self>(x, gamma, beta, epsilon)
    }

    /// Per-channel batch mean and biased variance (`[1, C]` each) of `x: [N, C, H, W]`.
    fn channel_moments(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        batch_norm::moments_by_reductions::<Self>(x)
    }

    /// The two channel sums of the BatchNorm+ReLU backward, `(Σ g, Σ g·x̂)` (`[1, C]` each), with
    /// `g = dy·[y > 0]` and `x̂ = (x − mean)·inv_std`; `dy`, `y`, `x`: `[N, C, H, W]`, `mean`,
    /// `inv_std`: `[1, C]`.
    fn relu_norm_grad_sums(
        [dy, y, x, mean, inv_std]: [FloatTensor<Self>; 5],
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        batch_norm::relu_norm_grad_sums_by_reductions::<Self>([dy, y, x, mean, inv_std])
    }

    /// The im2col matrix of a 3×3 "same" convolution (zero padding) of `x: [N, C, H, W]`:
    /// `[N·H·W, 9·C]` in `dtype`, columns ordered `(kh, kw, c)`. Default: a padded copy, nine
    /// slices and a stack through burn's ops; the CUDA backend runs one kernel.
    fn im2col_3x3(x: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        conv::im2col_3x3_by_slices::<Self>(x, dtype)
    }
}

impl TrainOps for burn::backend::Flex {}

#[cfg(feature = "cuda")]
impl TrainOps for burn_cuda::Cuda {
    fn im2col_3x3(x: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        cube::im2col::im2col_3x3::<_, f32, i32, u8>(x, dtype.into())
    }

    fn channel_moments(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        cube::channel_sums::channel_moments::<Self, _, f32, i32, u8>(x)
    }

    fn relu_norm_grad_sums(inputs: [FloatTensor<Self>; 5]) -> (FloatTensor<Self>, FloatTensor<Self>) {
        cube::channel_sums::relu_norm_grad_sums::<Self, _, f32, i32, u8>(inputs)
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
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> NormOutputs<Self> {
        batch_norm::autodiff_batch_norm_relu::<B, C>(x, gamma, beta, epsilon)
    }
}

/// Wraps a float primitive of backend `B` as a tensor.
pub fn wrap<B: Backend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(primitive))
}

/// The float primitive of a tensor.
pub fn unwrap<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> FloatTensor<B> {
    tensor.into_primitive().tensor()
}

/// An autodiff backend the model trains on: [`TrainOps`] for the training graph and for the
/// inner backend that validation runs on.
pub trait TrainBackend: burn::tensor::backend::AutodiffBackend<InnerBackend: TrainOps> + TrainOps {}

impl<B> TrainBackend for B where B: burn::tensor::backend::AutodiffBackend<InnerBackend: TrainOps> + TrainOps {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sets_parse_and_print_back() {
        for name in [
            "stock",
            "wgrad",
            "bn",
            "wgrad+bn",
            "wgrad+bf16",
            "wgrad+bn+bf16",
            "wgrad+dgrad+bn",
            "dgrad+bf16",
            "wgrad+dgrad+bn+bf16",
        ] {
            let kernels: Kernels = name.parse().unwrap();
            assert_eq!(kernels.to_string(), name);
        }
        assert_eq!("fast".parse::<Kernels>().unwrap(), Kernels::FAST);
        assert_eq!("bf16+wgrad".parse::<Kernels>().unwrap().to_string(), "wgrad+bf16");
    }

    #[test]
    fn bad_kernel_sets_are_rejected_with_the_reason() {
        let unknown = "wgrad+fp8".parse::<Kernels>().unwrap_err();
        assert!(unknown.contains("\"fp8\""), "{unknown}");
        let bf16_alone = "bf16+bn".parse::<Kernels>().unwrap_err();
        assert!(bf16_alone.contains("need the wgrad or dgrad part"), "{bf16_alone}");
        assert!("".parse::<Kernels>().is_err());
    }
}
