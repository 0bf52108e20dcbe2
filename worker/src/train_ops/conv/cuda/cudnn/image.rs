//! The image's bf16 layer on cuDNN: its few channels padded with zeros to [`IMAGE_CHANNELS`],
//! which cuDNN's tensor-core kernels for channels-last bf16 data take, for the shapes the direct
//! kernels ([`super::super::image`]) leave.
//!
//! The zero channels add nothing to the forward, so the layer computes what a bf16 convolution
//! of the unpadded image would; cuDNN's weight gradient drops their columns.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::ops::permute_nhwc_to_nchw;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use super::IMAGE_CHANNELS;
use crate::train_ops::conv::cuda::pad::pad_channels_last;
use crate::train_ops::cube::{KernelTensor, LaunchMany, custom_op_many};

/// `x: [N, C_in, H, W]` (C_in < [`IMAGE_CHANNELS`]) convolved by `weight: [C_out, C_in, 3, 3]`,
/// both bf16, on cuDNN with both padded to [`IMAGE_CHANNELS`] channels: `[N, C_out, H, W]` bf16,
/// channels-last in memory.
pub fn conv3x3<T: KernelTensor<Runtime = CudaRuntime>>(x: T, weight: T) -> T {
    super::conv3x3(padded(x), padded(weight))
}

/// The weight gradient of [`conv3x3`] from its output gradient `dy: [N, C_out, H, W]` (bf16):
/// `[C_out, C_in, 3, 3]` in f32, cuDNN's bf16 result for the padded image, its first C_in
/// channels.
pub fn weight_grad<T: KernelTensor<Runtime = CudaRuntime>>(x: T, dy: T) -> T {
    let c_in = x.shape()[1];
    let padded = super::weight_grad(padded(x), dy);
    let [c_out, _, kh, kw] = padded.shape().dims::<4>();
    copy_channels(padded, Shape::new([c_out, c_in, kh, kw]), DType::F32)
}

/// `t: [N, C, H, W]` with its channels padded with zeros to [`IMAGE_CHANNELS`], in its dtype,
/// channels-last in memory.
fn padded<T: KernelTensor>(t: T) -> T {
    let [n, _, h, w] = t.shape().dims::<4>();
    let (shape, dtype) = (Shape::new([n, IMAGE_CHANNELS, h, w]), t.dtype());
    let out = (shape.clone(), dtype);
    let launch: LaunchMany<T::Runtime, 1, 1> =
        Box::new(move |[input]| [permute_nhwc_to_nchw(pad_channels_last(input, IMAGE_CHANNELS, dtype))]);
    let [output] = custom_op_many::<T, 1, 1>("pad_channels", [t], [out], launch);
    output
}

/// `input` (`[N, C, H, W]`, any strides) as contiguous `shape` `[N, C', H, W]` of `dtype`: its
/// first `min(C, C')` channels, zeros after them.
fn copy_channels<T: KernelTensor>(input: T, shape: Shape, dtype: DType) -> T {
    let out = (shape.clone(), dtype);
    let launch: LaunchMany<T::Runtime, 1, 1> = Box::new(move |[input]| [launch_copy(input, &shape, dtype)]);
    let [output] = custom_op_many::<T, 1, 1>("copy_channels", [input], [out], launch);
    output
}

/// One thread per output element: `output[n, c, h, w]` is `input[n, c, h, w]` cast, or zero
/// where `c` is past the input's channels.
#[cube(launch)]
fn copy_channels_kernel<I: Float, O: Float>(
    input: &Tensor<I>,
    output: &mut Tensor<O>,
    #[define(I, O)] _dtypes: [StorageType; 2],
) {
    let pos = ABSOLUTE_POS;
    if pos >= output.len() {
        terminate!();
    }
    let (channels, height, width) = (output.shape(1), output.shape(2), output.shape(3));
    let (c, h, w) = (pos / (width * height) % channels, pos / width % height, pos % width);
    let n = pos / (width * height * channels);
    let mut value = O::from_int(0);
    if c < input.shape(1) {
        let at = n * input.stride(0) + c * input.stride(1) + h * input.stride(2) + w * input.stride(3);
        value = O::cast_from(input[at]);
    }
    output[pos] = value;
}

fn launch_copy<R: CubeRuntime>(input: CubeTensor<R>, shape: &Shape, dtype: DType) -> CubeTensor<R> {
    let (client, device) = (input.client.clone(), input.device.clone());
    let output = empty_device_contiguous_dtype(client.clone(), device, shape.clone(), dtype);
    let threads = shape.num_elements();
    let cube_dim = CubeDim::new(&client, threads);
    let cube_count = calculate_cube_count_elemwise(&client, threads, cube_dim);
    let dtypes = [input.dtype.into(), dtype.into()];
    copy_channels_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        input.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        dtypes,
    );
    output
}
