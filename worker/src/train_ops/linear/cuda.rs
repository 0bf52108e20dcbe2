//! [`super::LinearOps`] on burn's CUDA backends: the head's products as one kernel each, which
//! reads its operands through their strides (a transposed view is not copied) and adds the bias
//! in the same pass ([`matmul_kernel`]). A plane of 32 lanes splits each long sum; a thread
//! takes each short one. burn's naive matmul took the weight gradient (256 sums of 512) on 2,560
//! threads, 24 µs a step on an H100, plus its copies.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::train_ops::cube::{KernelTensor, custom_op};

/// Lanes of a plane on CUDA: the threads that split one sum.
const LANES: u32 = 32;

/// Outputs (planes of [`LANES`]) a cube of [`matmul_kernel`] computes when it splits sums.
const PLANES: u32 = 8;

/// Threads a cube of [`matmul_kernel`] when a thread takes each sum.
const THREADS: u32 = 256;

/// Sums at least this long take a plane an output; shorter ones (the input gradient's, as long
/// as the head has classes) a thread.
const PLANE_FROM: usize = 64;

/// `out[r, c] = Σ_k lhs[r, k] · rhs[k, c] (+ bias[c])`, row-major output `o` as `split` says:
/// plane `UNIT_POS_Y` of cube `CUBE_POS_X` on `o = CUBE_POS_X · PLANES + UNIT_POS_Y`, its lanes
/// on every 32nd `k` and then their sum; or thread `o = ABSOLUTE_POS` on all of it.
#[cube(launch)]
fn matmul_kernel(
    lhs: &Tensor<f32>,
    rhs: &Tensor<f32>,
    bias: &Tensor<f32>,
    out: &mut Tensor<f32>,
    #[comptime] split: bool,
    #[comptime] with_bias: bool,
) {
    let (rows, cols, depth) = (out.shape(0), out.shape(1), lhs.shape(1));
    let mut output = ABSOLUTE_POS;
    let mut k = 0usize;
    let mut step = 1usize;
    if split {
        output = CUBE_POS_X as usize * CUBE_DIM_Y as usize + UNIT_POS_Y as usize;
        k = UNIT_POS_X as usize;
        step = CUBE_DIM_X as usize;
    }
    // A plane's lanes share `output`, so a whole plane enters (as `plane_sum` needs) or skips.
    if output < rows * cols {
        let (row, col) = (output / cols, output % cols);
        let mut sum = 0.0f32;
        while k < depth {
            sum +=
                lhs[row * lhs.stride(0) + k * lhs.stride(1)] * rhs[k * rhs.stride(0) + col * rhs.stride(1)];
            k += step;
        }
        if split {
            sum = plane_sum(sum);
        }
        if with_bias {
            sum += bias[col * bias.stride(0)];
        }
        if !split || UNIT_POS_X == 0 {
            out[output] = sum;
        }
    }
}

/// `lhs · rhs (+ bias)` of f32 `[M, K]`, `[K, N]` (and `[N]`) into a new contiguous `[M, N]`.
fn launch<R: CubeRuntime>(
    lhs: CubeTensor<R>,
    rhs: CubeTensor<R>,
    bias: Option<CubeTensor<R>>,
) -> CubeTensor<R> {
    let [rows, depth] = lhs.meta.shape().dims::<2>();
    let [rhs_depth, cols] = rhs.meta.shape().dims::<2>();
    assert_eq!(depth, rhs_depth, "the head's product: [{rows}, {depth}] · [{rhs_depth}, {cols}]");
    assert!(
        [Some(&lhs), Some(&rhs), bias.as_ref()].into_iter().flatten().all(|t| t.dtype == DType::F32),
        "the head's product takes f32"
    );
    let (client, device) = (lhs.client.clone(), lhs.device.clone());
    let out = empty_device_contiguous_dtype(client.clone(), device, Shape::new([rows, cols]), DType::F32);
    let with_bias = bias.is_some();
    // Without a bias the kernel never reads its bias argument: `rhs` stands in.
    let bias = bias.unwrap_or_else(|| rhs.clone());
    let outputs = (rows * cols) as u32;
    let args =
        (lhs.into_tensor_arg(), rhs.into_tensor_arg(), bias.into_tensor_arg(), out.clone().into_tensor_arg());
    let split = depth >= PLANE_FROM;
    let (cubes, threads) = match split {
        true => (outputs.div_ceil(PLANES), CubeDim::new_2d(LANES, PLANES)),
        false => (outputs.div_ceil(THREADS), CubeDim::new_1d(THREADS)),
    };
    let cubes = CubeCount::Static(cubes, 1, 1);
    matmul_kernel::launch::<R>(&client, cubes, threads, args.0, args.1, args.2, args.3, split, with_bias);
    out
}

/// `lhs · rhs` of f32 `[M, K]` and `[K, N]` (either may be a transposed view) as one kernel.
pub fn small_matmul<T: KernelTensor>(lhs: T, rhs: T) -> T {
    let shape = Shape::new([lhs.shape()[0], rhs.shape()[1]]);
    custom_op("small_matmul", [lhs, rhs], shape, DType::F32, |[lhs, rhs], _, _| launch(lhs, rhs, None))
}

/// `x · w + b` of f32 `[N, I]`, `[I, O]` and `[O]` as one kernel.
pub fn dense<T: KernelTensor>(x: T, w: T, b: T) -> T {
    let shape = Shape::new([x.shape()[0], w.shape()[1]]);
    custom_op("dense", [x, w, b], shape, DType::F32, |[x, w, b], _, _| launch(x, w, Some(b)))
}

/// The hook on both CUDA backends, with and without burn's fusion stream.
macro_rules! linear_ops {
    ($backend:ty) => {
        impl super::LinearOps for $backend {
            fn small_matmul(
                lhs: burn::tensor::ops::FloatTensor<Self>,
                rhs: burn::tensor::ops::FloatTensor<Self>,
            ) -> burn::tensor::ops::FloatTensor<Self> {
                small_matmul(lhs, rhs)
            }

            fn dense(
                x: burn::tensor::ops::FloatTensor<Self>,
                w: burn::tensor::ops::FloatTensor<Self>,
                b: burn::tensor::ops::FloatTensor<Self>,
            ) -> burn::tensor::ops::FloatTensor<Self> {
                dense(x, w, b)
            }
        }
    };
}

linear_ops!(burn_cuda::Cuda);
linear_ops!(crate::train_ops::cube::CudaDirect);
