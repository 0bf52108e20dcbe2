//! The model's head, `x · w + b` ([`LinearOps::dense`]), as one autodiff node whose three
//! small products (the forward with its bias, the input and weight gradients) run on CUDA as
//! one fixed kernel each (`cuda`). burn's matmul autotunes every shape: on a cold cache the
//! head's shapes (batch × 256 × 10, the epoch's last batch and validation's) took about 90 s of
//! a first epoch, for a layer of a few MFLOP.

#[cfg(feature = "cuda")]
mod cuda;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn::tensor::ops::FloatTensor;

use super::{unwrap, wrap};

/// The head as backend methods: the defaults are burn's ops; `Autodiff<B>` runs
/// [`LinearOps::dense`] as a node whose gradients are [`LinearOps::small_matmul`]s, which
/// burn's CUDA backends run as one untuned kernel each, as they run the forward (`cuda`).
pub trait LinearOps: Backend {
    /// `lhs · rhs` of f32 `lhs: [M, K]` and `rhs: [K, N]` (either may be a transposed view):
    /// `[M, N]`. Default: burn's matmul.
    fn small_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(lhs, rhs)
    }

    /// `x · w + b` of f32 `x: [N, I]`, `w: [I, O]` and `b: [O]`: `[N, O]`. Default: the
    /// product, then the bias added; burn's CUDA backends add it in the product's kernel.
    fn dense(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let outputs = b.shape().num_elements();
        let product = Self::small_matmul(x, w);
        Self::float_add(product, Self::float_reshape(b, [1, outputs].into()))
    }
}

impl LinearOps for burn::backend::Flex {}

impl<B: LinearOps, C: CheckpointStrategy> LinearOps for Autodiff<B, C> {
    fn dense(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        let output = B::dense(x.primitive.clone(), w.primitive.clone(), b.primitive.clone());
        let parents = [x.node.clone(), w.node.clone(), b.node.clone()];
        match LinearBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x.primitive, w.primitive), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }
}

#[derive(Debug)]
struct LinearBackward;

impl<B: LinearOps> Backward<B, 3> for LinearBackward {
    /// The forward's `x` and `w`.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, w_node, b_node] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, w) = ops.state;
        if let Some(node) = x_node {
            grads.register::<B>(node.id, B::small_matmul(dy.clone(), B::float_transpose(w)));
        }
        if let Some(node) = w_node {
            grads.register::<B>(node.id, B::small_matmul(B::float_transpose(x), dy.clone()));
        }
        if let Some(node) = b_node {
            let outputs = dy.shape()[1];
            grads.register::<B>(node.id, B::float_reshape(B::float_sum_dim(dy, 0), [outputs].into()));
        }
    }
}

/// `head` on `x: [N, I]` through [`LinearOps::dense`]: what `Linear::forward` computes.
pub fn head<B: LinearOps>(head: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    let outputs = head.weight.dims()[1];
    let device = x.device();
    let bias = head.bias.as_ref().map_or_else(|| Tensor::zeros([outputs], &device), |b| b.val());
    wrap(B::dense(unwrap(x), unwrap(head.weight.val()), unwrap(bias)))
}

#[cfg(test)]
mod tests;
