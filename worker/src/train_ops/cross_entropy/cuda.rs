//! The experiment's cross-entropy (Keras's `categorical_crossentropy` of the softmax, see
//! [`crate::keras::kcce`]) and its gradient as one kernel
//! ([`super::CrossEntropyOps::cross_entropy_and_grad`]): through burn's ops the softmax, the
//! renormalisation, the clip, the log, the one-hot labels and the means forward, and their
//! gradients backward, were about 20 small kernels and twice as many host operations per step.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use crate::keras::KERAS_EPSILON;
use crate::train_ops::cube::{KernelTensor, custom_op_many};

/// Threads of the kernel's single cube.
const THREADS: usize = 256;

/// One cube; thread `t` takes rows `t`, `t + THREADS`, …: per row `p = softmax(logits)`,
/// `S = Σ p`, `q = p[label] / S`, the row's loss `−ln clip(q, ε, 1 − ε)` and its gradient per
/// unit of the mean loss, `(p/S − onehot(label)) / rows` where the clip let `q` through (burn's
/// clamp passes the gradient for `ε ≤ q ≤ 1 − ε`), else 0. A tree in shared memory adds the
/// rows' losses into `loss[0]`, their mean.
#[cube(launch)]
fn cross_entropy_kernel<I: Int>(
    logits: &Tensor<f32>,
    labels: &Tensor<I>,
    loss: &mut Tensor<f32>,
    grad: &mut Tensor<f32>,
    low: f32,
    high: f32,
    #[define(I)] _label_dtype: StorageType,
) {
    let rows = logits.shape(0);
    let classes = logits.shape(1);
    let (row_stride, class_stride) = (logits.stride(0), logits.stride(1));
    let unit = UNIT_POS as usize;
    let per_row = 1.0 / f32::cast_from(rows);
    let mut total = 0.0f32;
    let mut row = unit;
    while row < rows {
        let at = row * row_stride;
        let mut max = logits[at];
        for c in 1..classes {
            let x = logits[at + c * class_stride];
            max = select(x > max, x, max);
        }
        let mut sum = 0.0f32;
        for c in 0..classes {
            sum += (logits[at + c * class_stride] - max).exp();
        }
        let mut s = 0.0f32;
        for c in 0..classes {
            s += (logits[at + c * class_stride] - max).exp() / sum;
        }
        let label = usize::cast_from(labels[row * labels.stride(0)]);
        let q = (logits[at + label * class_stride] - max).exp() / sum / s;
        let clipped = select(q < low, low, select(q > high, high, q));
        total -= clipped.ln();
        let passes = q >= low && q <= high;
        for c in 0..classes {
            let p = (logits[at + c * class_stride] - max).exp() / sum / s;
            let target = select(c == label, 1.0f32, 0.0f32);
            grad[row * classes + c] = select(passes, (p - target) * per_row, 0.0f32);
        }
        row += THREADS;
    }
    let mut shared = SharedMemory::<f32>::new(THREADS);
    shared[unit] = total;
    sync_cube();
    // A run-time count (`CUBE_DIM`): a compile-time one could not be halved in the loop.
    let mut half = CUBE_DIM as usize / 2;
    while half > 0 {
        if unit < half {
            let other = shared[unit + half];
            shared[unit] += other;
        }
        sync_cube();
        half /= 2;
    }
    if unit == 0 {
        loss[0] = shared[0] * per_row;
    }
}

fn launch<R: CubeRuntime>([logits, labels]: [CubeTensor<R>; 2]) -> [CubeTensor<R>; 2] {
    let (client, device) = (logits.client.clone(), logits.device.clone());
    let shape: Shape = logits.meta.shape().clone();
    let loss = empty_device_contiguous_dtype(client.clone(), device.clone(), Shape::new([1]), DType::F32);
    let grad = empty_device_contiguous_dtype(client.clone(), device, shape, DType::F32);
    let labels_dtype = labels.dtype.into();
    cross_entropy_kernel::launch::<R>(
        &client,
        CubeCount::Static(1, 1, 1),
        CubeDim::new_1d(THREADS as u32),
        logits.into_tensor_arg(),
        labels.into_tensor_arg(),
        loss.clone().into_tensor_arg(),
        grad.clone().into_tensor_arg(),
        KERAS_EPSILON,
        1.0 - KERAS_EPSILON,
        labels_dtype,
    );
    [loss, grad]
}

/// [`super::CrossEntropyOps::cross_entropy_and_grad`] on burn's CubeCL backends:
/// `[loss, grad]` of f32 `logits: [N, C]` and integer `labels: [N]`.
pub fn cross_entropy_and_grad<T: KernelTensor>(logits: T, labels: T) -> [T; 2] {
    let outputs = [(Shape::new([1]), DType::F32), (logits.shape().clone(), DType::F32)];
    custom_op_many::<T, 2, 2>("cross_entropy", [logits, labels], outputs, Box::new(launch))
}

/// The hooks on both CUDA backends, with and without burn's fusion stream.
macro_rules! cross_entropy_ops {
    ($backend:ty) => {
        impl super::CrossEntropyOps for $backend {
            fn cross_entropy_and_grad(
                logits: burn::tensor::ops::FloatTensor<Self>,
                labels: burn::tensor::ops::IntTensor<Self>,
            ) -> [burn::tensor::ops::FloatTensor<Self>; 2] {
                cross_entropy_and_grad(logits, labels)
            }
        }
    };
}

cross_entropy_ops!(burn_cuda::Cuda);
cross_entropy_ops!(crate::train_ops::cube::CudaDirect);
