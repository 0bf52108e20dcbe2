//! The im2col matrix of the 3×3 weight gradient as one kernel.
//!
//! Through burn's public ops the matrix took a padded copy, nine slices (copies wherever the
//! slice start is not 512-byte aligned) and a stacking `SliceAssign` per layer: 8.7 of 38 ms per
//! profiled training step on an H100. This kernel reads the input once per tap straight from its
//! (any-strided) layout, writes zeros for the padding, and casts to the GEMM's operand type on
//! the way (bf16 operands cost no extra pass): 2.4 ms per step.

use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement};
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use super::{FusionTensor, custom_op};

/// One thread per (row, channel): the row's pixel `(n, y, x)` is decoded once, then the nine taps
/// `input[n, c, y+kh−1, x+kw−1]` (zero outside the image) go to `output[row, (3·kh+kw)·C + c]`.
/// Neighbouring threads take neighbouring channels, so channels-last inputs read and every tap
/// writes coalesced.
#[cube(launch)]
fn im2col_3x3_kernel<I: Float, O: Float>(
    input: &Tensor<I>,
    output: &mut Tensor<O>,
    #[define(I, O)] _dtypes: [StorageType; 2],
) {
    let channels = input.shape(1);
    let height = input.shape(2);
    let width = input.shape(3);
    let rows = input.shape(0) * height * width;
    let pos = ABSOLUTE_POS;
    if pos >= rows * channels {
        terminate!();
    }
    let c = pos % channels;
    let row = pos / channels;
    let x = row % width;
    let image_row = row / width;
    let y = image_row % height;
    let n = image_row / height;
    let input_base = n * input.stride(0) + c * input.stride(1);
    let output_base = row * output.stride(0) + c * output.stride(1);
    let tap_step = channels * output.stride(1);
    #[unroll]
    for tap in 0..9usize {
        // Padded coordinates (1..=height is inside the image) keep the arithmetic unsigned.
        let y_padded = y + tap / 3;
        let x_padded = x + tap % 3;
        let mut value = O::from_int(0);
        if y_padded >= 1 && y_padded <= height && x_padded >= 1 && x_padded <= width {
            let offset = input_base + (y_padded - 1) * input.stride(2) + (x_padded - 1) * input.stride(3);
            value = O::cast_from(input[offset]);
        }
        output[output_base + tap * tap_step] = value;
    }
}

/// `x: [N, C, H, W]` (any strides) → `[N·H·W, 9·C]` of `dtype`.
fn launch<R: CubeRuntime>([x]: [CubeTensor<R>; 1], shape: &Shape, dtype: DType) -> CubeTensor<R> {
    let output = empty_device_dtype(x.client.clone(), x.device.clone(), shape.clone(), dtype);
    let threads = x.meta.num_elements();
    let cube_dim = CubeDim::new(&x.client, threads);
    let cube_count = calculate_cube_count_elemwise(&x.client, threads, cube_dim);
    let dtypes = [x.dtype.into(), dtype.into()];
    im2col_3x3_kernel::launch::<R>(
        &x.client.clone(),
        cube_count,
        cube_dim,
        x.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        dtypes,
    );
    output
}

/// [`crate::train_ops::TrainOps::im2col_3x3`] on burn's fused CubeCL backends (CUDA here).
pub fn im2col_3x3<R, F, I, BT>(x: FusionTensor<R>, dtype: DType) -> FusionTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let [n, c, h, w] = x.shape.dims::<4>();
    custom_op::<R, F, I, BT, 1>("im2col_3x3", [x], Shape::new([n * h * w, 9 * c]), dtype, launch)
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::{Distribution, FloatDType};

    use crate::train_ops::conv::im2col_3x3_by_slices;
    use crate::train_ops::{TrainOps, unwrap, wrap};

    /// The CUDA im2col kernel against the sliced formulation on the same GPU, for a
    /// channels-first input, a channels-last view (as burn's conv outputs are laid out), and a
    /// bf16 output. Needs a CUDA GPU: `cargo test -p worker -- --ignored cuda`.
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_im2col_kernel_matches_the_sliced_im2col() {
        type B = burn_cuda::Cuda;
        let device = Default::default();
        for (shape, channels_last) in [([2, 3, 5, 7], false), ([4, 16, 8, 6], true), ([3, 64, 32, 32], true)]
        {
            let [n, c, h, w] = shape;
            let x = if channels_last {
                Tensor::<B, 4>::random([n, h, w, c], Distribution::Normal(0.0, 1.0), &device)
                    .permute([0, 3, 1, 2])
            } else {
                Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device)
            };
            for dtype in [FloatDType::F32, FloatDType::BF16] {
                let kernel = wrap::<B, 2>(B::im2col_3x3(unwrap(x.clone()), dtype));
                let sliced = wrap::<B, 2>(im2col_3x3_by_slices::<B>(unwrap(x.clone()), dtype));
                assert_eq!(kernel.dims(), [n * h * w, 9 * c]);
                assert_eq!(kernel.dtype(), sliced.dtype());
                let diff: f32 =
                    (kernel.cast(FloatDType::F32) - sliced.cast(FloatDType::F32)).abs().max().into_scalar();
                assert_eq!(diff, 0.0, "{shape:?} channels_last={channels_last} {dtype:?}");
            }
        }
    }
}
