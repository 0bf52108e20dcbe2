//! A tensor's channels padded with zeros into a new channels-last tensor: the image's few
//! channels as cuDNN's tensor-core kernels read them ([`super::cudnn::image`]), for the shapes
//! the direct kernels leave to it.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::train_ops::cube::channels_last_output;

/// One thread per vector of an output pixel's channels (channels-last, contiguous `[N, H, W,
/// C']`): each of its lanes is `input[n, c, h, w]` cast, or zero where `c` is past the input's
/// channels. One 16-byte store a pixel: a thread an element (with its stores of two bytes) took
/// 34 µs for a batch of 512 images on an H100.
#[cube(launch)]
fn pad_channels_kernel<I: Float, O: Float, N: Size>(
    input: &Tensor<I>,
    output: &mut Tensor<Vector<O, N>>,
    #[define(I, O)] _dtypes: [StorageType; 2],
) {
    let pos = ABSOLUTE_POS;
    if pos >= output.len() {
        terminate!();
    }
    let mut out = Vector::<O, N>::empty();
    let lanes = out.size();
    let pixel_vectors = output.shape(3) / lanes;
    let pixel = pos / pixel_vectors;
    let first = (pos % pixel_vectors) * lanes;
    let (height, width) = (input.shape(2), input.shape(3));
    let (n, h, w) = (pixel / (width * height), pixel / width % height, pixel % width);
    let base = n * input.stride(0) + h * input.stride(2) + w * input.stride(3);
    #[unroll]
    for lane in 0..lanes {
        let c = first + lane;
        let mut value = O::from_int(0);
        if c < input.shape(1) {
            value = O::cast_from(input[base + c * input.stride(1)]);
        }
        out[lane] = value;
    }
    output[pos] = out;
}

/// `input: [N, C, H, W]` (any strides) as a new contiguous `[N, H, W, channels]` of `dtype`,
/// zeros past its `C` channels ([`pad_channels_kernel`]).
pub fn pad_channels_last<R: CubeRuntime>(
    input: CubeTensor<R>,
    channels: usize,
    dtype: DType,
) -> CubeTensor<R> {
    let [n, _, h, w] = input.meta.shape().dims::<4>();
    let shape = Shape::new([n, channels, h, w]);
    let (output, lanes, cube_count, cube_dim) = channels_last_output(&input, &shape, dtype);
    let dtypes = [input.dtype.into(), dtype.into()];
    pad_channels_kernel::launch::<R>(
        &input.client.clone(),
        cube_count,
        cube_dim,
        lanes,
        input.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        dtypes,
    );
    output
}
