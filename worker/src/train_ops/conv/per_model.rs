//! The convolution layer of fused models ([`crate::model::FusedCnn`]) one model at a time on
//! the single model's kernels (the `mconv` kernel part).
//!
//! G models' activations lie side by side, `[N, G·C, H, W]` (channels-last in memory). Model
//! g's channels are convolved as the single model's node convolves them: its kernel in the
//! activations' dtype and flipped for the input gradient ([`ConvOps::conv_operands`]), forward
//! and input gradient on [`ConvOps::conv3x3_nobias`] (with `tconv`, the tilings tuned for the
//! model), the image's few channels as one explicit GEMM with `xgemm`, the weight gradient by
//! split-K GEMM over its im2col matrix ([`super::reference::weight_grad`]); the G outputs go
//! back side by side in one copy. Against [`super::grouped`]: G launches per convolution
//! instead of one, and no nine-fold im2col matrix in the forward and the input gradient.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;

use super::reference::{dtype_of, forward, forward_by_gemm, input_grad, weight_grad, weight_grad_of_cols};
use super::{ConvOps, EXPLICIT_GEMM_CHANNELS};
use crate::train_ops::{Kernels, unwrap, wrap};

/// Channels `g·C .. (g+1)·C` of `t: [N, G·C, H, W]`.
fn group<B: Backend>(t: &FloatTensor<B>, g: usize, groups: usize) -> FloatTensor<B> {
    let t = wrap::<B, 4>(t.clone());
    let c = t.dims()[1] / groups;
    unwrap(t.narrow(1, g * c, c))
}

/// Rows `g·C_out .. (g+1)·C_out` of the stacked weight `[G·C_out, C_in, 3, 3]`: model g's kernel.
fn kernel<B: Backend>(weight: &FloatTensor<B>, g: usize, groups: usize) -> FloatTensor<B> {
    let weight = wrap::<B, 4>(weight.clone());
    let c_out = weight.dims()[0] / groups;
    unwrap(weight.narrow(0, g * c_out, c_out))
}

/// The models' results `[N, C, H, W]` side by side, `[N, G·C, H, W]`, one copy through the
/// channels-last views (the layout the BatchNorm node and the next convolution read).
fn side_by_side<B: Backend>(parts: Vec<FloatTensor<B>>) -> FloatTensor<B> {
    let parts = parts.into_iter().map(|p| wrap::<B, 4>(p).permute([0, 2, 3, 1])).collect();
    unwrap(Tensor::cat(parts, 3).permute([0, 3, 1, 2]))
}

/// Whether the layer's input (`c_in` channels a model) runs as one explicit GEMM.
fn explicit(kernels: Kernels, c_in: usize) -> bool {
    kernels.explicit_gemm && c_in < EXPLICIT_GEMM_CHANNELS
}

/// Inference: each model's convolution on the single model's forward, side by side.
pub fn forward_per_model<B: ConvOps>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    groups: usize,
    kernels: Kernels,
) -> FloatTensor<B> {
    let c_in = wrap::<B, 4>(x.clone()).dims()[1] / groups;
    let outs = (0..groups)
        .map(|g| {
            let (x, w) = (group::<B>(&x, g, groups), kernel::<B>(&weight, g, groups));
            match explicit(kernels, c_in) {
                true => forward_by_gemm::<B>(x, w, None).0,
                false => forward::<B>(x, w, None, kernels.tuned_conv),
            }
        })
        .collect();
    side_by_side::<B>(outs)
}

/// The backward node of [`ConvOps::per_model_conv3x3`].
#[derive(Debug)]
struct PerModelBackward {
    groups: usize,
    kernels: Kernels,
}

/// What the backward needs: the input (for the weight gradient's im2col matrices, unless the
/// forward kept them), each model's flipped kernel when the input takes a gradient.
#[derive(Debug, Clone)]
struct PerModelState<B: Backend> {
    x: Option<FloatTensor<B>>,
    cols: Vec<FloatTensor<B>>,
    flipped: Vec<FloatTensor<B>>,
    weight: FloatTensor<B>,
}

