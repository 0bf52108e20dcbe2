//! The model's two poolings as custom autodiff nodes, so that the CUDA backend runs each as one
//! channels-last kernel each way: 2×2 average pooling ([`PoolOps::avg_pool_2x2`],
//! [`PoolOps::avg_pool_2x2_grad`]) and the head's global average pooling
//! ([`PoolOps::global_avg_pool`], [`PoolOps::global_avg_pool_grad`]).
//!
//! burn's pooling kernels read and write channels-first: on the model's channels-last bf16
//! activations its 2×2 backward took 0.18 and 0.33 ms per step on an H100 for what is one read
//! of the output gradient and one write of the input gradient (~0.03 ms of memory traffic); the
//! global pooling through burn's ops was a cast, two means and, backward, six kernels (~0.4 ms).

#[cfg(feature = "cuda")]
mod cuda;

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::pool::AvgPool2d;
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::ops::FloatTensor;

use super::{Kernels, to_dtype, unwrap, wrap};

/// `avg_pool2d` arguments of the model's pooling: kernel 2×2, stride 2, no padding.
pub const WINDOW: [usize; 2] = [2, 2];

/// The poolings as backend methods: the defaults are burn's ops; `Autodiff<B>` runs
/// [`PoolOps::avg_pool_2x2`] and [`PoolOps::global_avg_pool`] as custom nodes, burn's CUDA backend
/// all four as channels-last kernels (`cuda`).
pub trait PoolOps: Backend {
    /// 2×2 average pooling, stride 2, of `x: [N, C, H, W]` (even H and W), in `x`'s dtype.
    fn avg_pool_2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::avg_pool2d(x, WINDOW, WINDOW, [0, 0], true, false)
    }

    /// The input gradient of [`PoolOps::avg_pool_2x2`] of `x` for the output gradient `dy`, in
    /// `x`'s dtype.
    fn avg_pool_2x2_grad(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::avg_pool2d_backward(x, dy, WINDOW, WINDOW, [0, 0], true, false)
    }

    /// Global average pooling of `x: [N, C, H, W]` (any dtype) to `[N, C]` f32, the head's input.
    fn global_avg_pool(x: FloatTensor<Self>) -> FloatTensor<Self> {
        global_avg_pool_by_ops::<Self>(x)
    }

    /// The input gradient of [`PoolOps::global_avg_pool`] of `x` for `dy: [N, C]` (f32), in
    /// `x`'s dtype.
    fn global_avg_pool_grad(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        global_avg_pool_grad_by_ops::<Self>(x, dy)
    }
}

impl PoolOps for burn::backend::Flex {}

impl<B: PoolOps, C: CheckpointStrategy> PoolOps for Autodiff<B, C> {
    fn avg_pool_2x2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        autodiff_pool::<B, C>(x, Pooling::Window)
    }

    fn global_avg_pool(x: FloatTensor<Self>) -> FloatTensor<Self> {
        autodiff_pool::<B, C>(x, Pooling::Global)
    }
}

/// The model's 2×2 average pooling: the custom node in training with the `pool` part, burn's
/// module otherwise.
pub fn avg_pool_2x2<B: PoolOps>(pool: &AvgPool2d, x: Tensor<B, 4>, kernels: Kernels) -> Tensor<B, 4> {
    if kernels.custom_pool && B::ad_enabled(&x.device()) {
        wrap(B::avg_pool_2x2(unwrap(x)))
    } else {
        pool.forward(x)
    }
}

/// The head's global average pooling to `[N, C]` f32 (whatever the activations' dtype): the
/// custom node in training with the `pool` part, burn's ops otherwise.
pub fn global_avg_pool<B: PoolOps>(x: Tensor<B, 4>, kernels: Kernels) -> Tensor<B, 2> {
    if kernels.custom_pool && B::ad_enabled(&x.device()) {
        wrap(B::global_avg_pool(unwrap(x)))
    } else {
        let [n, c, _, _] = x.dims();
        to_dtype(x, FloatDType::F32).mean_dim(3).mean_dim(2).reshape([n, c])
    }
}

/// [`PoolOps::global_avg_pool`] through burn's ops.
pub fn global_avg_pool_by_ops<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let x = wrap::<B, 4>(x);
    let [n, c, _, _] = x.dims();
    unwrap(to_dtype(x, FloatDType::F32).mean_dim(3).mean_dim(2).reshape([n, c]))
}

/// [`PoolOps::global_avg_pool_grad`] through burn's ops.
pub fn global_avg_pool_grad_by_ops<B: Backend>(x: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
    let x = wrap::<B, 4>(x);
    let [n, c, h, w] = x.dims();
    let dx = wrap::<B, 2>(dy).reshape([n, c, 1, 1]).div_scalar((h * w) as f64).expand([n, c, h, w]);
    unwrap(to_dtype(dx, x.dtype().into()))
}

/// Which pooling a [`PoolBackward`] node undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// [`PoolOps::avg_pool_2x2`].
    Window,
    /// [`PoolOps::global_avg_pool`].
    Global,
}

#[derive(Debug)]
struct PoolBackward(Pooling);

impl<B: PoolOps> Backward<B, 1> for PoolBackward {
    /// The checkpointed input (its shape and dtype; burn's 2×2 backward reads it).
    type State = NodeId;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(ops.state);
        if let Some(node) = node_x {
            let dx = match self.0 {
                Pooling::Window => B::avg_pool_2x2_grad(x, dy),
                Pooling::Global => B::global_avg_pool_grad(x, dy),
            };
            grads.register::<B>(node.id, dx);
        }
    }
}

