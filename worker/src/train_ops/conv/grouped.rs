//! The convolutions of fused models ([`crate::model::FusedCnn`]) as batched GEMMs over the
//! models.
//!
//! G models' activations lie side by side, `[N, G·C, H, W]` (channels-last in memory). Each
//! model's 3×3 convolution is one matrix of a batched GEMM: its im2col matrix `[N·H·W, 9·C_in]`
//! ([`ConvOps::im2col_3x3_grouped`]: all G in one kernel on CUDA) by its weight as `[9·C_in,
//! C_out]`, the G products back side by side in one copy. The input gradient is the same with
//! the output gradient and each model's flipped, transposed kernel (as [`super`]'s
//! `flipped_input_grad`); the weight gradient is `dYᵀ · cols` per model, split over image groups
//! as the single model's ([`super::reference::weight_grad`]). burn 0.21's grouped `conv2d` runs
//! none of this on tensor cores (its implicit-GEMM strategies refuse groups): 128 ms of host
//! time per fused step of four models at batch 128 on an H200.
//!
//! The bias is not an input: under a training BatchNorm it only shifts the batch mean, which
//! the fused forward hands to the BatchNorm node (as the single model's node does).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::ops::{ConvOptions, FloatTensor};

use super::ConvOps;
use super::reference::{dtype_of, image_groups};
use crate::train_ops::{Kernels, to_dtype, unwrap, wrap};

/// The fused models' convolution layer: `groups` convolutions side by side, as the library's
/// grouped convolution where the `cudnn` part takes the layer ([`super::library`], each pass by
/// the faster of its two calls whether or not the set has `dual`: 16 jobs of batch 64 trained
/// 1.11× as fast so on an H100, both operands from one kernel a step), else one
/// model at a time with `mconv` ([`super::per_model`]), else on the batched-GEMM node when
/// `kernels` has a custom convolution part, burn's grouped `conv2d` otherwise.
pub fn grouped_conv3x3<B: ConvOps>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    groups: usize,
    kernels: Kernels,
) -> Tensor<B, 4> {
    if super::library::takes(&weight, groups, kernels) {
        return wrap(B::library_grouped_conv3x3(unwrap(x), unwrap(weight), groups, kernels.image_cores()));
    }
    let (x, weight) = (unwrap(x), unwrap(weight));
    wrap(match (kernels.custom_conv(), kernels.per_model_conv) {
        (true, true) => B::per_model_conv3x3(x, weight, groups, kernels),
        (true, false) => B::grouped_conv3x3(x, weight, groups),
        (false, _) => by_burn_conv::<B>(x, weight, groups),
    })
}

/// [`ConvOps::grouped_conv3x3`] as burn's grouped `conv2d`, the weight cast to `x`'s dtype.
pub fn by_burn_conv<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>, groups: usize) -> FloatTensor<B> {
    let weight = unwrap(to_dtype(wrap::<B, 4>(weight), dtype_of::<B>(&x)));
    B::conv2d(x, weight, None, ConvOptions::new([1, 1], [1, 1], [1, 1], groups))
}

/// [`ConvOps::im2col_3x3_grouped`] through [`ConvOps::im2col_3x3`]: the `[N·H·W, 9·G·C]`
/// matrix (columns `(kh, kw, g, c)`) regrouped by a permuted copy.
pub fn im2col_by_ops<B: ConvOps>(x: FloatTensor<B>, groups: usize, dtype: FloatDType) -> FloatTensor<B> {
    let [n, channels, h, w] = wrap::<B, 4>(x.clone()).dims();
    let c = channels / groups;
    let cols = wrap::<B, 2>(B::im2col_3x3(x, dtype)).reshape([n * h * w, 9, groups, c]);
    unwrap(cols.permute([2, 0, 1, 3]).reshape([groups * n * h * w, 9 * c]))
}

/// `[N, G·C, H, W]` → `[G, N·H·W, C]`: each group's channels-last rows.
fn to_groups<B: Backend>(t: Tensor<B, 4>, groups: usize) -> Tensor<B, 3> {
    let [n, channels, h, w] = t.dims();
    let c = channels / groups;
    t.permute([0, 2, 3, 1]).reshape([n, h, w, groups, c]).permute([3, 0, 1, 2, 4]).reshape([
        groups,
        n * h * w,
        c,
    ])
}

/// `[G, N·H·W, C]` → `[N, G·C, H, W]` (channels-last in memory): the groups side by side.
fn from_groups<B: Backend>(t: Tensor<B, 3>, [n, h, w]: [usize; 3]) -> Tensor<B, 4> {
    let [groups, _, c] = t.dims();
    t.reshape([groups, n, h, w, c])
        .permute([1, 2, 3, 0, 4])
        .reshape([n, h, w, groups * c])
        .permute([0, 3, 1, 2])
}

/// The forward as batched GEMMs in `x`'s dtype (f32 accumulation): the output and the grouped
/// im2col matrix `[G·N·H·W, 9·C_in]`, which the weight gradient reuses.
pub fn forward_by_gemm<B: ConvOps>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    groups: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let [n, channels, h, w] = wrap::<B, 4>(x.clone()).dims();
    let c_in = channels / groups;
    let dtype = dtype_of::<B>(&x);
    let cols = B::im2col_3x3_grouped(x, groups, dtype);
    let weight = wrap::<B, 4>(weight);
    let c_out = weight.dims()[0] / groups;
    let rhs = weight.reshape([groups, c_out, c_in, 3, 3]).permute([0, 3, 4, 2, 1]).reshape([
        groups,
        9 * c_in,
        c_out,
    ]);
    let lhs = wrap::<B, 2>(cols.clone()).reshape([groups, n * h * w, 9 * c_in]);
    let out = wrap::<B, 3>(B::matmul_to_f32(unwrap(lhs), unwrap(to_dtype(rhs, dtype))));
    (unwrap(from_groups(to_dtype(out, dtype), [n, h, w])), cols)
}

