//! The convolution's formulations through burn's ops: the [`ConvOps`] defaults (the CPU, and the
//! inner backends of inference), the weight gradient as grouped GEMMs, and the references the CUDA
//! kernels are tested against.

use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::ops::{ConvOptions, FloatTensor, PadMode};

use super::{ConvEngine, ConvOps};
use crate::train_ops::{to_dtype, unwrap, wrap};

/// Rows (images × pixels) each GEMM of the weight gradient reduces over, at most. Measured on an
/// H100 (whole training step, img/s): f32 with burn's group sum 1024 → 19.3k, 2048 → 19.5–19.6k,
/// 4096 → 19.3k, 8192 → 18.5k, 16384 → 17.6k, 32768 → 16.5k; `fast-bf16` with the group-sum
/// kernel (pipelined) 2048 → 67.5–67.9k, 4096 → 65.9–66.4k, 8192 → 62.2–62.6k: many small
/// matrices fill the GPU best.
const ROWS_PER_GROUP: usize = 2048;

/// Stride 1, padding 1, no dilation, no groups: the model's only convolution.
pub fn same_3x3() -> ConvOptions<2> {
    ConvOptions::new([1, 1], [1, 1], [1, 1], 1)
}

/// Number of image groups G for a batch of `images` with `pixels` each: the largest divisor of
/// `images` with at least [`ROWS_PER_GROUP`] rows per group (1 for small batches).
pub fn image_groups(images: usize, pixels: usize) -> usize {
    let wanted = (images * pixels / ROWS_PER_GROUP).clamp(1, images);
    (1..=wanted).rev().find(|g| images.is_multiple_of(*g)).unwrap_or(1)
}

/// The dtype of a float tensor primitive.
pub(super) fn dtype_of<B: Backend>(t: &FloatTensor<B>) -> FloatDType {
    use burn::tensor::TensorMetadata;
    t.dtype().into()
}

/// Forward convolution in `x`'s dtype (weight and bias cast to it), on the `engine`'s kernels
/// ([`ConvOps::conv3x3_nobias`]). burn 0.21's bf16 convolution kernels mishandle a bias
/// (on an H100 its output came out 10 % off, and training with it stalled at loss ln 10 while
/// the same step without the bias learned), so in any dtype but f32 the bias is added as a
/// separate broadcast.
pub fn forward<B: ConvOps>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    engine: ConvEngine,
) -> FloatTensor<B> {
    let dtype = dtype_of::<B>(&x);
    let weight = unwrap(to_dtype(wrap::<B, 4>(weight), dtype));
    let bias = bias.map(|b| to_dtype(wrap::<B, 1>(b), dtype));
    match bias {
        Some(bias) if dtype != FloatDType::F32 => {
            let c_out = bias.dims()[0];
            let out = wrap::<B, 4>(B::conv3x3_nobias(x, weight, engine));
            unwrap(out + bias.reshape([1, c_out, 1, 1]))
        }
        None => B::conv3x3_nobias(x, weight, engine),
        bias => B::conv2d(x, weight, bias.map(unwrap), same_3x3()),
    }
}

/// Input gradient in `dy`'s dtype (= `x`'s): burn's data-gradient kernel.
pub(super) fn input_grad<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> FloatTensor<B> {
    let weight = unwrap(to_dtype(wrap::<B, 4>(weight), dtype_of::<B>(&dy)));
    B::conv2d_x_backward(x, weight, dy, same_3x3())
}

/// [`ConvOps::conv_operands`] through burn's ops: a cast, and each model's kernels transposed
/// and flipped ([`grouped_flipped`]).
pub fn operands_by_ops<B: Backend>(
    weight: FloatTensor<B>,
    groups: usize,
    dtype: FloatDType,
) -> [FloatTensor<B>; 2] {
    let operand = unwrap(to_dtype(wrap::<B, 4>(weight), dtype));
    [operand.clone(), grouped_flipped::<B>(operand, groups)]
}

/// Each of `groups` models' kernels transposed and flipped: `operand: [G·C_out, C_in, 3, 3]` →
/// `[G·C_in, C_out, 3, 3]`, `flipped[g·C_in + i, o, kh, kw] = operand[g·C_out + o, i, 2 − kh,
/// 2 − kw]`. The convolution by it is the input gradient of the one by `operand`, and the
/// input-gradient pass by it is the convolution by `operand`.
pub fn grouped_flipped<B: Backend>(operand: FloatTensor<B>, groups: usize) -> FloatTensor<B> {
    let operand = wrap::<B, 4>(operand);
    let [rows, c_in, _, _] = operand.dims();
    let c_out = rows / groups;
    let flipped = operand.reshape([groups, c_out, c_in, 3, 3]).swap_dims(1, 2).flip([3, 4]);
    unwrap(flipped.reshape([groups * c_in, c_out, 3, 3]))
}

/// Bias gradient `Σ_{n,y,x} dY[n, o, y, x]` of `dy: [N, C_out, H, W]`, in two stages over the
/// channels-last rows: per image group (as the weight gradient splits them), then the groups.
pub(super) fn bias_grad<B: Backend>(dy: Tensor<B, 4>) -> Tensor<B, 1> {
    let [n, c_out, h, w] = dy.dims();
    let groups = image_groups(n, h * w);
    let rows =
        to_dtype(dy.permute([0, 2, 3, 1]), FloatDType::F32).reshape([groups, n / groups * h * w, c_out]);
    rows.sum_dim(1).sum_dim(0).reshape([c_out])
}

