//! The convolution layer of fused models ([`crate::model::FusedCnn`]) with the forward and the
//! input gradient one model at a time on the single model's kernels (the `mconv` kernel part).
//!
//! G models' activations lie side by side, `[N, G·C, H, W]` (channels-last in memory). Model
//! g's channels are convolved as the single model's node convolves them: its kernel in the
//! activations' dtype and flipped for the input gradient ([`ConvOps::conv_operands`]), both
//! passes on [`ConvOps::conv3x3_nobias`] (on the kernel set's engine: `tconv`'s tilings, cuDNN); the
//! G outputs go back side by side in one copy. The weight gradient needs an im2col matrix
//! either way, so it stays [`super::grouped`]'s: one grouped im2col kernel and one batched
//! split-K GEMM for all models, as does the image's few-channel layer with `xgemm` (one
//! explicit batched GEMM, its matrix reused by the weight gradient). Against [`super::grouped`]:
//! G launches per forward and input-gradient convolution instead of one, and no nine-fold
//! im2col matrix in either.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;

use super::ConvOps;
use super::grouped::{forward_by_gemm, weight_grad_by_gemm};
use super::node::explicit_gemm;
use super::reference::{dtype_of, forward, input_grad};
use crate::train_ops::{ConvEngine, Kernels, unwrap, wrap};

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

/// Whether the layer (input `x: [N, G·C_in, H, W]`) runs as one explicit GEMM: the image's few
/// channels with `xgemm`, as the single model's node decides.
fn explicit<B: Backend>(x: &FloatTensor<B>, groups: usize, kernels: Kernels) -> bool {
    explicit_gemm(kernels, wrap::<B, 4>(x.clone()).dims()[1] / groups)
}

/// Each model's forward in `x`'s dtype, side by side; `operands[g]` is model g's kernel
/// (cast to the dtype when it is not yet).
fn forward_each<B: ConvOps>(
    x: &FloatTensor<B>,
    operands: Vec<FloatTensor<B>>,
    engine: ConvEngine,
) -> FloatTensor<B> {
    let groups = operands.len();
    let outs = operands
        .into_iter()
        .enumerate()
        .map(|(g, w)| forward::<B>(group::<B>(x, g, groups), w, None, engine));
    side_by_side::<B>(outs.collect())
}

/// Inference: the forward of [`autodiff_per_model`] without what the backward keeps.
pub fn forward_per_model<B: ConvOps>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    groups: usize,
    kernels: Kernels,
) -> FloatTensor<B> {
    if explicit::<B>(&x, groups, kernels) {
        return forward_by_gemm::<B>(x, weight, groups).0;
    }
    let operands = (0..groups).map(|g| kernel::<B>(&weight, g, groups)).collect();
    forward_each::<B>(&x, operands, kernels.conv_engine())
}

/// The backward node of [`ConvOps::per_model_conv3x3`].
#[derive(Debug)]
struct PerModelBackward {
    groups: usize,
    engine: ConvEngine,
}

/// What the backward needs: the input when the weight gradient has to build its im2col
/// matrix (or the input gradient has no flipped kernels), the matrix when the forward built
/// it, each model's flipped kernel with `dgrad`.
#[derive(Debug, Clone)]
struct PerModelState<B: Backend> {
    x: Option<FloatTensor<B>>,
    cols: Option<FloatTensor<B>>,
    flipped: Vec<FloatTensor<B>>,
    weight: FloatTensor<B>,
}

impl<B: ConvOps> Backward<B, 2> for PerModelBackward {
    type State = PerModelState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (groups, state) = (self.groups, ops.state);
        let kept = || state.x.clone().expect("the input is kept for the gradients that need it");
        if let Some(node) = node_x {
            let dx = (0..groups).map(|g| {
                let dy = group::<B>(&grad, g, groups);
                match state.flipped.get(g) {
                    Some(flipped) => B::conv3x3_nobias(dy, flipped.clone(), self.engine),
                    None => input_grad::<B>(
                        group::<B>(&kept(), g, groups),
                        kernel::<B>(&state.weight, g, groups),
                        dy,
                    ),
                }
            });
            grads.register::<B>(node.id, side_by_side::<B>(dx.collect()));
        }
        if let Some(node) = node_weight {
            let cols = state
                .cols
                .clone()
                .unwrap_or_else(|| B::im2col_3x3_grouped(kept(), groups, dtype_of::<B>(&grad)));
            let dw = weight_grad_by_gemm::<B>(wrap(cols), wrap(grad), groups);
            grads.register::<B>(node.id, unwrap(dw));
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
    let engine = kernels.conv_engine();
    let prepared = PerModelBackward { groups, engine }
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
    let mut state = PerModelState { x: None, cols: None, flipped: Vec::new(), weight: weight.clone() };
    let explicit = explicit::<B>(&x, groups, kernels);
    let flipped = kernels.flipped_input_grad && x_grad;
    // With `dgrad` one kernel writes both of a model's operands, as the single model's node does.
    let operands: Vec<_> = (0..groups)
        .filter(|_| flipped || !explicit)
        .map(|g| {
            let w = kernel::<B>(&weight, g, groups);
            if !flipped {
                return w;
            }
            let [operand, flipped] = B::conv_operands(w, 1, dtype);
            state.flipped.push(flipped);
            operand
        })
        .collect();
    let out = if explicit {
        let (out, cols) = forward_by_gemm::<B>(x.clone(), weight, groups);
        state.cols = weight_grad.then_some(cols);
        out
    } else {
        forward_each::<B>(&x, operands, engine)
    };
    let needs_x = (weight_grad && state.cols.is_none()) || (x_grad && state.flipped.is_empty());
    state.x = needs_x.then_some(x);
    prep.finish(state, out)
}
