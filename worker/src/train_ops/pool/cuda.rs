//! 2×2 average pooling (stride 2), global average pooling, and their input gradients, one
//! channels-last kernel each.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::permute_nhwc_to_nchw;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::train_ops::cube::{
    KernelTensor, LaunchMany, channels_last, channels_last_output, custom_op, custom_op_many,
};

/// One thread per vector of `N` channels of one pixel of `output`; `input` and `output`
/// contiguous channels-last (`[N, H, W, C]`):
/// - `backward = false`: `output` (`[N, H/2, W/2, C]`) is the mean of `input`'s 2×2 windows;
/// - `backward = true`: `output` (`[N, H, W, C]`) is a quarter of the `input` (`[N, H/2, W/2,
///   C]`) element whose window it is in.
///
/// Arithmetic in f32.
#[cube(launch)]
fn avg_pool_kernel<I: Float, O: Float, N: Size>(
    input: &Tensor<Vector<I, N>>,
    output: &mut Tensor<Vector<O, N>>,
    #[comptime] backward: bool,
    #[define(I, O)] _dtypes: [StorageType; 2],
) {
    let pos = ABSOLUTE_POS;
    if pos >= output.len() {
        terminate!();
    }
    let vectors = output.shape(3) / output.vector_size();
    let channel = pos % vectors;
    let pixel = pos / vectors;
    let quarter = Vector::<f32, N>::new(0.25);
    if backward {
        let (width, height) = (output.shape(2), output.shape(1));
        let x = pixel % width;
        let y = (pixel / width) % height;
        let image = pixel / (width * height);
        let at = ((image * (height / 2) + y / 2) * (width / 2) + x / 2) * vectors + channel;
        output[pos] = Vector::cast_from(Vector::<f32, N>::cast_from(input[at]) * quarter);
    } else {
        let (width, height) = (input.shape(2), input.shape(1));
        let x = pixel % (width / 2);
        let y = (pixel / (width / 2)) % (height / 2);
        let image = pixel / (width * height / 4);
        let top_left = ((image * height + 2 * y) * width + 2 * x) * vectors + channel;
        let below = width * vectors;
        let sum = Vector::<f32, N>::cast_from(input[top_left])
            + Vector::<f32, N>::cast_from(input[top_left + vectors])
            + Vector::<f32, N>::cast_from(input[top_left + below])
            + Vector::<f32, N>::cast_from(input[top_left + below + vectors]);
        output[pos] = Vector::cast_from(sum * quarter);
    }
}

/// Runs [`avg_pool_kernel`] on `input` into an output of `shape` (`[N, C, H, W]`, written
/// channels-last) and `dtype`.
fn launch<R: CubeRuntime>(
    input: CubeTensor<R>,
    shape: &Shape,
    dtype: DType,
    backward: bool,
) -> CubeTensor<R> {
    let (output, lanes, cube_count, cube_dim) = channels_last_output(&input, shape, dtype);
    let client = input.client.clone();
    let dtypes = [input.dtype.into(), dtype.into()];
    avg_pool_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        lanes,
        channels_last(input).into_tensor_arg(),
        output.clone().into_tensor_arg(),
        backward,
        dtypes,
    );
    permute_nhwc_to_nchw(output)
}

fn launch_forward<R: CubeRuntime>([x]: [CubeTensor<R>; 1], shape: &Shape, dtype: DType) -> CubeTensor<R> {
    launch(x, shape, dtype, false)
}

fn launch_backward<R: CubeRuntime>([dy]: [CubeTensor<R>; 1], shape: &Shape, dtype: DType) -> CubeTensor<R> {
    launch(dy, shape, dtype, true)
}

/// [`super::PoolOps::avg_pool_2x2`] on burn's CubeCL backends.
pub fn avg_pool_2x2<T: KernelTensor>(x: T) -> T {
    let [n, c, h, w] = x.shape().dims::<4>();
    assert!(h % 2 == 0 && w % 2 == 0, "2×2 pooling of a {h}×{w} image");
    let (shape, dtype) = (Shape::new([n, c, h / 2, w / 2]), x.dtype());
    custom_op::<T, 1>("avg_pool_2x2", [x], shape, dtype, launch_forward)
}

/// [`super::PoolOps::avg_pool_2x2_grad`] on burn's CubeCL backends, in
/// `x`'s dtype.
pub fn avg_pool_2x2_grad<T: KernelTensor>(x: T, dy: T) -> T {
    let (shape, dtype) = (x.shape().clone(), x.dtype());
    custom_op::<T, 1>("avg_pool_2x2_grad", [dy], shape, dtype, launch_backward)
}

