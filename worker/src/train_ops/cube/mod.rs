//! Custom CubeCL kernels for burn's CUDA backend (feature `cuda`), each registered in burn's
//! fusion stream as a custom operation ([`custom_op`]) so it orders correctly with the fused
//! kernels around it.
//!
//! - [`im2col`]: the im2col matrix of the 3×3 weight gradient in one pass (was a padded copy,
//!   nine slices and a stack through burn's ops).
//! - [`channel_sums`]: BatchNorm's per-channel sums (forward moments, backward `Σg`, `Σg·x̂`),
//!   one pass over the activation each instead of two-stage burn reductions over materialised
//!   intermediates.

pub mod channel_sums;
pub mod im2col;

use std::marker::PhantomData;

use burn::tensor::{DType, Shape};
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::FusionRuntime;
use burn_fusion::stream::{Operation, OperationStreams};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

/// A float tensor of burn's fused CubeCL backend over runtime `R`.
pub type FusionTensor<R> = burn_fusion::FusionTensor<FusionCubeRuntime<R>>;

/// Launches a kernel on the inputs' CubeCL tensors; returns the output (of the given shape and dtype).
pub type Launch<R, const N: usize> = fn([CubeTensor<R>; N], &Shape, DType) -> CubeTensor<R>;

/// The fusion-stream operation: runs `launch` on the resolved inputs when the stream executes.
struct CustomOp<B, R: CubeRuntime, const N: usize> {
    desc: CustomOpIr,
    launch: Launch<R, N>,
    backend: PhantomData<fn() -> B>,
}

impl<B, R: CubeRuntime, const N: usize> std::fmt::Debug for CustomOp<B, R, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomOp").field("desc", &self.desc).finish()
    }
}

impl<R, F, I, BT, const N: usize> Operation<FusionCubeRuntime<R>> for CustomOp<CubeBackend<R, F, I, BT>, R, N>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn execute(&self, handles: &mut HandleContainer<<FusionCubeRuntime<R> as FusionRuntime>::FusionHandle>) {
        let (inputs, [out]) = self.desc.as_fixed::<N, 1>();
        let inputs = inputs.each_ref().map(|x| handles.get_float_tensor::<CubeBackend<R, F, I, BT>>(x));
        let output = (self.launch)(inputs, &out.shape, out.dtype);
        handles.register_float_tensor::<CubeBackend<R, F, I, BT>>(&out.id, output);
    }
}

/// Registers `launch` on `inputs` as the custom operation `name` in the inputs' fusion stream;
/// returns its output, a `shape` tensor of `dtype`.
pub fn custom_op<R, F, I, BT, const N: usize>(
    name: &'static str,
    inputs: [FusionTensor<R>; N],
    shape: Shape,
    dtype: DType,
    launch: Launch<R, N>,
) -> FusionTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(&inputs);
    let out = TensorIr::uninit(client.create_empty_handle(), shape, dtype);
    let inputs = inputs.map(|x| x.into_ir());
    let desc = CustomOpIr::new(name, &inputs, &[out]);
    let operation =
        CustomOp::<CubeBackend<R, F, I, BT>, R, N> { desc: desc.clone(), launch, backend: PhantomData };
    client.register(streams, OperationIr::Custom(desc), operation).output()
}
