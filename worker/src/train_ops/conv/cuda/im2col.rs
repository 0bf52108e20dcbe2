//! The im2col matrix of the 3×3 weight gradient as one kernel.
//!
//! Through burn's public ops the matrix took a padded copy, nine slices (copies wherever the
//! slice start is not 512-byte aligned) and a stacking `SliceAssign` per layer: 8.7 of 38 ms per
//! profiled training step on an H100. This kernel reads the channels-last input once per tap,
//! writes zeros for the padding, and casts to the GEMM's operand type on the way (bf16 operands
//! cost no extra pass). Each thread moves vectors of up to 16 bytes of neighbouring channels
//! ([`channel_lanes`]), all nine taps of one: 1.2 ms per `fast-bf16` step on an H100 with a
//! vector per thread (integer-division bound: ~1.7 TB/s on the 604 MB matrices of the 32×32
//! layers), 2.3 ms with the first, scalar version.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use crate::train_ops::cube::{KernelTensor, LaunchMany, channel_lanes, channels_last, custom_op_many};

/// One thread per (output row, input vector): the nine taps `output[row, (3·kh+kw)·C +
/// c..c+N] = input[n, y+kh−1, x+kw−1, c..c+N]` of the row's pixel `(n, y, x)` in the
/// channels-last `input` `[N, H, W, C]`, zero outside the image. Neighbouring threads take
/// neighbouring vectors, so reads and writes are coalesced; the pixel's coordinates (integer
/// divisions, which bound a one-vector-per-thread version) are worked out once for nine writes.
///
/// With `groups` G > 1 the channels are G groups of C/G side by side (the channels of G fused
/// models) and each group gets its own matrix: `output` is `[G·N·H·W, 9·C/G]`, group `g`'s rows
/// from `g·N·H·W` on.
#[cube(launch)]
fn im2col_3x3_kernel<I: Float, O: Float, N: Size>(
    input: &Tensor<Vector<I, N>>,
    output: &mut Tensor<Vector<O, N>>,
    groups: usize,
    #[define(I, O)] _dtypes: [StorageType; 2],
) {
    let vectors = input.shape(3) / input.vector_size();
    let rows = input.shape(0) * input.shape(1) * input.shape(2);
    let pos = ABSOLUTE_POS;
    if pos >= rows * vectors {
        terminate!();
    }
    let height = input.shape(1);
    let width = input.shape(2);
    let group_vectors = vectors / groups;
    let row = pos / vectors;
    let channel = pos % vectors;
    let (x, y) = (row % width, (row / width) % height);
    let image_first_row = row - (y * width + x);
    let group = channel / group_vectors;
    let out_row = (group * rows + row) * 9 * group_vectors + channel % group_vectors;
    let zero = Vector::<O, N>::new(O::from_int(0));
    #[unroll]
    for tap in 0..9usize {
        // Padded coordinates (1..=height is inside the image) keep the arithmetic unsigned.
        let y_padded = y + tap / 3;
        let x_padded = x + tap % 3;
        let mut value = zero;
        if y_padded >= 1 && y_padded <= height && x_padded >= 1 && x_padded <= width {
            let pixel = image_first_row + (y_padded - 1) * width + x_padded - 1;
            value = Vector::cast_from(input[pixel * vectors + channel]);
        }
        output[out_row + tap * group_vectors] = value;
    }
}

/// `x: [N, C, H, W]` (any strides; copied channels-last unless it is) → `[G·N·H·W, 9·C/G]` of
/// `dtype` for `groups` G.
fn launch<R: CubeRuntime>(x: CubeTensor<R>, shape: &Shape, dtype: DType, groups: usize) -> CubeTensor<R> {
    // Contiguous: `empty_device_dtype` may pitch the rows (27 f32 columns for the image), and
    // the kernel writes by flat vector index.
    let output = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), shape.clone(), dtype);
    let channels = x.meta.shape()[1];
    let lanes = channel_lanes(channels / groups, x.dtype.size().max(dtype.size()));
    let threads = shape[0] / groups * channels / lanes;
    let cube_dim = CubeDim::new(&x.client, threads);
    let cube_count = calculate_cube_count_elemwise(&x.client, threads, cube_dim);
    let dtypes = [x.dtype.into(), dtype.into()];
    im2col_3x3_kernel::launch::<R>(
        &x.client.clone(),
        cube_count,
        cube_dim,
        lanes,
        channels_last(x).into_tensor_arg(),
        output.clone().into_tensor_arg(),
        groups,
        dtypes,
    );
    output
}