/// Each group's kernel transposed and flipped, `[G, 9·C_out, C_in]` in `dtype`: `flipped[g,
/// (kh, kw, o), i] = weight[g·C_out + o, i, 2 − kh, 2 − kw]`.
fn flipped_operand<B: Backend>(weight: FloatTensor<B>, groups: usize, dtype: FloatDType) -> FloatTensor<B> {
    let weight = wrap::<B, 4>(weight);
    let [rows, c_in, _, _] = weight.dims();
    let c_out = rows / groups;
    let flipped = weight.reshape([groups, c_out, c_in, 3, 3]).flip([3, 4]).permute([0, 3, 4, 1, 2]);
    unwrap(to_dtype(flipped.reshape([groups, 9 * c_out, c_in]), dtype))
}

/// Input gradient: each group's output gradient convolved by its flipped kernel, in `dy`'s dtype.
fn input_grad<B: ConvOps>(dy: FloatTensor<B>, flipped: FloatTensor<B>, groups: usize) -> FloatTensor<B> {
    let [n, _, h, w] = wrap::<B, 4>(dy.clone()).dims();
    let dtype = dtype_of::<B>(&dy);
    let dcols = wrap::<B, 2>(B::im2col_3x3_grouped(dy, groups, dtype));
    let columns = dcols.dims()[1];
    let dx = wrap::<B, 3>(B::matmul_to_f32(unwrap(dcols.reshape([groups, n * h * w, columns])), flipped));
    unwrap(from_groups(to_dtype(dx, dtype), [n, h, w]))
}

/// Weight gradient (f32) `[G·C_out, C_in, 3, 3]` from the grouped im2col matrix and the output
/// gradient: `dYᵀ · cols` per group, each split over image groups and summed in f32
/// ([`ConvOps::grouped_summed_matmul_to_f32`]: on CUDA the single model's matmul and group-sum
/// kernel, in f32 as in bf16).
pub fn weight_grad_by_gemm<B: ConvOps>(cols: Tensor<B, 2>, dy: Tensor<B, 4>, groups: usize) -> Tensor<B, 4> {
    let [n, channels, h, w] = dy.dims();
    let (c_out, columns) = (channels / groups, cols.dims()[1]);
    let splits = image_groups(n, h * w);
    let rows = n / splits * h * w;
    let dy = to_groups(dy, groups).reshape([groups * splits, rows, c_out]);
    let cols = cols.reshape([groups * splits, rows, columns]);
    let dw = wrap::<B, 3>(B::grouped_summed_matmul_to_f32(unwrap(dy.swap_dims(1, 2)), unwrap(cols), groups));
    dw.reshape([groups, c_out, 3, 3, columns / 9]).permute([0, 1, 4, 2, 3]).reshape([
        groups * c_out,
        columns / 9,
        3,
        3,
    ])
}

/// The backward node of [`ConvOps::grouped_conv3x3`].
#[derive(Debug)]
struct GroupedBackward {
    groups: usize,
}

/// What the backward needs: the flipped kernels when the input takes a gradient, the grouped
/// im2col matrix when the weight does.
#[derive(Debug, Clone)]
struct GroupedState<B: Backend> {
    flipped: Option<FloatTensor<B>>,
    cols: Option<FloatTensor<B>>,
}

impl<B: ConvOps> Backward<B, 2> for GroupedBackward {
    type State = GroupedState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let (Some(node), Some(flipped)) = (node_x, ops.state.flipped) {
            grads.register::<B>(node.id, input_grad::<B>(grad.clone(), flipped, self.groups));
        }
        if let (Some(node), Some(cols)) = (node_weight, ops.state.cols) {
            let dw = weight_grad_by_gemm::<B>(wrap(cols), wrap(grad), self.groups);
            grads.register::<B>(node.id, unwrap(dw));
        }
    }
}

/// [`ConvOps::grouped_conv3x3`] for `Autodiff<B, C>`.
pub(super) fn autodiff_grouped<B: ConvOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    groups: usize,
) -> FloatTensor<Autodiff<B, C>> {
    let prepared = GroupedBackward { groups }
        .prepare::<C>([x.node.clone(), weight.node.clone()])
        .compute_bound()
        .stateful();
    match prepared {
        OpsKind::UnTracked(prep) => {
            prep.finish(forward_by_gemm::<B>(x.primitive, weight.primitive, groups).0)
        }
        OpsKind::Tracked(prep) => {
            let dtype = dtype_of::<B>(&x.primitive);
            let flipped = (!x.node.requirement.is_none())
                .then(|| flipped_operand::<B>(weight.primitive.clone(), groups, dtype));
            let (out, cols) = forward_by_gemm::<B>(x.primitive, weight.primitive, groups);
            let cols = (!weight.node.requirement.is_none()).then_some(cols);
            prep.finish(GroupedState { flipped, cols }, out)
        }
    }
}

#[cfg(test)]
mod tests;
