//! The fused models' convolution layer as three library calls, each one launch for all models
//! (kernel part `cudnn`: cuDNN's grouped convolution on CUDA): the forward, the input gradient
//! from the forward's operand, the weight gradient from the input. No im2col matrix; both passes
//! by the data take the operand and, run as the faster of two calls (as fused groups run them),
//! each model's flipped kernel, both written once a step by one launch
//! ([`ConvOps::conv_operands`]). The CPU and the tests run the references
//! ([`ConvOps`]'s defaults: burn's grouped `conv2d`, with each model's flipped kernel for the
//! input gradient, and the batched GEMMs of [`super::grouped`] for the weight gradient).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::ops::FloatTensor;

use super::grouped::weight_grad_by_gemm;
use super::reference::dtype_of;
use super::{ConvOps, IMAGE_CHANNELS};
use crate::train_ops::{ImageCores, Kernels, to_dtype, unwrap, wrap};

/// Whether the layer of `groups` models, `weight: [G·C_out, C_in, 3, 3]`, runs as library calls
/// under `kernels`: the `cudnn` part and channel counts cuDNN's tensor-core kernels take
/// (multiples of 8), or with `bimage` the image's layer (in bf16 on the direct kernels of the
/// single model's image layer, which take fused models side by side). The part implies bf16
/// activations; the CUDA hooks run anything else on burn's kernels.
pub fn takes<B: Backend>(weight: &Tensor<B, 4>, groups: usize, kernels: Kernels) -> bool {
    let (c_in, c_out) = (weight.dims()[1], weight.dims()[0] / groups);
    let image = kernels.bf16_image && c_in < IMAGE_CHANNELS;
    kernels.cudnn_conv && (image || (c_in.is_multiple_of(8) && c_out.is_multiple_of(8)))
}

/// [`ConvOps::library_grouped_weight_grad`]'s reference: the batched GEMMs over the grouped
/// im2col matrix.
pub fn weight_grad_by_im2col<B: ConvOps>(
    x: FloatTensor<B>,
    dy: FloatTensor<B>,
    groups: usize,
) -> FloatTensor<B> {
    let cols = B::im2col_3x3_grouped(x, groups, dtype_of::<B>(&dy));
    unwrap(weight_grad_by_gemm::<B>(wrap(cols), wrap(dy), groups))
}

/// The backward node of [`ConvOps::library_grouped_conv3x3`].
#[derive(Debug)]
struct LibraryBackward {
    groups: usize,
    cores: ImageCores,
}

/// What the backward needs: both operands when the input takes a gradient, the input when the
/// weight does.
#[derive(Debug, Clone)]
struct LibraryState<B: Backend> {
    operands: Option<(FloatTensor<B>, FloatTensor<B>)>,
    x: Option<FloatTensor<B>>,
}

impl<B: ConvOps> Backward<B, 2> for LibraryBackward {
    type State = LibraryState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let (Some(node), Some((operand, flipped))) = (node_x, ops.state.operands) {
            grads.register::<B>(
                node.id,
                B::library_grouped_input_grad(grad.clone(), operand, flipped, self.groups),
            );
        }
        if let (Some(node), Some(x)) = (node_weight, ops.state.x) {
            grads.register::<B>(node.id, B::library_grouped_weight_grad(x, grad, self.groups, self.cores));
        }
    }
}

/// [`ConvOps::library_grouped_conv3x3`] for `Autodiff<B, C>`.
pub(super) fn autodiff_library<B: ConvOps, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    groups: usize,
    cores: ImageCores,
) -> FloatTensor<Autodiff<B, C>> {
    let prepared = LibraryBackward { groups, cores }
        .prepare::<C>([x.node.clone(), weight.node.clone()])
        .compute_bound()
        .stateful();
    let [operand, flipped] = B::conv_operands(weight.primitive, groups, dtype_of::<B>(&x.primitive));
    match prepared {
        OpsKind::UnTracked(prep) => {
            prep.finish(B::library_grouped_forward(x.primitive, operand, flipped, groups, cores))
        }
        OpsKind::Tracked(prep) => {
            let keep_operands = (!x.node.requirement.is_none()).then(|| (operand.clone(), flipped.clone()));
            let keep_x = (!weight.node.requirement.is_none()).then(|| x.primitive.clone());
            let out = B::library_grouped_forward(x.primitive, operand, flipped, groups, cores);
            prep.finish(LibraryState { operands: keep_operands, x: keep_x }, out)
        }
    }
}

/// The f32 weight gradient a library call returned in `dtype`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(super) fn f32_grad<B: Backend>(dw: FloatTensor<B>) -> FloatTensor<B> {
    unwrap(to_dtype(wrap::<B, 4>(dw), FloatDType::F32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    use crate::train_ops::conv::grouped::by_burn_conv;
    use crate::train_ops::conv::reference::grouped_flipped;

    /// The input-gradient pass by the flipped kernels is the convolution by the kernels: what
    /// lets cuDNN run a grouped convolution as either call.
    #[test]
    fn the_input_gradient_pass_by_the_flipped_kernels_is_the_convolution() {
        type B = Autodiff<Flex>;
        let (groups, c_in, c_out, device) = (3, 4, 5, Default::default());
        let x = Tensor::<Flex, 4>::random([2, groups * c_in, 6, 5], Distribution::Normal(0.0, 1.0), &device);
        let weight =
            Tensor::<Flex, 4>::random([groups * c_out, c_in, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        let direct = wrap::<Flex, 4>(by_burn_conv::<Flex>(unwrap(x.clone()), unwrap(weight.clone()), groups));
        let flipped = wrap::<Flex, 4>(grouped_flipped::<Flex>(unwrap(weight), groups));
        // The input-gradient pass of the convolution by `flipped`, with `x` as its output gradient.
        let u = Tensor::<B, 4>::zeros([2, groups * c_out, 6, 5], &device).require_grad();
        let z = wrap::<B, 4>(by_burn_conv::<B>(
            unwrap(u.clone()),
            unwrap(Tensor::<B, 4>::from_inner(flipped)),
            groups,
        ));
        let grads = (z * Tensor::<B, 4>::from_inner(x)).sum().backward();
        let swapped = u.grad(&grads).unwrap();
        let err = (swapped - direct.clone()).abs().max().into_scalar();
        let scale = direct.abs().max().into_scalar();
        assert!(err <= 1e-5 * scale, "off by {err} at a scale of {scale}");
    }
}
