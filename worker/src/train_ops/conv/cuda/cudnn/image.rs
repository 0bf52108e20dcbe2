//! The image's bf16 layer (kernel part `bimage`): on the direct kernels
//! ([`super::super::image_forward`], [`super::super::image_wgrad`]) where they take the layer (up
//! to 64 output channels, images up to 32 pixels wide), else on cuDNN, its few channels padded
//! with zeros to [`IMAGE_CHANNELS`], which cuDNN's tensor-core kernels for channels-last bf16
//! data take.
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

/// Whether cuDNN takes the single model's bf16 image layer: `x: [N, C_in, H, W]` with fewer
/// than [`IMAGE_CHANNELS`] channels and `b` (the weight, or the output gradient) both bf16.
pub fn takes_bf16_image<T: KernelTensor>(x: &T, b: &T) -> bool {
    x.dtype() == DType::BF16 && b.dtype() == DType::BF16 && x.shape()[1] < IMAGE_CHANNELS
}

/// `x: [N, C_in, H, W]` (C_in < [`IMAGE_CHANNELS`]) convolved by `weight: [C_out, C_in, 3, 3]`,
/// both bf16, on the direct kernel where it takes the layer, else on cuDNN: `[N, C_out, H, W]`
/// bf16, channels-last in memory.
pub fn conv3x3<T: KernelTensor<Runtime = CudaRuntime>>(x: T, weight: T) -> T {
    let [c_out, c_in, _, _] = weight.shape().dims::<4>();
    if super::super::image_forward::takes(c_in, c_out, x.shape()[3]) {
        return super::super::image_forward::conv3x3(x, weight);
    }
    super::conv3x3(padded(x), padded(weight))
}

/// The weight gradient of [`conv3x3`] from its output gradient `dy: [N, C_out, H, W]` (bf16):
/// `[C_out, C_in, 3, 3]` in f32 (summed in f32 by [`super::super::image_wgrad`], or cuDNN's
/// bf16 result of the padded image, its first C_in channels).
pub fn weight_grad<T: KernelTensor<Runtime = CudaRuntime>>(x: T, dy: T) -> T {
    let c_in = x.shape()[1];
    if super::super::image_wgrad::takes(c_in, dy.shape()[1], x.shape()[3]) {
        return super::super::image_wgrad::weight_grad(x, dy);
    }
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

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::{Distribution, FloatDType};

    use crate::train_ops::{to_dtype, unwrap, wrap};

    /// The image's bf16 layer (on [`super::super::image_forward`] and
    /// [`super::super::image_wgrad`], or on cuDNN for 128 output channels) against burn's
    /// convolution of the same bf16 operands in f32: the model's first layer on a small batch, an
    /// odd image shape, one channel (its image channels-last in memory), and twice the width:
    /// `cargo test -p worker -- --ignored cuda`.
    #[test]
    #[ignore = "needs a CUDA GPU and libcudnn"]
    fn cuda_bf16_image_layer_matches_burns_convolution() {
        type G = burn_cuda::Cuda;
        use crate::train_ops::conv::cuda::{image_forward, image_wgrad};
        for [n, c_in, h, w, c_out] in
            [[16, 3, 32, 32, 64], [5, 3, 9, 6, 64], [3, 1, 7, 5, 8], [4, 3, 8, 8, 128]]
        {
            let device = Default::default();
            let bf16 = |t: Tensor<G, 4>| to_dtype(t, FloatDType::BF16);
            let x = bf16(crate::model::drawn(|| match c_in {
                1 => Tensor::<G, 4>::random([n, h, w, c_in], Distribution::Uniform(0.0, 1.0), &device)
                    .permute([0, 3, 1, 2]),
                _ => Tensor::<G, 4>::random([n, c_in, h, w], Distribution::Uniform(0.0, 1.0), &device),
            }));
            let weight = bf16(crate::model::drawn(|| {
                Tensor::<G, 4>::random([c_out, c_in, 3, 3], Distribution::Normal(0.0, 0.3), &device)
            }));
            let dy = bf16(crate::model::drawn(|| {
                Tensor::<G, 4>::random([n, c_out, h, w], Distribution::Normal(0.0, 1.0), &device)
            }));
            let f32 = |t: &Tensor<G, 4>| to_dtype(t.clone(), FloatDType::F32);
            let options = burn::tensor::ops::ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
            let expected = burn::tensor::module::conv2d(f32(&x), f32(&weight), None, options.clone());
            let out = wrap::<G, 4>(super::conv3x3(unwrap(x.clone()), unwrap(weight.clone())));
            assert_eq!(out.dims(), [n, c_out, h, w]);
            assert_eq!(out.dtype(), burn::tensor::DType::BF16);
            let scale = expected.clone().abs().max().into_scalar();
            let err = (f32(&out) - expected).abs().max().into_scalar();
            // The direct kernel rounds its f32 sums to bf16 once.
            let tolerance = if image_forward::takes(c_in, c_out, w) { 4e-3 } else { 2e-2 };
            assert!(
                err <= tolerance * scale,
                "{n}×{c_in}×{h}×{w}→{c_out} forward: {err} at a scale of {scale}"
            );

            // dW[o, i, kh, kw] = Σ dY[n, o, y, x] · Xpad[n, i, y + kh, x + kw], in f32 by burn's ops.
            let expected = crate::train_ops::conv::reference::weight_grad::<G>(f32(&x), f32(&dy));
            let dw = wrap::<G, 4>(super::weight_grad(unwrap(x), unwrap(dy)));
            assert_eq!(dw.dims(), [c_out, c_in, 3, 3]);
            assert_eq!(dw.dtype(), burn::tensor::DType::F32);
            let scale = expected.clone().abs().max().into_scalar();
            let err = (dw - expected).abs().max().into_scalar();
            // The kernel sums in f32; cuDNN's result is bf16.
            let tolerance = if image_wgrad::takes(c_in, c_out, w) { 1e-3 } else { 2e-2 };
            assert!(
                err <= tolerance * scale,
                "{n}×{c_in}×{h}×{w}→{c_out} weight gradient: {err} at a scale of {scale}"
            );
        }
    }
}
