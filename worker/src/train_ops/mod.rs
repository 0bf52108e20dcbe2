//! The training step's operations that burn 0.21 runs slowly on the GPU, one folder per
//! operation, each laid out like burn's custom-kernel example: an extension trait of the backend
//! whose default methods are the portable reference (burn's ops: the CPU, and what the tests
//! compare against), the autodiff node (`Autodiff<B>`'s implementation), and the CUDA kernels
//! (`cuda`, feature `cuda`) behind the same trait on burn's CUDA backends, with and without
//! its fusion stream ([`CudaDirect`], the `direct` part).
//!
//! | operation | trait | what the node replaces |
//! | --- | --- | --- |
//! | [`conv`] | [`ConvOps`] | burn's convolution gradients: the weight gradient as a split-K GEMM over image groups, the input gradient as a forward convolution with the flipped kernel, tuned bf16 tilings |
//! | [`batch_norm`] | [`BatchNormOps`] | autodiff through burn's `BatchNorm` (~10 passes): BatchNorm + ReLU with the closed-form backward, optionally per group of images |
//! | [`pool`] | [`PoolOps`] | burn's pooling on channels-first copies: channels-last 2×2 and global average pooling |
//! | [`cross_entropy`] | [`CrossEntropyOps`] | ~20 kernels of the Keras cross-entropy (~45 with natural_softmax's term): one node, one kernel |
//! | [`linear`] | [`LinearOps`] | the head's matmuls autotuned per shape (~90 s on a cold cache), their transposing copies and the bias's add: one node, one untuned kernel per product, the bias in the forward's (`head` part) |
//! | [`adam`] | [`AdamOps`] | a dozen operations per parameter: one update for every parameter of a step |
//! | [`graph`] | [`GraphOps`] | the host recording every operation of every step: the step recorded once as a CUDA graph and replayed |
//!
//! [`TrainOps`] is all seven; [`Kernels`] picks per model which implementation runs (users see
//! `stock`, `fast`, `fast-bf16`, `fast-bf16-cudnn`; `worker bench` also takes the parts).
//! Validation runs on the non-autodiff backend with the same set: the convolutions on its
//! engine, BatchNorm + ReLU as one pass over the running statistics, its pooling.

pub mod adam;
pub mod batch_norm;
pub mod conv;
pub mod cross_entropy;
#[cfg(feature = "cuda")]
mod cube;
pub mod graph;
mod kernel_choice;
mod kernels;
pub mod linear;
pub mod pool;

pub use adam::AdamOps;
pub use batch_norm::{BatchNormOps, NormConfig, NormInputs, NormOutputs, NormStatistics};
pub use conv::ConvOps;
pub use cross_entropy::CrossEntropyOps;
#[cfg(feature = "cuda")]
pub use cube::CudaDirect;
pub use graph::{GraphError, GraphOps, StepGraph};
pub use kernel_choice::{KernelChoice, check_kernels};
pub use kernels::{BENCH_KERNELS_HELP, ConvEngine, ImageCores, KERNELS_HELP, Kernels};
pub use linear::LinearOps;
pub use pool::PoolOps;

use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::ops::FloatTensor;

/// Backends the model trains on: every operation's trait.
pub trait TrainOps:
    ConvOps + BatchNormOps + PoolOps + CrossEntropyOps + LinearOps + AdamOps + GraphOps
{
}

impl<B> TrainOps for B where
    B: ConvOps + BatchNormOps + PoolOps + CrossEntropyOps + LinearOps + AdamOps + GraphOps
{
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