/// [`ConvOps::im2col_3x3`] through burn's ops: the channels-last input padded, nine shifted
/// slices of it stacked along a new axis before the channels.
pub fn im2col_3x3_by_slices<B: Backend>(x: FloatTensor<B>, dtype: FloatDType) -> FloatTensor<B> {
    let x = wrap::<B, 4>(x);
    let [n, c, h, w] = x.dims();
    // Channels-last view: free for burn-cubecl's conv outputs, which are NHWC in memory.
    // Padded in f32: burn pads with a default-dtype (f32) tensor.
    let channels_last = to_dtype(x.permute([0, 2, 3, 1]), FloatDType::F32);
    let padded = to_dtype(channels_last.pad([(0, 0), (1, 1), (1, 1), (0, 0)], PadMode::Constant(0.0)), dtype);
    let taps: Vec<Tensor<B, 4>> = (0..9)
        .map(|t| {
            let (kh, kw) = (t / 3, t % 3);
            padded.clone().slice([0..n, kh..kh + h, kw..kw + w, 0..c])
        })
        .collect();
    unwrap(Tensor::stack::<5>(taps, 3).reshape([n * h * w, 9 * c]))
}

/// `x: [N, C_in, H, W]` convolved by `weight` as one GEMM of its im2col matrix `[N·H·W, 9·C_in]`
/// by the weight as a `[9·C_in, C_out]` matrix (rows ordered `(kh, kw, c_in)`), plus `bias`, in
/// `x`'s dtype (f32 accumulation, [`ConvOps::matmul_to_f32`]): the output (channels-last in
/// memory) and the im2col matrix, which the weight gradient reuses.
///
/// The model's image stays f32 here. In bf16, with the operands padded to 32 columns for TMA,
/// cubek's kernels came out wrong on an H100 for this layer (burn's fused matmul: output off by
/// 90 % of its scale; our unfused one: the step stalled at loss ln 10 at batch 512 although an
/// 8-image GPU test passed), while burn's f32 matmul has always computed this layer's weight
/// gradient.
pub(super) fn forward_by_gemm<B: ConvOps>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let [n, c_in, h, w] = wrap::<B, 4>(x.clone()).dims();
    let dtype = dtype_of::<B>(&x);
    let cols = B::im2col_3x3(x, dtype);
    let weight = wrap::<B, 4>(weight);
    let c_out = weight.dims()[0];
    let rhs = to_dtype(weight.permute([2, 3, 1, 0]).reshape([1, 9 * c_in, c_out]), dtype);
    let lhs = wrap::<B, 2>(cols.clone()).reshape([1, n * h * w, 9 * c_in]);
    let out = wrap::<B, 3>(B::matmul_to_f32(unwrap(lhs), unwrap(rhs)));
    let out = to_dtype(out, dtype).reshape([n, h, w, c_out]).permute([0, 3, 1, 2]);
    let out = match bias {
        Some(bias) => out + to_dtype(wrap::<B, 1>(bias), dtype).reshape([1, c_out, 1, 1]),
        None => out,
    };
    (unwrap(out), cols)
}

/// Weight gradient (f32) of a 3×3 same convolution of `x: [N, C_in, H, W]` whose output
/// gradient is `dy: [N, C_out, H, W]` (both in the convolution's dtype), as grouped GEMMs (see
/// the module docs) with f32 results (f32 accumulation inside each group, the group sum in f32).
pub fn weight_grad<B: ConvOps>(x: Tensor<B, 4>, dy: Tensor<B, 4>) -> Tensor<B, 4> {
    let c_in = x.dims()[1];
    let cols = wrap::<B, 2>(B::im2col_3x3(unwrap(x), dy.dtype().into()));
    weight_grad_of_cols(cols, dy, c_in)
}

/// [`weight_grad`] from the input's im2col matrix `cols: [N·H·W, 9·C_in]` (in `dy`'s dtype).
pub(super) fn weight_grad_of_cols<B: ConvOps>(
    cols: Tensor<B, 2>,
    dy: Tensor<B, 4>,
    c_in: usize,
) -> Tensor<B, 4> {
    let [n, c_out, h, w] = dy.dims();
    let columns = 9 * c_in;
    let groups = image_groups(n, h * w);
    let rows_per_group = n / groups * h * w;
    let cols = cols.reshape([groups, rows_per_group, columns]);
    let dy = dy.permute([0, 2, 3, 1]).reshape([groups, rows_per_group, c_out]);
    let dw = wrap::<B, 2>(B::summed_matmul_to_f32(unwrap(dy.swap_dims(1, 2)), unwrap(cols)))
        .reshape([c_out, 3, 3, c_in]);
    dw.permute([0, 3, 1, 2])
}

/// burn's own weight-gradient kernel (implicit GEMM) in the convolution's dtype, returned in f32.
pub(super) fn stock_weight_grad<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> Tensor<B, 4> {
    let operand = unwrap(to_dtype(wrap::<B, 4>(weight), dtype_of::<B>(&x)));
    to_dtype(wrap(B::conv2d_weight_backward(x, operand, dy, same_3x3())), FloatDType::F32)
}
