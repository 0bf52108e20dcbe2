//! cuDNN's convolutions for the model's bf16 3×3 layers and its image layer, f32 or bf16 with
//! its channels padded ([`image`]) (kernel part `cudnn`): the forward (and so the single model's
//! flipped-kernel input gradient), the input gradient and the weight gradient, for one model or
//! for fused models side by side (cuDNN's group count), as custom operations in burn's fusion
//! stream ([`ffi`] makes the calls).
//!
//! cuDNN runs on CubeCL's own stream, from CubeCL's server thread: an operation hands the server
//! a task with its buffers (`ComputeClient::with_resources`, `vendor/cubecl-runtime`), which
//! runs in order with the kernels queued before and after it and learns the stream they go to
//! (`vendor/cubecl-cuda`); the task queues the cuDNN call there. Nothing waits on the host.
//!
//! The library is loaded at run time (`libcudnn.so.9`, e.g. from PyTorch's or JAX's wheels,
//! found through `LD_LIBRARY_PATH`); without it a runner asking for the part does not open
//! ([`library_version`]).

mod call;
mod choices;
mod ffi;
pub mod image;
mod timing;

use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::ops::permute_nhwc_to_nchw;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::CudaRuntime;

use crate::train_ops::cube::{KernelTensor, LaunchMany, channels_last, custom_op_many, with_stream};
use call::{Conv3x3, Either, Pass, Precision};
#[cfg(test)]
pub use ffi::FORCED_CALL;
pub use ffi::library_version;

pub use crate::train_ops::conv::IMAGE_CHANNELS;

/// Whether cuDNN takes a pass over the operands `a` and `b` whose per-model channel counts are
/// `channels`: bf16 operands and every count a multiple of 8 (its tensor-core kernels for
/// channels-last data); anything else runs on the other kernels.
pub fn takes<T: KernelTensor>(a: &T, b: &T, channels: &[usize]) -> bool {
    a.dtype() == DType::BF16 && b.dtype() == DType::BF16 && channels.iter().all(|c| c.is_multiple_of(8))
}

/// Whether cuDNN takes the single model's f32 image layer ([`is_image_layer`] in f32).
pub fn takes_image<T: KernelTensor>(x: &T, b: &T) -> bool {
    is_image_layer(x, b, DType::F32)
}

/// Whether `x: [N, C_in, H, W]` is the image's layer in `dtype`: fewer than [`IMAGE_CHANNELS`]
/// channels, and `x` and `b` (the weight, or the output gradient) both of `dtype`.
pub fn is_image_layer<T: KernelTensor>(x: &T, b: &T, dtype: DType) -> bool {
    x.dtype() == dtype && b.dtype() == dtype && x.shape()[1] < IMAGE_CHANNELS
}

/// Whether cuDNN takes the single model's layer of input `x` whose other operand `b` (the
/// weight, or the output gradient) has `c_out` output channels: [`takes`] or [`takes_image`].
pub fn takes_layer<T: KernelTensor>(x: &T, b: &T, c_out: usize) -> bool {
    takes(x, b, &[x.shape()[1], c_out]) || takes_image(x, b)
}

/// `x: [N, C_in, H, W]` convolved (3×3, stride 1, padding 1, no bias) by `weight: [C_out, C_in,
/// 3, 3]`, both bf16 or both f32 (as [`takes`] or [`takes_image`] asks): `[N, C_out, H, W]` in
/// their dtype, channels-last in memory.
pub fn conv3x3<T: KernelTensor<Runtime = CudaRuntime>>(x: T, weight: T) -> T {
    grouped_conv3x3(x, weight, 1)
}

/// The weight gradient of [`conv3x3`] of `x: [N, C_in, H, W]` whose output gradient is `dy:
/// [N, C_out, H, W]` (both bf16 or both f32): `[C_out, C_in, 3, 3]` in their dtype (f32
/// accumulation in cuDNN), channels-last in memory.
pub fn weight_grad<T: KernelTensor<Runtime = CudaRuntime>>(x: T, dy: T) -> T {
    grouped_weight_grad(x, dy, 1)
}

