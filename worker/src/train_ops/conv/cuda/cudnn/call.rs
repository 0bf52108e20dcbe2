//! What a cuDNN call computes: the convolution's shape and precision, the pass, and two calls
//! that compute the same convolution.

/// `groups` 3×3 "same" convolutions (stride 1, padding 1) side by side: activations `[n, h, w,
/// groups·c_in]` → `[n, h, w, groups·c_out]` and filter `[groups·c_out, 3, 3, c_in]`, all of
/// `precision`, channels-last and contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv3x3 {
    pub n: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub h: usize,
    pub w: usize,
    pub groups: usize,
    pub precision: Precision,
}

/// The operands' element type (f32 accumulation either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    Bf16,
    /// Tensor cores (TF32) where cuDNN's timing picks them, as burn's f32 matmul does.
    F32,
}

/// The pass a call computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pass {
    /// `y = x ⋆ filter`: pointers `[x, filter, y]`.
    Forward,
    /// `filter_grad = Σ x ⋆ dy`: pointers `[x, dy, filter_grad]`.
    FilterGrad,
    /// `dx`, the gradient of the forward's `x`: pointers `[dy, filter, dx]`.
    DataGrad,
}

/// Two calls that compute the same convolution (a pass and the other pass by the flipped
/// kernels): [`run_fastest`] runs the one cuDNN timed faster.
#[derive(Clone, Copy, Debug)]
pub struct Either {
    pub first: (Pass, Conv3x3),
    pub second: (Pass, Conv3x3),
}
