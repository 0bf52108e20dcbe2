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
        return wrap(B::library_grouped_conv3x3(unwrap(x), unwrap(weight), groups));
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
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    use super::*;

    /// The node of `kernels` (batched GEMMs, or per model with `mconv`) against autodiff through
    /// burn's grouped `conv2d`, on backend `B`: output and gradients within `tolerance` of each
    /// result's scale, and the output without autodiff.
    fn node_matches_burns_grouped_conv<B: ConvOps>(kernels: Kernels, dtype: FloatDType, tolerance: f32) {
        let device = Default::default();
        for (n, groups, c_in, c_out, size) in [(2, 3, 3, 4, 5), (4, 2, 8, 16, 8), (3, 4, 16, 8, 6)] {
            let x = crate::model::drawn(|| {
                Tensor::<B, 4>::random(
                    [n, groups * c_in, size, size],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                )
            });
            let weight = crate::model::drawn(|| {
                Tensor::<B, 4>::random([groups * c_out, c_in, 3, 3], Distribution::Normal(0.0, 0.3), &device)
            });
            let dy = crate::model::drawn(|| {
                Tensor::<B, 4>::random(
                    [n, groups * c_out, size, size],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                )
            });
            let run = |node: bool| {
                let x = Tensor::<Autodiff<B>, 4>::from_inner(to_dtype(x.clone(), dtype)).require_grad();
                let w = Tensor::<Autodiff<B>, 4>::from_inner(weight.clone()).require_grad();
                let y = match node {
                    true => grouped_conv3x3(x.clone(), w.clone(), groups, kernels),
                    false => wrap(by_burn_conv::<Autodiff<B>>(unwrap(x.clone()), unwrap(w.clone()), groups)),
                };
                let grads =
                    (to_dtype(y.clone(), FloatDType::F32) * Tensor::from_inner(dy.clone())).sum().backward();
                let flat = |t: Tensor<B, 4>| to_dtype(t, FloatDType::F32).flatten::<1>(0, 3);
                [flat(y.inner()), flat(x.grad(&grads).unwrap()), flat(w.grad(&grads).unwrap())]
            };
            let inference = grouped_conv3x3(to_dtype(x.clone(), dtype), weight.clone(), groups, kernels);
            let mut got = run(true).to_vec();
            got.push(to_dtype(inference, FloatDType::F32).flatten::<1>(0, 3));
            let want = run(false);
            let want = [&want[0], &want[1], &want[2], &want[0]];
            for (name, (got, want)) in ["output", "input grad", "weight grad", "inference output"]
                .iter()
                .zip(got.into_iter().zip(want))
            {
                let want = want.clone();
                let scale: f32 = want.clone().abs().max().into_scalar().elem();
                let err: f32 = (got - want).abs().max().into_scalar().elem();
                assert!(
                    scale > 0.0 && err <= tolerance * scale,
                    "{name} ({n}, {groups}, {c_in}→{c_out}): off by {err} of {scale}"
                );
            }
        }
    }

    #[test]
    fn the_grouped_node_matches_burns_grouped_convolution() {
        node_matches_burns_grouped_conv::<Flex>(Kernels::FAST, FloatDType::F32, 1e-5);
    }

    /// With `cudnn` the layers whose per-model channels are multiples of 8 (not the image's)
    /// run as the library node; on the CPU its calls are the references, with `dual` too.
    #[test]
    fn the_library_node_matches_burns_grouped_convolution() {
        let cudnn: Kernels = "wgrad+dgrad+bn+bf16+cudnn".parse().unwrap();
        let weight = |c_in: usize| Tensor::<Flex, 4>::zeros([2 * 16, c_in, 3, 3], &Default::default());
        assert!(super::super::library::takes(&weight(8), 2, cudnn));
        assert!(!super::super::library::takes(&weight(3), 2, cudnn), "the image's channels");
        assert!(super::super::library::takes(&weight(3), 2, Kernels::FAST_BF16_CUDNN), "the bf16 image");
        assert!(!super::super::library::takes(&weight(8), 2, Kernels::FAST_BF16));
        for dual_calls in [false, true] {
            node_matches_burns_grouped_conv::<Flex>(
                Kernels { cudnn_conv: true, dual_calls, ..Kernels::FAST },
                FloatDType::F32,
                1e-5,
            );
        }
    }

    #[test]
    fn the_per_model_node_matches_burns_grouped_convolution() {
        for kernels in ["fast+mconv", "fast+xgemm+mconv", "wgrad+bn+mconv"] {
            node_matches_burns_grouped_conv::<Flex>(kernels.parse().unwrap(), FloatDType::F32, 1e-5);
        }
    }

    /// The node's output and gradients on `B` for `x`, `weight` and the output gradient `dy`
    /// (channels-last in memory when `channels_last`, as BatchNorm's backward hands it over), f32.
    #[cfg(feature = "cuda")]
    fn node_results<B: ConvOps>(
        [x, weight, dy]: [&TensorData; 3],
        (groups, kernels): (usize, Kernels),
        dtype: FloatDType,
        channels_last: bool,
    ) -> [Vec<f32>; 3] {
        let device = Default::default();
        let x = Tensor::<Autodiff<B>, 4>::from_inner(to_dtype(Tensor::from_data(x.clone(), &device), dtype))
            .require_grad();
        let w = Tensor::<Autodiff<B>, 4>::from_data(weight.clone(), &device).require_grad();
        let dy = match channels_last {
            true => {
                let nhwc =
                    Tensor::<Flex, 4>::from_data(dy.clone(), &Default::default()).permute([0, 2, 3, 1]);
                Tensor::<B, 4>::from_data(nhwc.into_data(), &device).permute([0, 3, 1, 2])
            }
            false => Tensor::<B, 4>::from_data(dy.clone(), &device),
        };
        let y = grouped_conv3x3(x.clone(), w.clone(), groups, kernels);
        let grads = (to_dtype(y.clone(), FloatDType::F32) * Tensor::from_inner(dy)).sum().backward();
        let values = |t: Tensor<B, 4>| to_dtype(t, FloatDType::F32).into_data().to_vec::<f32>().expect("f32");
        [values(y.inner()), values(x.grad(&grads).unwrap()), values(w.grad(&grads).unwrap())]
    }

    /// The node on a GPU in f32 against the same node on the CPU (which the test above checks
    /// against burn's grouped convolution), with the output gradient channels-first and
    /// channels-last; the model's first layer (3 input channels a model) among the shapes.
    /// Needs a CUDA GPU: `cargo test -p worker -- --ignored cuda`.
    #[cfg(feature = "cuda")]
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_grouped_node_matches_the_cpu_node() {
        node_on_the_gpu_matches_the_cpu(Kernels::FAST, FloatDType::F32, 1e-3);
    }

    /// The same with bf16 activations (the fused step's), against the CPU node on the
    /// bf16-rounded input. Needs a CUDA GPU.
    #[cfg(feature = "cuda")]
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_grouped_bf16_node_matches_the_cpu_node() {
        node_on_the_gpu_matches_the_cpu(Kernels::FAST, FloatDType::BF16, 3e-2);
    }

    /// The same on cuDNN's grouped convolution (`cudnn`, and with `dual` each of its two calls;
    /// the 3-channel layer on the batched GEMMs, or with `bimage` on the direct kernels).
    #[cfg(feature = "cuda")]
    #[test]
    #[ignore = "needs a CUDA GPU and cuDNN"]
    fn cuda_grouped_cudnn_node_matches_the_cpu_node() {
        use crate::train_ops::conv::cuda::cudnn::FORCED_CALL;
        node_on_the_gpu_matches_the_cpu("fast-bf16+cudnn".parse().unwrap(), FloatDType::BF16, 3e-2);
        node_on_the_gpu_matches_the_cpu(Kernels::FAST_BF16_CUDNN, FloatDType::BF16, 3e-2);
        for call in [0, 1] {
            *FORCED_CALL.lock().unwrap() = Some(call);
            node_on_the_gpu_matches_the_cpu("fast-bf16+cudnn+dual".parse().unwrap(), FloatDType::BF16, 3e-2);
        }
        *FORCED_CALL.lock().unwrap() = None;
    }

    #[cfg(feature = "cuda")]
    fn node_on_the_gpu_matches_the_cpu(kernels: Kernels, dtype: FloatDType, tolerance: f32) {
        let device = Default::default();
        let mut failures = Vec::new();
        {
            for (n, groups, c_in, c_out, size) in [(6, 3, 3, 8, 32), (4, 2, 8, 16, 8), (3, 4, 16, 8, 6)] {
                let random = |shape: [usize; 4], std: f64| {
                    crate::model::drawn(|| {
                        Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, std), &device)
                    })
                    .into_data()
                };
                let x = random([n, groups * c_in, size, size], 1.0);
                let weight = random([groups * c_out, c_in, 3, 3], 0.3);
                let dy = random([n, groups * c_out, size, size], 1.0);
                // The CPU node in f32 on bf16-rounded inputs: what the GPU's bf16 path computes.
                let x_cpu =
                    Tensor::<Flex, 4>::from_data(x.clone(), &device).cast(dtype).cast(FloatDType::F32);
                let want = node_results::<Flex>(
                    [&x_cpu.into_data(), &weight, &dy],
                    (groups, Kernels::FAST),
                    FloatDType::F32,
                    false,
                );
                for channels_last in [false, true] {
                    let got = node_results::<burn_cuda::Cuda>(
                        [&x, &weight, &dy],
                        (groups, kernels),
                        dtype,
                        channels_last,
                    );
                    for (name, (got, want)) in
                        ["output", "input grad", "weight grad"].iter().zip(got.iter().zip(&want))
                    {
                        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                        let err = got.iter().zip(want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
                        if !(scale > 0.0 && err <= tolerance * scale) {
                            failures.push(format!(
                                "{dtype:?} {name} ({n}, {groups}, {c_in}→{c_out}, {size}², dy channels-last {channels_last}): off by {err} of {scale}"
                            ));
                        }
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