/// [`crate::train_ops::ConvOps::im2col_3x3_grouped`] on burn's CubeCL backends (CUDA
/// here); one group is [`crate::train_ops::ConvOps::im2col_3x3`].
pub fn im2col_3x3<T: KernelTensor>(x: T, groups: usize, dtype: DType) -> T {
    let [n, c, h, w] = x.shape().dims::<4>();
    let shape = Shape::new([groups * n * h * w, 9 * c / groups]);
    let out = (shape.clone(), dtype);
    let launch: LaunchMany<T::Runtime, 1, 1> = Box::new(move |[x]| [launch(x, &shape, dtype, groups)]);
    let [output] = custom_op_many::<T, 1, 1>("im2col_3x3", [x], [out], launch);
    output
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::{Distribution, FloatDType};

    use crate::train_ops::conv::grouped::im2col_by_ops;
    use crate::train_ops::conv::reference::im2col_3x3_by_slices;
    use crate::train_ops::{ConvOps, unwrap, wrap};

    /// The CUDA im2col kernel against the sliced formulation on the same GPU, for
    /// channels-first inputs (copied channels-last first; 1 and 2 channels per thread),
    /// channels-last views (as burn's conv outputs are laid out), bf16 inputs and outputs. Needs a CUDA
    /// GPU: `cargo test -p worker -- --ignored cuda`.
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_im2col_kernel_matches_the_sliced_im2col() {
        type B = burn_cuda::Cuda;
        let device = Default::default();
        for (shape, channels_last) in
            [([2, 3, 5, 7], false), ([2, 6, 4, 5], false), ([4, 16, 8, 6], true), ([3, 64, 32, 32], true)]
        {
            let [n, c, h, w] = shape;
            let x = if channels_last {
                crate::model::drawn(|| {
                    Tensor::<B, 4>::random([n, h, w, c], Distribution::Normal(0.0, 1.0), &device)
                })
                .permute([0, 3, 1, 2])
            } else {
                crate::model::drawn(|| Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device))
            };
            // f32 → f32, f32 → bf16, and bf16 → bf16 (the model's activations: 8 channels per
            // vector).
            let (f32, bf16) = (FloatDType::F32, FloatDType::BF16);
            for (input_dtype, dtype) in [(f32, f32), (f32, bf16), (bf16, bf16)] {
                let x = x.clone().cast(input_dtype);
                let kernel = wrap::<B, 2>(B::im2col_3x3(unwrap(x.clone()), dtype));
                let sliced = wrap::<B, 2>(im2col_3x3_by_slices::<B>(unwrap(x.clone()), dtype));
                assert_eq!(kernel.dims(), [n * h * w, 9 * c]);
                assert_eq!(kernel.dtype(), sliced.dtype());
                let diff: f32 =
                    (kernel.cast(FloatDType::F32) - sliced.cast(FloatDType::F32)).abs().max().into_scalar();
                assert_eq!(diff, 0.0, "{shape:?} channels_last={channels_last} {input_dtype:?} → {dtype:?}");
                // The channels as groups of fused models: one matrix per group.
                for groups in [2, 4].into_iter().filter(|g| c % g == 0) {
                    let kernel = wrap::<B, 2>(B::im2col_3x3_grouped(unwrap(x.clone()), groups, dtype));
                    let regrouped = wrap::<B, 2>(im2col_by_ops::<B>(unwrap(x.clone()), groups, dtype));
                    assert_eq!(kernel.dims(), [groups * n * h * w, 9 * c / groups]);
                    let diff: f32 = (kernel.cast(FloatDType::F32) - regrouped.cast(FloatDType::F32))
                        .abs()
                        .max()
                        .into_scalar();
                    assert_eq!(diff, 0.0, "{shape:?} in {groups} groups, {input_dtype:?} → {dtype:?}");
                }
            }
        }
    }
}
