//! BatchNorm + ReLU's hooks on burn's CUDA backend: the channel sums and statistics
//! ([`channel_sums`]) and the elementwise passes ([`normalize`], [`pooled`]).

pub mod channel_sums;
pub mod normalize;
pub mod pooled;
pub mod rows;
pub mod statistics;

use burn::tensor::FloatDType;
use burn::tensor::ops::FloatTensor;

use super::{BatchNormOps, NormConfig, NormStatistics};

/// The hooks on both CUDA backends, with and without burn's fusion stream.
macro_rules! batch_norm_ops {
    ($backend:ty) => {
        impl BatchNormOps for $backend {
            fn batch_norm_statistics(
                x: FloatTensor<Self>,
                gamma: FloatTensor<Self>,
                mean_shift: Option<FloatTensor<Self>>,
                running: [FloatTensor<Self>; 2],
                config: NormConfig,
            ) -> NormStatistics<Self> {
                statistics::batch_norm_statistics::<Self, _>(x, gamma, mean_shift, running, config)
            }

            fn normalize_relu(
                x: FloatTensor<Self>,
                per_channel: [FloatTensor<Self>; 3],
                dtype: FloatDType,
            ) -> FloatTensor<Self> {
                normalize::normalize_relu(x, per_channel, dtype.into())
            }

            fn normalize_relu_pool(
                x: FloatTensor<Self>,
                per_channel: [FloatTensor<Self>; 3],
                dtype: FloatDType,
            ) -> FloatTensor<Self> {
                pooled::normalize_relu_pool(x, per_channel, dtype.into())
            }

            fn batch_norm_relu_grad(
                [dy, _y, x]: [FloatTensor<Self>; 3],
                per_channel: [FloatTensor<Self>; 4],
            ) -> [FloatTensor<Self>; 3] {
                // The kernels recompute the ReLU mask from `x` (see `normalize`).
                normalize::batch_norm_relu_grad([dy, x], per_channel)
            }

            fn batch_norm_relu_pool_grad(
                activations: [FloatTensor<Self>; 2],
                per_channel: [FloatTensor<Self>; 4],
            ) -> [FloatTensor<Self>; 3] {
                normalize::batch_norm_relu_grad(activations, per_channel)
            }
        }
    };
}

batch_norm_ops!(burn_cuda::Cuda);
batch_norm_ops!(crate::train_ops::cube::CudaDirect);
