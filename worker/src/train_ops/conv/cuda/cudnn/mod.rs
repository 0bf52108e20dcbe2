//! cuDNN's convolutions for the model's bf16 3×3 layers and its image layer, f32 or bf16
//! ([`image`]) (kernel part `cudnn`): the forward (and so the single model's flipped-kernel input gradient), the input
//! gradient and the weight gradient, for one model or for fused models side by side (cuDNN's
//! group count), as custom operations in burn's fusion stream ([`ffi`] makes the calls).
//!
//! cuDNN runs on CubeCL's own stream, from CubeCL's server thread: an operation hands the server
//! a task with its buffers (`ComputeClient::with_resources`, `vendor/cubecl-runtime`), which
//! runs in order with the kernels queued before and after it and learns the stream they go to
//! (`vendor/cubecl-cuda`); the task queues the cuDNN call there. Nothing waits on the host.
//!
//! The library is loaded at run time (`libcudnn.so.9`, e.g. from PyTorch's or JAX's wheels,
//! found through `LD_LIBRARY_PATH`); without it a runner asking for the part does not open
//! ([`library_version`]).

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
pub use ffi::library_version;
use ffi::{Conv3x3, Pass, Precision};

/// Input channels below which a convolution is the image's layer, which cuDNN takes in sets
/// without `xgemm` (in place of that part's im2col matrix and two f32 matmuls, 346 µs a step on
/// an H100 under Nsight Compute): in f32 ([`takes_image`]), or in bf16 with its channels padded
/// to this many ([`image`]).
pub const IMAGE_CHANNELS: usize = 8;

/// Whether cuDNN takes a pass over the operands `a` and `b` whose per-model channel counts are
/// `channels`: bf16 operands and every count a multiple of 8 (its tensor-core kernels for
/// channels-last data); anything else runs on the other kernels.
pub fn takes<T: KernelTensor>(a: &T, b: &T, channels: &[usize]) -> bool {
    a.dtype() == DType::BF16 && b.dtype() == DType::BF16 && channels.iter().all(|c| c.is_multiple_of(8))
}

/// Whether cuDNN takes the single model's f32 image layer: `x: [N, C_in, H, W]` with fewer than
/// [`IMAGE_CHANNELS`] channels and `b` (the weight, or the output gradient) both f32.
pub fn takes_image<T: KernelTensor>(x: &T, b: &T) -> bool {
    x.dtype() == DType::F32 && b.dtype() == DType::F32 && x.shape()[1] < IMAGE_CHANNELS
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
    op("conv3x3_cudnn", [x, weight], Pass::Forward, groups, shape)
}

/// The input gradient of [`grouped_conv3x3`] from the output gradient `dy: [N, G·C_out, H, W]`
/// and the forward's `weight: [G·C_out, C_in, 3, 3]`: `[N, G·C_in, H, W]`, bf16.
pub fn grouped_input_grad<T: KernelTensor<Runtime = CudaRuntime>>(dy: T, weight: T, groups: usize) -> T {
    let [n, _, h, w] = dy.shape().dims::<4>();
    let shape = Shape::new([n, groups * weight.shape()[1], h, w]);
    op("conv3x3_cudnn_dgrad", [dy, weight], Pass::DataGrad, groups, shape)
}

/// The weight gradient of [`grouped_conv3x3`] of `x: [N, G·C_in, H, W]` whose output gradient
/// is `dy: [N, G·C_out, H, W]`: `[G·C_out, C_in, 3, 3]`, bf16 (f32 accumulation in cuDNN).
pub fn grouped_weight_grad<T: KernelTensor<Runtime = CudaRuntime>>(x: T, dy: T, groups: usize) -> T {
    let shape = Shape::new([dy.shape()[1], x.shape()[1] / groups, 3, 3]);
    op("conv3x3_cudnn_wgrad", [x, dy], Pass::FilterGrad, groups, shape)
}

/// `pass` on `[a, b]` (as [`Pass`] orders them) as a custom operation with one output of the
/// logical `shape` in their dtype.
fn op<T: KernelTensor<Runtime = CudaRuntime>>(
    name: &'static str,
    inputs: [T; 2],
    pass: Pass,
    groups: usize,
    shape: Shape,
) -> T {
    let dtype = inputs[0].dtype();
    let launch: LaunchMany<CudaRuntime, 2, 1> = Box::new(move |inputs| [launch(inputs, pass, groups)]);
    let [out] = custom_op_many::<T, 2, 1>(name, inputs, [(shape, dtype)], launch);
    out
}

fn launch([a, b]: [CubeTensor<CudaRuntime>; 2], pass: Pass, groups: usize) -> CubeTensor<CudaRuntime> {
    // Activations `[N, C, H, W]` and filters `[G·C_out, C_in, 3, 3]` as cuDNN reads them,
    // channels-last (the filter's is cuDNN's NHWC filter layout, `[G·C_out, 3, 3, C_in]`).
    let [n, a_channels, h, w] = a.meta.shape().dims::<4>();
    let b_dims = b.meta.shape().dims::<4>();
    let dtype = a.dtype;
    let precision = precision(dtype).expect("`takes` and `takes_image` admit bf16 and f32 only");
    let conv = |c_in, c_out| Conv3x3 { n, c_in, c_out, h, w, groups, precision };
    let (conv, out) = match pass {
        Pass::Forward => (conv(a_channels / groups, b_dims[0] / groups), [n, h, w, b_dims[0]]),
        Pass::DataGrad => (conv(b_dims[1], a_channels / groups), [n, h, w, groups * b_dims[1]]),
        Pass::FilterGrad => {
            let conv = conv(a_channels / groups, b_dims[1] / groups);
            (conv, [b_dims[1], 3, 3, conv.c_in])
        }
    };
    let (a, b) = (channels_last(a), channels_last(b));
    let out = empty_device_contiguous_dtype(a.client.clone(), a.device.clone(), Shape::new(out), dtype);
    call(pass, conv, [&a, &b, &out]);
    permute_nhwc_to_nchw(out)
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
    for t in tensors {
        assert!(
            t.is_contiguous() && precision(t.dtype) == Some(conv.precision),
            "cuDNN {pass:?}: operands must be contiguous {:?}",
            conv.precision
        );
    }
    let device = tensors[0].device.index;
    with_stream(&tensors, move |queued| {
        let ran = queued.and_then(|(stream, pointers)| {
            ffi::run(pass, conv, [pointers[0], pointers[1], pointers[2]], stream, device)
        });
        if let Err(err) = ran {
            tracing::error!(?pass, ?conv, %err, "cuDNN convolution failed");
        }
    });
}