/// [`PoolOps::avg_pool_2x2`] and [`PoolOps::global_avg_pool`] for `Autodiff<B, C>`.
fn autodiff_pool<B: PoolOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    pooling: Pooling,
) -> FloatTensor<Autodiff<B, C>> {
    let forward = |x: FloatTensor<B>| match pooling {
        Pooling::Window => B::avg_pool_2x2(x),
        Pooling::Global => B::global_avg_pool(x),
    };
    match PoolBackward(pooling).prepare::<C>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let state = prep.checkpoint(&x);
            prep.finish(state, forward(x.primitive))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive)),
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::prelude::*;
    use burn::tensor::module::avg_pool2d;
    use burn::tensor::{Distribution, FloatDType};

    use super::*;
    use crate::train_ops::{to_dtype, unwrap, wrap};

    /// `pooling` through the node on backend `B`'s autodiff, as `[N, rest]` rows.
    fn pool<B: PoolOps>(x: Tensor<Autodiff<B>, 4>, pooling: Pooling) -> Tensor<Autodiff<B>, 2> {
        match pooling {
            Pooling::Window => wrap::<_, 4>(Autodiff::<B>::avg_pool_2x2(unwrap(x))).flatten(1, 3),
            Pooling::Global => wrap(Autodiff::<B>::global_avg_pool(unwrap(x))),
        }
    }

    /// burn's pooling of `x` as `[N, rest]` rows, in f32.
    fn reference(x: Tensor<Autodiff<Flex>, 4>, pooling: Pooling) -> Tensor<Autodiff<Flex>, 2> {
        let [n, c, _, _] = x.dims();
        match pooling {
            Pooling::Window => avg_pool2d(x, WINDOW, WINDOW, [0, 0], true, false).flatten(1, 3),
            Pooling::Global => x.mean_dim(3).mean_dim(2).reshape([n, c]),
        }
    }

    /// Output and input gradient of sum(pool(x)·r) through the node on `B` (x cast to `dtype`)
    /// and through burn's pooling on the CPU in f32, as f32 CPU tensors (outputs as `[N, rest]`).
    fn pooled_and_grad<B: PoolOps>(
        x: &Tensor<Flex, 4>,
        pooling: Pooling,
        dtype: FloatDType,
    ) -> [Tensor<Flex, 4>; 4] {
        let device = Default::default();
        let xb = Tensor::<Autodiff<B>, 4>::from_data(x.to_data(), &device).require_grad();
        let pooled = to_dtype(pool::<B>(to_dtype(xb.clone(), dtype), pooling), FloatDType::F32);
        let x_ref = Tensor::<Autodiff<Flex>, 4>::from_data(x.to_data(), &Default::default()).require_grad();
        let pooled_ref = reference(x_ref.clone(), pooling);
        let r = crate::model::drawn(|| {
            Tensor::<Flex, 2>::random(pooled_ref.dims(), Distribution::Normal(0.0, 1.0), &Default::default())
        });
        let grads = (pooled.clone() * Tensor::from_data(r.to_data(), &device)).sum().backward();
        let dx = xb.grad(&grads).unwrap();
        let grads_ref =
            (pooled_ref.clone() * Tensor::from_data(r.to_data(), &Default::default())).sum().backward();
        let back = |t: Tensor<B, 4>| Tensor::<Flex, 4>::from_data(t.into_data(), &Default::default());
        let back2 = |t: Tensor<B, 2>| Tensor::<Flex, 2>::from_data(t.into_data(), &Default::default());
        [
            back2(pooled.inner()).unsqueeze(),
            back(dx),
            pooled_ref.inner().unsqueeze(),
            x_ref.grad(&grads_ref).unwrap(),
        ]
    }

    /// The node against burn's pooling on the CPU, within `tolerance` of the values' scale.
    fn compare<B: PoolOps>(shape: [usize; 4], pooling: Pooling, dtype: FloatDType, tolerance: f32) {
        let x = crate::model::drawn(|| {
            Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
        });
        let [y, dx, y_ref, dx_ref] = pooled_and_grad::<B>(&x, pooling, dtype);
        for (name, a, b) in [("output", y, y_ref), ("input grad", dx, dx_ref)] {
            assert_eq!(a.dims(), b.dims(), "{pooling:?} {name}: shape");
            let scale: f32 = b.clone().abs().max().into_scalar();
            let err: f32 = (a - b).abs().max().into_scalar();
            assert!(
                scale > 1e-3 && err <= tolerance * scale,
                "{pooling:?} {name}: differs by {err} (scale {scale})"
            );
        }
    }

    #[test]
    fn nodes_match_burns_pooling() {
        for pooling in [Pooling::Window, Pooling::Global] {
            compare::<Flex>([2, 3, 6, 4], pooling, FloatDType::F32, 1e-5);
        }
    }

    /// The CUDA kernels, bf16 (the model's activations) and f32, at layers' shapes and an odd
    /// one: `cargo test -p worker -- --ignored cuda`.
    #[cfg(feature = "cuda")]
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_pooling_kernels_match_burns_pooling() {
        type G = burn_cuda::Cuda;
        for pooling in [Pooling::Window, Pooling::Global] {
            compare::<G>([3, 5, 6, 4], pooling, FloatDType::F32, 1e-5);
            compare::<G>([16, 128, 16, 16], pooling, FloatDType::F32, 1e-5);
            compare::<G>([64, 64, 32, 32], pooling, FloatDType::BF16, 1e-2);
        }
        compare::<G>([64, 256, 8, 8], Pooling::Global, FloatDType::BF16, 1e-2);
    }
}