impl<B: ConvOps> Backward<B, 2> for PerModelBackward {
    type State = PerModelState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (groups, state) = (self.groups, ops.state);
        if let Some(node) = node_x {
            let dx = (0..groups)
                .map(|g| {
                    let dy = group::<B>(&grad, g, groups);
                    match state.flipped.get(g) {
                        Some(flipped) => B::conv3x3_nobias(dy, flipped.clone(), self.kernels.tuned_conv),
                        None => {
                            let x = group::<B>(state.x.as_ref().expect("kept for the gradients"), g, groups);
                            input_grad::<B>(x, kernel::<B>(&state.weight, g, groups), dy)
                        }
                    }
                })
                .collect();
            grads.register::<B>(node.id, side_by_side::<B>(dx));
        }
        if let Some(node) = node_weight {
            let dw: Vec<Tensor<B, 4>> = (0..groups)
                .map(|g| {
                    let dy = wrap::<B, 4>(group::<B>(&grad, g, groups));
                    match state.cols.get(g) {
                        Some(cols) => {
                            let c_in = wrap::<B, 4>(state.weight.clone()).dims()[1];
                            weight_grad_of_cols::<B>(wrap(cols.clone()), dy, c_in)
                        }
                        None => {
                            let x = state.x.as_ref().expect("kept for the gradients");
                            weight_grad::<B>(wrap(group::<B>(x, g, groups)), dy)
                        }
                    }
                })
                .collect();
            grads.register::<B>(node.id, unwrap(Tensor::cat(dw, 0)));
        }
    }
}

/// [`ConvOps::per_model_conv3x3`] for `Autodiff<B, C>`.
pub(super) fn autodiff_per_model<B: ConvOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    groups: usize,
    kernels: Kernels,
) -> FloatTensor<Autodiff<B, C>> {
    let prepared = PerModelBackward { groups, kernels }
        .prepare::<C>([x.node.clone(), weight.node.clone()])
        .compute_bound()
        .stateful();
    let prep = match prepared {
        OpsKind::Tracked(prep) => prep,
        OpsKind::UnTracked(prep) => {
            return prep.finish(forward_per_model::<B>(x.primitive, weight.primitive, groups, kernels));
        }
    };
    let (x_grad, weight_grad) = (!x.node.requirement.is_none(), !weight.node.requirement.is_none());
    let (x, weight) = (x.primitive, weight.primitive);
    let dtype = dtype_of::<B>(&x);
    let c_in = wrap::<B, 4>(x.clone()).dims()[1] / groups;
    let explicit = explicit(kernels, c_in);
    let mut state = PerModelState { x: None, cols: Vec::new(), flipped: Vec::new(), weight: weight.clone() };
    let mut outs = Vec::with_capacity(groups);
    for g in 0..groups {
        let (x_g, w_g) = (group::<B>(&x, g, groups), kernel::<B>(&weight, g, groups));
        // With `dgrad` one kernel writes both operands, as the single model's node does.
        let operand = (kernels.flipped_input_grad && x_grad).then(|| {
            let [operand, flipped] = B::conv_operands(w_g.clone(), dtype);
            state.flipped.push(flipped);
            operand
        });
        outs.push(match explicit {
            true => {
                let (out, cols) = forward_by_gemm::<B>(x_g, w_g, None);
                state.cols.extend(weight_grad.then_some(cols));
                out
            }
            false => forward::<B>(x_g, operand.unwrap_or(w_g), None, kernels.tuned_conv),
        });
    }
    let needs_x = (weight_grad && !explicit) || (x_grad && state.flipped.is_empty());
    state.x = needs_x.then_some(x);
    prep.finish(state, side_by_side::<B>(outs))
}