/// Global average pooling, one thread per vector of `N` channels of one image:
/// - `backward = false`: `output[n, c]` (`[N, C]`, f32) is the mean of `input`'s (`[N, H, W,
///   C]`) pixels of image `n`; `pixels` = H·W;
/// - `backward = true`: one thread per vector of `output` (`[N, H, W, C]`) instead, the
///   `input` (`[N, C]`) element of its image and channel divided by `pixels`.
#[cube(launch)]
fn global_avg_pool_kernel<I: Float, O: Float, N: Size>(
    input: &Tensor<Vector<I, N>>,
    output: &mut Tensor<Vector<O, N>>,
    pixels: usize,
    #[comptime] backward: bool,
    #[define(I, O)] _dtypes: [StorageType; 2],
) {
    let pos = ABSOLUTE_POS;
    if pos >= output.len() {
        terminate!();
    }
    let vectors = output.shape(output.rank() - 1) / output.vector_size();
    let channel = pos % vectors;
    let per_pixel = Vector::<f32, N>::new(1.0 / f32::cast_from(pixels));
    if backward {
        let image = pos / vectors / pixels;
        output[pos] =
            Vector::cast_from(Vector::<f32, N>::cast_from(input[image * vectors + channel]) * per_pixel);
    } else {
        let image = pos / vectors;
        let mut sum = Vector::<f32, N>::new(0.0);
        for pixel in 0..pixels {
            sum += Vector::<f32, N>::cast_from(input[(image * pixels + pixel) * vectors + channel]);
        }
        output[pos] = Vector::cast_from(sum * per_pixel);
    }
}

/// Runs [`global_avg_pool_kernel`]: `input` `[N, C, H, W]` (forward, read channels-last) or
/// `[N, C]` (backward) into an output of `shape` and `dtype`, the `[N, C, H, W]` one written
/// channels-last.
fn launch_global<R: CubeRuntime>(
    input: CubeTensor<R>,
    shape: &Shape,
    dtype: DType,
    pixels: usize,
) -> CubeTensor<R> {
    let backward = shape.num_dims() == 4;
    let (output, lanes, cube_count, cube_dim) = channels_last_output(&input, shape, dtype);
    let client = input.client.clone();
    let dtypes = [input.dtype.into(), dtype.into()];
    let input = if backward { into_contiguous(input) } else { channels_last(input) };
    global_avg_pool_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        lanes,
        input.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        pixels,
        backward,
        dtypes,
    );
    if backward { permute_nhwc_to_nchw(output) } else { output }
}

/// [`super::PoolOps::global_avg_pool`] on burn's CubeCL backends.
pub fn global_avg_pool<T: KernelTensor>(x: T) -> T {
    let [n, c, h, w] = x.shape().dims::<4>();
    let launch: LaunchMany<T::Runtime, 1, 1> =
        Box::new(move |[x]| [launch_global(x, &Shape::new([n, c]), DType::F32, h * w)]);
    let [pooled] =
        custom_op_many::<T, 1, 1>("global_avg_pool", [x], [(Shape::new([n, c]), DType::F32)], launch);
    pooled
}

/// [`super::PoolOps::global_avg_pool_grad`] on burn's CubeCL backends, in
/// `x`'s dtype.
pub fn global_avg_pool_grad<T: KernelTensor>(x: T, dy: T) -> T {
    let (shape, dtype) = (x.shape().clone(), x.dtype());
    let pixels = shape[2] * shape[3];
    let out = (shape.clone(), dtype);
    let launch: LaunchMany<T::Runtime, 1, 1> =
        Box::new(move |[dy]| [launch_global(dy, &shape, dtype, pixels)]);
    let [dx] = custom_op_many::<T, 1, 1>("global_avg_pool_grad", [dy], [out], launch);
    dx
}

/// The hooks on both CUDA backends, with and without burn's fusion stream.
macro_rules! pool_ops {
    ($backend:ty) => {
        impl super::PoolOps for $backend {
            fn avg_pool_2x2(x: burn::tensor::ops::FloatTensor<Self>) -> burn::tensor::ops::FloatTensor<Self> {
                avg_pool_2x2(x)
            }

            fn avg_pool_2x2_grad(
                x: burn::tensor::ops::FloatTensor<Self>,
                dy: burn::tensor::ops::FloatTensor<Self>,
            ) -> burn::tensor::ops::FloatTensor<Self> {
                avg_pool_2x2_grad(x, dy)
            }

            fn global_avg_pool(
                x: burn::tensor::ops::FloatTensor<Self>,
            ) -> burn::tensor::ops::FloatTensor<Self> {
                global_avg_pool(x)
            }

            fn global_avg_pool_grad(
                x: burn::tensor::ops::FloatTensor<Self>,
                dy: burn::tensor::ops::FloatTensor<Self>,
            ) -> burn::tensor::ops::FloatTensor<Self> {
                global_avg_pool_grad(x, dy)
            }
        }
    };
}

pool_ops!(burn_cuda::Cuda);
pool_ops!(crate::train_ops::cube::CudaDirect);
