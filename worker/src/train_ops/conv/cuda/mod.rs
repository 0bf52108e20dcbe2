//! The convolution's hooks on burn's CUDA backend: the im2col matrix ([`im2col`]), both
//! convolution operands in one kernel ([`weights`]), the bf16 convolutions on tuned tilings
//! ([`tuned`]) or on cuDNN ([`cudnn`]), the weight gradient's bf16 → f32 matmul and its group
//! sum ([`summed_matmul`]), and the image's bf16 layer ([`image`], a model's or fused models'
//! side by side): its direct forward
//! ([`image_forward`]) and weight gradient ([`image_wgrad`]) on its rows staged in shared memory
//! ([`image_rows`]), on tensor cores where its output channels are whole tiles ([`image_mma`],
//! [`image_mma_wgrad`]), or cuDNN with its channels padded ([`pad`]).

pub mod cudnn;
pub mod im2col;
pub mod image;
pub mod image_forward;
pub mod image_mma;
pub mod image_mma_wgrad;
pub mod image_rows;
pub mod image_wgrad;
pub mod pad;
pub mod summed_matmul;
pub mod tuned;
pub mod weights;

use burn::tensor::ops::{FloatTensor, ModuleOps};
use burn::tensor::{DType, FloatDType, Shape, TensorMetadata};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::matmul::{MatmulStrategy, matmul};
use burn_cubecl::tensor::CubeTensor;

use super::{ConvOps, reference};
use crate::train_ops::cube::{KernelTensor, custom_op};
use crate::train_ops::{ConvEngine, ImageCores, unwrap, wrap};

/// The hooks on both CUDA backends, with and without burn's fusion stream.
macro_rules! conv_ops {
    ($backend:ty) => {
        impl ConvOps for $backend {
            fn conv3x3_nobias(
                x: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                engine: ConvEngine,
            ) -> FloatTensor<Self> {
                match engine {
                    ConvEngine::Cudnn(cores) if image::takes_bf16_image(&x, &weight) => {
                        image::conv3x3(x, weight, cores)
                    }
                    ConvEngine::Cudnn(_) if cudnn::takes_layer(&x, &weight, weight.shape()[0]) => {
                        cudnn::conv3x3(x, weight)
                    }
                    ConvEngine::Tuned | ConvEngine::Cudnn(_) if tuned::tunable(&x, &weight) => {
                        tuned::conv3x3(x, weight)
                    }
                    _ => Self::conv2d(x, weight, None, reference::same_3x3()),
                }
            }

            fn conv3x3_either(
                x: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                flipped: FloatTensor<Self>,
                engine: ConvEngine,
            ) -> FloatTensor<Self> {
                match matches!(engine, ConvEngine::Cudnn(_))
                    && cudnn::takes(&x, &weight, &[x.shape()[1], weight.shape()[0]])
                {
                    true => cudnn::grouped_conv3x3_fastest(x, weight, flipped, 1),
                    false => Self::conv3x3_nobias(x, weight, engine),
                }
            }

            fn conv3x3_weight_grad(
                x: FloatTensor<Self>,
                dy: FloatTensor<Self>,
                engine: ConvEngine,
            ) -> FloatTensor<Self> {
                // cuDNN takes the gradient when it takes the convolution: `dy` has the kernel's C_out.
                let ConvEngine::Cudnn(cores) = engine else {
                    return unwrap(reference::weight_grad::<Self>(wrap(x), wrap(dy)));
                };
                if image::takes_bf16_image(&x, &dy) {
                    return image::weight_grad(x, dy, cores);
                }
                if cudnn::takes_layer(&x, &dy, dy.shape()[1]) {
                    return super::library::f32_grad::<Self>(cudnn::weight_grad(x, dy));
                }
                unwrap(reference::weight_grad::<Self>(wrap(x), wrap(dy)))
            }

            fn library_grouped_forward(
                x: FloatTensor<Self>,
                operand: FloatTensor<Self>,
                flipped: FloatTensor<Self>,
                groups: usize,
                cores: ImageCores,
            ) -> FloatTensor<Self> {
                if image::direct_takes_grouped(&x, &operand, operand.shape()[0] / groups, groups) {
                    return image_forward::conv3x3(x, operand, groups, cores);
                }
                match cudnn::takes(&x, &operand, &grouped_channels(&x, &operand, groups)) {
                    true => cudnn::grouped_conv3x3_fastest(x, operand, flipped, groups),
                    false => super::grouped::by_burn_conv::<Self>(x, operand, groups),
                }
            }

            fn library_grouped_input_grad(
                dy: FloatTensor<Self>,
                operand: FloatTensor<Self>,
                flipped: FloatTensor<Self>,
                groups: usize,
            ) -> FloatTensor<Self> {
                match cudnn::takes(&dy, &operand, &grouped_channels(&dy, &operand, groups)) {
                    true => cudnn::grouped_input_grad_fastest(dy, operand, flipped, groups),
                    false => super::grouped::by_burn_conv::<Self>(dy, flipped, groups),
                }
            }

            fn library_grouped_weight_grad(
                x: FloatTensor<Self>,
                dy: FloatTensor<Self>,
                groups: usize,
                cores: ImageCores,
            ) -> FloatTensor<Self> {
                if image::direct_takes_grouped(&x, &dy, dy.shape()[1] / groups, groups) {
                    return image_wgrad::weight_grad(x, dy, groups, cores);
                }
                match cudnn::takes(&x, &dy, &[x.shape()[1] / groups, dy.shape()[1] / groups]) {
                    true => super::library::f32_grad::<Self>(cudnn::grouped_weight_grad(x, dy, groups)),
                    false => super::library::weight_grad_by_im2col::<Self>(x, dy, groups),
                }
            }

            fn conv_operands(
                weight: FloatTensor<Self>,
                groups: usize,
                dtype: FloatDType,
            ) -> [FloatTensor<Self>; 2] {
                weights::conv_operands(weight, groups, dtype.into())
            }

            fn conv_operands_many(
                weights: Vec<FloatTensor<Self>>,
                dtype: FloatDType,
            ) -> Vec<[FloatTensor<Self>; 2]> {
                weights::conv_operands_many(weights, dtype.into())
            }

            fn im2col_3x3(x: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
                im2col::im2col_3x3(x, 1, dtype.into())
            }

            fn im2col_3x3_grouped(
                x: FloatTensor<Self>,
                groups: usize,
                dtype: FloatDType,
            ) -> FloatTensor<Self> {
                im2col::im2col_3x3(x, groups, dtype.into())
            }

            fn matmul_to_f32(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
                if lhs.dtype() == DType::F32 && rhs.dtype() == DType::F32 {
                    // burn's own path: its fusion can fuse what follows into the matmul.
                    return unwrap(wrap::<Self, 3>(lhs).matmul(wrap(rhs)));
                }
                matmul_to_f32(lhs, rhs)
            }

            fn summed_matmul_to_f32(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
                summed_matmul::summed_matmul_to_f32(lhs, rhs, 1)
            }

            fn grouped_summed_matmul_to_f32(
                lhs: FloatTensor<Self>,
                rhs: FloatTensor<Self>,
                sums: usize,
            ) -> FloatTensor<Self> {
                summed_matmul::summed_matmul_to_f32(lhs, rhs, sums)
            }
        }
    };
}

