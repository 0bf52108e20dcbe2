//! The convolution's autodiff node ([`ConvOps::conv3x3_same`] on `Autodiff<B>`): the forward on
//! the hooks `kernels` picks, and what the backward keeps and computes.

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;

use super::ConvOps;
use super::reference::{
    bias_grad, dtype_of, forward, forward_by_gemm, input_grad, stock_weight_grad, weight_grad_of_cols,
};
use crate::train_ops::{Kernels, unwrap, wrap};

/// Input channels below which the `xgemm` part runs a convolution as one explicit GEMM over its
/// im2col matrix ([`reference::forward_by_gemm`]; the image's 3 channels): burn's implicit-GEMM kernel took
/// 245 µs for the model's first layer on an H100, and its weight gradient recomputed the im2col
/// matrix (128 µs).
const EXPLICIT_GEMM_CHANNELS: usize = 8;

/// Whether a convolution with `c_in` input channels runs as one explicit GEMM under `kernels`.
pub(super) fn explicit_gemm(kernels: Kernels, c_in: usize) -> bool {
    kernels.explicit_gemm && c_in < EXPLICIT_GEMM_CHANNELS
}

/// The backward node: gradients as `kernels` says; no bias gradient (it is exactly zero) when
/// the output feeds a training-mode BatchNorm ([`ConvOps::conv3x3_same`]), so the optimizer
/// leaves the bias as it is, as Adam would with a zero gradient.
#[derive(Debug)]
struct Conv3x3Backward {
    kernels: Kernels,
    zero_bias_grad: bool,
}

/// What the backward needs.
#[derive(Debug, Clone)]
struct ConvState<B: Backend> {
    /// Checkpointed input.
    x: NodeId,
    /// Checkpointed weight.
    weight: NodeId,
    /// With `flipped_input_grad`, the flipped kernel in the output's dtype and the kernel
    /// itself ([`ConvOps::conv_operands`]): the input gradient is the convolution by the one or
    /// the input-gradient pass by the other ([`ConvOps::conv3x3_either`]).
    flipped: Option<[FloatTensor<B>; 2]>,
    /// The input's im2col matrix when the forward was one explicit GEMM ([`reference::forward_by_gemm`]).
    cols: Option<FloatTensor<B>>,
}

impl<B: ConvOps> Backward<B, 3> for Conv3x3Backward {
    type State = ConvState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let state = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(state.x);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(state.weight);
        if let Some(node) = node_x {
            // dX[i, p, q] = Σ_{o, kh, kw} W[o, i, 2−kh, 2−kw] · dYpad[o, p+kh, q+kw]: the forward
            // convolution of dY by the flipped kernel.
            let dx = match state.flipped {
                Some([flipped, operand]) if self.kernels.dual_calls => {
                    B::conv3x3_either(grad.clone(), flipped, operand, self.kernels.conv_engine())
                }
                Some([flipped, _]) => B::conv3x3_nobias(grad.clone(), flipped, self.kernels.conv_engine()),
                None => input_grad::<B>(x.clone(), weight.clone(), grad.clone()),
            };
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_bias.filter(|_| !self.zero_bias_grad) {
            grads.register::<B>(node.id, unwrap(bias_grad(wrap::<B, 4>(grad.clone()))));
        }
        if let Some(node) = node_weight {
            let c_in = wrap::<B, 4>(x.clone()).dims()[1];
            let dw = if let Some(cols) = state.cols {
                weight_grad_of_cols::<B>(wrap(cols), wrap(grad), c_in)
            } else if self.kernels.gemm_weight_grad || self.kernels.cudnn_conv {
                wrap(B::conv3x3_weight_grad(x, grad, self.kernels.conv_engine()))
            } else {
                stock_weight_grad::<B>(x, weight, grad)
            };
            grads.register::<B>(node.id, unwrap(dw));
        }
    }
}

/// [`ConvOps::conv3x3_same`] for `Autodiff<B, C>`.
pub(super) fn autodiff_conv3x3<B: ConvOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
    operands: Option<[FloatTensor<B>; 2]>,
    kernels: Kernels,
    feeds_batch_norm: bool,
) -> FloatTensor<Autodiff<B, C>> {
    let prepared = Conv3x3Backward { kernels, zero_bias_grad: feeds_batch_norm }
        .prepare::<C>([x.node.clone(), weight.node.clone(), bias.node.clone()])
        .compute_bound()
        .stateful();
    // Ahead of the BatchNorm node the bias is left to it (see `ConvOps::conv3x3_same`).
    let bias = (!feeds_batch_norm).then_some(bias.primitive);
    let engine = kernels.conv_engine();
    // The image's few channels: one explicit GEMM (see `forward_by_gemm`); without `xgemm`, the
    // `cudnn` part's hooks take them on CUDA.
    let explicit = explicit_gemm(kernels, wrap::<B, 4>(x.primitive.clone()).dims()[1]);
    let mut prep = match prepared {
        OpsKind::Tracked(prep) => prep,
        OpsKind::UnTracked(prep) => {
            return prep.finish(forward::<B>(x.primitive, weight.primitive, bias, engine));
        }
    };
    let mut state =
        ConvState { x: prep.checkpoint(&x), weight: prep.checkpoint(&weight), flipped: None, cols: None };
    let dtype = dtype_of::<B>(&x.primitive);
    let out = if explicit {
        if kernels.flipped_input_grad && !x.node.requirement.is_none() {
            let [operand, flipped] = B::conv_operands(weight.primitive.clone(), 1, dtype);
            state.flipped = Some([flipped, operand]);
        }
        let (out, cols) = forward_by_gemm::<B>(x.primitive, weight.primitive, bias);
        state.cols = Some(cols);
        out
    } else if kernels.flipped_input_grad {
        // Operands made beforehand serve only in the convolution's dtype.
        let made = operands.filter(|pair| pair.iter().all(|t| dtype_of::<B>(t) == dtype));
        let [operand, flipped] = made.unwrap_or_else(|| B::conv_operands(weight.primitive, 1, dtype));
        state.flipped = Some([flipped.clone(), operand.clone()]);
        match bias {
            None if kernels.dual_calls => B::conv3x3_either(x.primitive, operand, flipped, engine),
            bias => forward::<B>(x.primitive, operand, bias, engine),
        }
    } else {
        forward::<B>(x.primitive, weight.primitive, bias, engine)
    };
    prep.finish(state, out)
}