/// `groups` G convolutions side by side, one launch (cuDNN's group count): `x: [N, G·C_in, H,
/// W]` by `weight: [G·C_out, C_in, 3, 3]` → `[N, G·C_out, H, W]`, bf16, channels-last in memory.
pub fn grouped_conv3x3<T: KernelTensor<Runtime = CudaRuntime>>(x: T, weight: T, groups: usize) -> T {
    let [n, _, h, w] = x.shape().dims::<4>();
    let shape = Shape::new([n, weight.shape()[0], h, w]);
    op("conv3x3_cudnn", [x, weight], shape, move |i| launch(i, Pass::Forward, groups))
}

/// The weight gradient of [`grouped_conv3x3`] of `x: [N, G·C_in, H, W]` whose output gradient
/// is `dy: [N, G·C_out, H, W]`: `[G·C_out, C_in, 3, 3]`, bf16 (f32 accumulation in cuDNN).
pub fn grouped_weight_grad<T: KernelTensor<Runtime = CudaRuntime>>(x: T, dy: T, groups: usize) -> T {
    let shape = Shape::new([dy.shape()[1], x.shape()[1] / groups, 3, 3]);
    op("conv3x3_cudnn_wgrad", [x, dy], shape, move |i| launch(i, Pass::FilterGrad, groups))
}

/// [`grouped_conv3x3`] as whichever call cuDNN times faster for the shape: the forward by
/// `weight`, or the input-gradient pass by `flipped`, each model's kernel transposed and flipped
/// (`[G·C_in, C_out, 3, 3]`, `ConvOps::conv_operands`). A grouped forward of 256 channels a
/// model took cuDNN 0.98 ms at batch 64 × 16 models on an H100, its input-gradient pass 0.31.
pub fn grouped_conv3x3_fastest<T: KernelTensor<Runtime = CudaRuntime>>(
    x: T,
    weight: T,
    flipped: T,
    groups: usize,
) -> T {
    let [n, _, h, w] = x.shape().dims::<4>();
    let shape = Shape::new([n, weight.shape()[0], h, w]);
    op("conv3x3_cudnn_fastest", [x, weight, flipped], shape, move |i| {
        launch_fastest(i, Pass::Forward, groups)
    })
}

/// The input gradient of [`grouped_conv3x3`] from the output gradient `dy: [N, G·C_out, H, W]`
/// (`[N, G·C_in, H, W]`, bf16) as whichever call cuDNN times faster: the input-gradient pass by
/// the forward's `weight`, or the forward by `flipped` (as [`grouped_conv3x3_fastest`] has them).
pub fn grouped_input_grad_fastest<T: KernelTensor<Runtime = CudaRuntime>>(
    dy: T,
    weight: T,
    flipped: T,
    groups: usize,
) -> T {
    let [n, _, h, w] = dy.shape().dims::<4>();
    let shape = Shape::new([n, groups * weight.shape()[1], h, w]);
    op("conv3x3_cudnn_dgrad_fastest", [dy, weight, flipped], shape, move |i| {
        launch_fastest(i, Pass::DataGrad, groups)
    })
}

/// A custom operation of `inputs` whose one output, of the logical `shape` in their dtype,
/// `launch` writes.
fn op<T: KernelTensor<Runtime = CudaRuntime>, const N: usize>(
    name: &'static str,
    inputs: [T; N],
    shape: Shape,
    launch: impl Fn([CubeTensor<CudaRuntime>; N]) -> CubeTensor<CudaRuntime> + Send + Sync + 'static,
) -> T {
    let dtype = inputs[0].dtype();
    let launch: LaunchMany<CudaRuntime, N, 1> = Box::new(move |inputs| [launch(inputs)]);
    let [out] = custom_op_many::<T, N, 1>(name, inputs, [(shape, dtype)], launch);
    out
}

fn launch([a, b]: [CubeTensor<CudaRuntime>; 2], pass: Pass, groups: usize) -> CubeTensor<CudaRuntime> {
    let (conv, out) = geometry(&a, &b, pass, groups);
    let (a, b) = (channels_last(a), channels_last(b));
    let out = empty_device_contiguous_dtype(a.client.clone(), a.device.clone(), Shape::new(out), a.dtype);
    call(pass, conv, [&a, &b, &out]);
    permute_nhwc_to_nchw(out)
}