conv_ops!(burn_cuda::Cuda);
conv_ops!(crate::train_ops::cube::CudaDirect);

/// Per-model channel counts of `groups` convolutions side by side: `a: [N, G·C, H, W]` (the
/// input, or the output gradient) with `operand: [G·C_out, C_in, 3, 3]`.
fn grouped_channels<T: KernelTensor>(a: &T, operand: &T, groups: usize) -> [usize; 3] {
    let (a, operand) = (a.shape(), operand.shape());
    [a[1] / groups, operand[0] / groups, operand[1]]
}

fn launch_matmul_to_f32<R: CubeRuntime>(
    [lhs, rhs]: [CubeTensor<R>; 2],
    _: &Shape,
    dtype: DType,
) -> CubeTensor<R> {
    matmul(lhs, rhs, None, MatmulStrategy::default(), dtype)
        .unwrap_or_else(|err| panic!("no matmul kernel for these operands: {err:?}"))
}

/// [`ConvOps::matmul_to_f32`] on burn's CubeCL backends: `[B, M, K] ×
/// [B, K, N] → [B, M, N]` in f32 whatever the operands' dtype (burn's autotuned matmul kernels,
/// f32 accumulation).
pub fn matmul_to_f32<T: KernelTensor>(lhs: T, rhs: T) -> T {
    let [batch, m, _] = lhs.shape().dims::<3>();
    let n = rhs.shape().dims::<3>()[2];
    let shape = Shape::new([batch, m, n]);
    custom_op::<T, 2>("matmul_to_f32", [lhs, rhs], shape, DType::F32, launch_matmul_to_f32)
}
