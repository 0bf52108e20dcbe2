//! The experiment's cross-entropy (Keras's `categorical_crossentropy` of the softmax, see
//! [`crate::keras::kcce`]) and its gradient as one kernel
//! ([`super::CrossEntropyOps::cross_entropy_and_grad`]): through burn's ops the softmax, the
//! renormalisation, the clip, the log, the one-hot labels and the means forward, and their
//! gradients backward, were about 20 small kernels and twice as many host operations per step.
//! natural_softmax's loss ([`super::CrossEntropyOps::natural_cross_entropy_and_grad`]) is the
//! same kernel with its natural-vs-artificial term added per row (about 25 more burn ops).

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
/// rows' losses into `loss[0]`, their mean. With `natural`, each row adds natural_softmax's
/// term and its gradient ([`natural_term`]) for the classes `first..=last`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn cross_entropy_kernel<I: Int>(
    logits: &Tensor<f32>,
    labels: &Tensor<I>,
    loss: &mut Tensor<f32>,
    grad: &mut Tensor<f32>,
    low: f32,
    high: f32,
    first: u32,
    last: u32,
    #[comptime] natural: bool,
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
        if natural {
            let (first, last) = (usize::cast_from(first), usize::cast_from(last));
            total += natural_term(logits, grad, row, max, sum, label, first, last, low, high);
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

/// natural_softmax's term of `row` (softmax `exp(logit − max) / sum`), as
/// [`super::natural_by_ops`] computes it: with `n` the mass on the classes `first..=last`,
/// `o = n` for a natural label (else `1 − n`) and `r = o / (n + (1 − n))`, it returns
/// `−ln clip(r, ε, 1 − ε)` and adds `∓ p_k·([k natural] − n) / o / rows` (− for a natural
/// label) to the row's gradient where the clip lets `r` through.
#[cube]
#[allow(clippy::too_many_arguments)]
fn natural_term(
    logits: &Tensor<f32>,
    grad: &mut Tensor<f32>,
    row: usize,
    max: f32,
    sum: f32,
    label: usize,
    first: usize,
    last: usize,
    low: f32,
    high: f32,
) -> f32 {
    let classes = logits.shape(1);
    let (at, class_stride) = (row * logits.stride(0), logits.stride(1));
    let mut n = 0.0f32;
    for c in first..last + 1 {
        n += (logits[at + c * class_stride] - max).exp() / sum;
    }
    let rest = 1.0 - n;
    let natural_label = label >= first && label <= last;
    let o = select(natural_label, n, rest);
    let r = o / (n + rest);
    let clipped = select(r < low, low, select(r > high, high, r));
    if r >= low && r <= high {
        let factor = select(natural_label, -1.0f32, 1.0f32) / o / f32::cast_from(logits.shape(0));
        for c in 0..classes {
            let p = (logits[at + c * class_stride] - max).exp() / sum;
            let in_natural = select(c >= first && c <= last, 1.0f32, 0.0f32);
            grad[row * classes + c] += p * (in_natural - n) * factor;
        }
    }
    -clipped.ln()
}

/// The kernel on `[logits, labels]`: the plain cross-entropy, or with `natural = Some([first,
/// last])` natural_softmax's loss.
fn launch<R: CubeRuntime>(
    [logits, labels]: [CubeTensor<R>; 2],
    natural: Option<[usize; 2]>,
) -> [CubeTensor<R>; 2] {
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
        natural.map_or(0, |[first, _]| first as u32),
        natural.map_or(0, |[_, last]| last as u32),
        natural.is_some(),
        labels_dtype,
    );
    [loss, grad]
}

/// [`super::CrossEntropyOps::cross_entropy_and_grad`] on burn's CubeCL backends, or with
/// `natural` [`super::CrossEntropyOps::natural_cross_entropy_and_grad`]: `[loss, grad]` of f32
/// `logits: [N, C]` and integer `labels: [N]`.
pub fn loss_and_grad<T: KernelTensor>(logits: T, labels: T, natural: Option<[usize; 2]>) -> [T; 2] {
    let outputs = [(Shape::new([1]), DType::F32), (logits.shape().clone(), DType::F32)];
    let name = if natural.is_some() { "natural_cross_entropy" } else { "cross_entropy" };
    custom_op_many::<T, 2, 2>(name, [logits, labels], outputs, Box::new(move |t| launch(t, natural)))
}

/// The hooks on both CUDA backends, with and without burn's fusion stream.
macro_rules! cross_entropy_ops {
    ($backend:ty) => {
        impl super::CrossEntropyOps for $backend {
            fn cross_entropy_and_grad(
                logits: burn::tensor::ops::FloatTensor<Self>,
                labels: burn::tensor::ops::IntTensor<Self>,
            ) -> [burn::tensor::ops::FloatTensor<Self>; 2] {
                loss_and_grad(logits, labels, None)
            }

            fn natural_cross_entropy_and_grad(
                logits: burn::tensor::ops::FloatTensor<Self>,
                labels: burn::tensor::ops::IntTensor<Self>,
                natural: [usize; 2],
            ) -> [burn::tensor::ops::FloatTensor<Self>; 2] {
                loss_and_grad(logits, labels, Some(natural))
            }
        }
    };
}

cross_entropy_ops!(burn_cuda::Cuda);
cross_entropy_ops!(crate::train_ops::cube::CudaDirect);