/// `pass` on `a` by `b` or the other pass on `a` by `flipped`, whichever cuDNN timed faster
/// for the shape: each computes the other's convolution from the flipped kernels.
fn launch_fastest(
    [a, b, flipped]: [CubeTensor<CudaRuntime>; 3],
    pass: Pass,
    groups: usize,
) -> CubeTensor<CudaRuntime> {
    let other = match pass {
        Pass::Forward => Pass::DataGrad,
        Pass::DataGrad => Pass::Forward,
        Pass::FilterGrad => unreachable!("the weight gradient has no flipped form here"),
    };
    let (conv, out) = geometry(&a, &b, pass, groups);
    let (other_conv, other_out) = geometry(&a, &flipped, other, groups);
    assert_eq!(out, other_out, "cuDNN {pass:?}: the flipped kernels do not match");
    let (a, b, flipped) = (channels_last(a), channels_last(b), channels_last(flipped));
    let out = empty_device_contiguous_dtype(a.client.clone(), a.device.clone(), Shape::new(out), a.dtype);
    let conv = Either { first: (pass, conv), second: (other, other_conv) };
    queue(conv.first.1.precision, [&a, &b, &flipped, &out], move |stream, p, device| {
        ffi::run_fastest(conv, [[p[0], p[1], p[3]], [p[0], p[2], p[3]]], stream, device)
    });
    permute_nhwc_to_nchw(out)
}

/// The cuDNN call of `pass` on `a` by `b` (activations `[N, C, H, W]`, filters `[G·C_out, C_in,
/// 3, 3]`; [`Pass`] orders them) and the shape of its output as cuDNN writes it, channels-last
/// (the filter's is cuDNN's NHWC filter layout, `[G·C_out, 3, 3, C_in]`).
fn geometry(
    a: &CubeTensor<CudaRuntime>,
    b: &CubeTensor<CudaRuntime>,
    pass: Pass,
    groups: usize,
) -> (Conv3x3, [usize; 4]) {
    let [n, a_channels, h, w] = a.meta.shape().dims::<4>();
    let b_dims = b.meta.shape().dims::<4>();
    let precision = precision(a.dtype).expect("`takes` and `takes_image` admit bf16 and f32 only");
    let conv = |c_in, c_out| Conv3x3 { n, c_in, c_out, h, w, groups, precision };
    match pass {
        Pass::Forward => (conv(a_channels / groups, b_dims[0] / groups), [n, h, w, b_dims[0]]),
        Pass::DataGrad => (conv(b_dims[1], a_channels / groups), [n, h, w, groups * b_dims[1]]),
        Pass::FilterGrad => {
            let conv = conv(a_channels / groups, b_dims[1] / groups);
            (conv, [b_dims[1], 3, 3, conv.c_in])
        }
    }
}

/// cuDNN's element type for tensors of `dtype`, where the calls here take it.
fn precision(dtype: DType) -> Option<Precision> {
    match dtype {
        DType::BF16 => Some(Precision::Bf16),
        DType::F32 => Some(Precision::F32),
        _ => None,
    }
}

/// Queues `pass` on the buffers of `tensors` (contiguous, of `conv`'s precision, in [`Pass`]'s
/// order) as a task of CubeCL's server, which runs it in order with the kernels queued before
/// and after it, on the stream it issues them to. A failing call is logged, and its output left
/// unwritten: the loss turns non-finite and the job fails as such.
fn call(pass: Pass, conv: Conv3x3, tensors: [&CubeTensor<CudaRuntime>; 3]) {
    queue(conv.precision, tensors, move |stream, p, device| {
        ffi::run(pass, conv, [p[0], p[1], p[2]], stream, device)
    });
}

/// Queues `run` on the buffers of `tensors` (contiguous, of `precision`) as [`call`] does.
fn queue<const N: usize>(
    precision: Precision,
    tensors: [&CubeTensor<CudaRuntime>; N],
    run: impl FnOnce(cudarc::driver::sys::CUstream, &[u64], usize) -> Result<(), String> + Send + 'static,
) {
    for t in tensors {
        assert!(
            t.is_contiguous() && self::precision(t.dtype) == Some(precision),
            "cuDNN: operands must be contiguous {precision:?}"
        );
    }
    let device = tensors[0].device.index;
    with_stream(&tensors, move |queued| {
        let ran = queued.and_then(|(stream, pointers)| run(stream, &pointers, device));
        if let Err(err) = ran {
            tracing::error!(%err, "cuDNN convolution failed");
        }
    });
}
