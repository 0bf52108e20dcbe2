//! The plumbing every CUDA kernel of the training operations shares (feature `cuda`): a kernel
//! run as an operation of either CUDA backend ([`KernelTensor`], [`custom_op`]): registered in
//! burn's fusion stream as a custom operation, so it orders correctly with the fused kernels
//! around it, or launched at once without fusion; and the channels-last layout helpers.

use std::marker::PhantomData;

use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::ops::{permute_nchw_to_nhwc, permute_nchw_to_nhwc_shape};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::FusionRuntime;
use burn_fusion::stream::{Operation, OperationStreams};
use burn_ir::{BackendIr, CustomOpIr, HandleContainer, OperationIr, TensorHandle, TensorIr};
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::{CubeCount, CubeDim};

/// burn's CubeCL backend on CUDA without its fusion stream: every operation launched by the
/// thread that records it (burn's `Cuda` is this backend behind the fusion stream).
pub type CudaDirect = CubeBackend<cubecl::cuda::CudaRuntime, f32, i32, u8>;

/// A float tensor of burn's fused CubeCL backend over runtime `R`.
pub type FusionTensor<R> = burn_fusion::FusionTensor<FusionCubeRuntime<R>>;

/// Launches a kernel on the inputs' CubeCL tensors; returns the output (of the given shape and dtype).
pub type Launch<R, const N: usize> = fn([CubeTensor<R>; N], &Shape, DType) -> CubeTensor<R>;

/// Launches a kernel (with whatever it captured, e.g. scalars) on the inputs' CubeCL tensors;
/// returns its `M` outputs.
pub type LaunchMany<R, const N: usize, const M: usize> =
    Box<dyn Fn([CubeTensor<R>; N]) -> [CubeTensor<R>; M] + Send + Sync>;

/// [`LaunchMany`] for any number of inputs and outputs (as many outputs as the operation
/// declared).
pub type LaunchVec<R> = Box<dyn Fn(Vec<CubeTensor<R>>) -> Vec<CubeTensor<R>> + Send + Sync>;

/// The fusion-stream operation: runs `launch` on the resolved inputs when the stream executes.
struct CustomOp<B, R: CubeRuntime> {
    desc: CustomOpIr,
    launch: LaunchVec<R>,
    backend: PhantomData<fn() -> B>,
}

impl<B, R: CubeRuntime> std::fmt::Debug for CustomOp<B, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomOp").field("desc", &self.desc).finish()
    }
}

impl<R, F, I, BT> Operation<FusionCubeRuntime<R>> for CustomOp<CubeBackend<R, F, I, BT>, R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn execute(&self, handles: &mut HandleContainer<<FusionCubeRuntime<R> as FusionRuntime>::FusionHandle>) {
        let inputs = self
            .desc
            .inputs
            .iter()
            .map(|x| match x.dtype.is_int() {
                true => handles.get_int_tensor::<CubeBackend<R, F, I, BT>>(x),
                false => handles.get_float_tensor::<CubeBackend<R, F, I, BT>>(x),
            })
            .collect();
        let outputs = (self.launch)(inputs);
        assert_eq!(outputs.len(), self.desc.outputs.len(), "{}: wrong number of outputs", self.desc.id);
        for (out, output) in self.desc.outputs.iter().zip(outputs) {
            handles.register_float_tensor::<CubeBackend<R, F, I, BT>>(&out.id, output);
        }
    }
}

/// A tensor primitive of one of burn's CubeCL backends over runtime [`KernelTensor::Runtime`],
/// what the training operations' kernels run on: [`FusionTensor`] (burn's fused backend, each
/// kernel a custom operation of its fusion stream, run by the stream's device thread in order
/// with the fused kernels around it) or [`CubeTensor`] (the backend without fusion, each kernel
/// launched by the thread that calls it).
pub trait KernelTensor: TensorMetadata + Clone + Send + Sync + Sized + 'static {
    /// The CubeCL runtime the kernels launch on.
    type Runtime: CubeRuntime;

    /// Runs `launch` on `inputs` (float or integer tensors) as the operation `name`; returns
    /// its outputs, of the given shapes and dtypes.
    fn run(
        name: &'static str,
        inputs: Vec<Self>,
        outputs: Vec<(Shape, DType)>,
        launch: LaunchVec<Self::Runtime>,
    ) -> Vec<Self>;
}

impl<R: CubeRuntime> KernelTensor for FusionTensor<R> {
    type Runtime = R;

    fn run(
        name: &'static str,
        inputs: Vec<Self>,
        outputs: Vec<(Shape, DType)>,
        launch: LaunchVec<R>,
    ) -> Vec<Self> {
        let client = inputs[0].client.clone();
        let streams = OperationStreams::with_inputs(&inputs);
        let outs: Vec<TensorIr> = outputs
            .into_iter()
            .map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape, dtype))
            .collect();
        let inputs: Vec<TensorIr> = inputs.into_iter().map(|x| x.into_ir()).collect();
        let desc = CustomOpIr::new(name, &inputs, &outs);
        let operation =
            CustomOp::<CubeBackend<R, f32, i32, u8>, R> { desc: desc.clone(), launch, backend: PhantomData };
        client.register(streams, OperationIr::Custom(desc), operation)
    }
}

impl<R: CubeRuntime> KernelTensor for CubeTensor<R> {
    type Runtime = R;

    fn run(
        name: &'static str,
        inputs: Vec<Self>,
        outputs: Vec<(Shape, DType)>,
        launch: LaunchVec<R>,
    ) -> Vec<Self> {
        let results = launch(inputs);
        assert_eq!(results.len(), outputs.len(), "{name}: wrong number of outputs");
        // Each output in its declared shape over the kernel's buffer and strides, as the fusion
        // stream registers it.
        let declared = |(tensor, (shape, _)): (Self, (Shape, DType))| {
            <CubeBackend<R, f32, i32, u8> as BackendIr>::float_tensor(TensorHandle {
                handle: tensor.into(),
                shape,
            })
        };
        results.into_iter().zip(outputs).map(declared).collect()
    }
}

/// Runs `launch` on `inputs` as the operation `name` ([`KernelTensor::run`]); returns its
/// outputs, of the given shapes and dtypes.
pub fn custom_op_vec<T: KernelTensor>(
    name: &'static str,
    inputs: Vec<T>,
    outputs: Vec<(Shape, DType)>,
    launch: LaunchVec<T::Runtime>,
) -> Vec<T> {
    T::run(name, inputs, outputs, launch)
}

/// [`custom_op_vec`] with `N` inputs and `M` outputs.
pub fn custom_op_many<T: KernelTensor, const N: usize, const M: usize>(
    name: &'static str,
    inputs: [T; N],
    outputs: [(Shape, DType); M],
    launch: LaunchMany<T::Runtime, N, M>,
) -> [T; M] {
    let launch: LaunchVec<T::Runtime> = Box::new(move |inputs| {
        let inputs: [CubeTensor<T::Runtime>; N] =
            inputs.try_into().unwrap_or_else(|_| unreachable!("N inputs"));
        launch(inputs).into()
    });
    let outputs = custom_op_vec::<T>(name, inputs.into(), outputs.into(), launch);
    outputs.try_into().unwrap_or_else(|_| unreachable!("M outputs"))
}

/// [`custom_op_many`] for a kernel with one output, a `shape` tensor of `dtype`.
pub fn custom_op<T: KernelTensor, const N: usize>(
    name: &'static str,
    inputs: [T; N],
    shape: Shape,
    dtype: DType,
    launch: Launch<T::Runtime, N>,
) -> T {
    let out = (shape.clone(), dtype);
    let launch: LaunchMany<T::Runtime, N, 1> = Box::new(move |inputs| [launch(inputs, &shape, dtype)]);
    let [output] = custom_op_many::<T, N, 1>(name, inputs, [out], launch);
    output
}

/// `t: [N, C, H, W]` as a contiguous `[N, H, W, C]` tensor: free for channels-last layouts
/// (burn's conv outputs, this module's kernels' outputs), a copy otherwise.
pub fn channels_last<R: CubeRuntime>(t: CubeTensor<R>) -> CubeTensor<R> {
    into_contiguous(permute_nchw_to_nhwc(t))
}

/// An output of `dtype` for a kernel with one thread per vector of channels: `shape` `[N, C,
/// H, W]` laid out `[N, H, W, C]` in memory (or `[N, C]`, as it is), the vector width (for
/// `like`'s dtype and `dtype`) and the launch geometry.
pub fn channels_last_output<R: CubeRuntime>(
    like: &CubeTensor<R>,
    shape: &Shape,
    dtype: DType,
) -> (CubeTensor<R>, usize, CubeCount, CubeDim) {
    let memory =
        if shape.num_dims() == 4 { permute_nchw_to_nhwc_shape(shape.clone()) } else { shape.clone() };
    let output = empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), memory, dtype);
    let lanes = channel_lanes(shape[1], like.dtype.size().max(dtype.size()));
    let threads = shape.num_elements() / lanes;
    let cube_dim = CubeDim::new(&like.client, threads);
    let cube_count = calculate_cube_count_elemwise(&like.client, threads, cube_dim);
    (output, lanes, cube_count, cube_dim)
}

/// Channels per vector in the channels-last kernels: the most (8, 4, 2 or 1) that divide
/// `channels` and keep a vector of the widest element type they move within one 16-byte access
/// (8 bf16 or 4 f32 channels).
pub fn channel_lanes(channels: usize, widest_element_bytes: usize) -> usize {
    [8, 4, 2, 1]
        .into_iter()
        .find(|lanes| channels.is_multiple_of(*lanes) && lanes * widest_element_bytes <= 16)
        .unwrap_or(1)
}

/// Queues `task` on CubeCL's server in order with the kernels around it, handing it the CUDA
/// stream CubeCL issues the calling thread's work to and the device pointers of `tensors` (kept
/// alive until it has run): how work outside CubeCL (cuDNN, graph capture, device copies) joins
/// the stream.
pub fn with_stream(
    tensors: &[&CubeTensor<cubecl::cuda::CudaRuntime>],
    task: impl FnOnce(Result<(cudarc::driver::sys::CUstream, Vec<u64>), String>) + Send + 'static,
) {
    let handles = tensors.iter().map(|t| t.handle.clone()).collect();
    tensors[0].client.with_resources(handles, move |resources| {
        task(resources.map_err(|e| format!("buffers: {e:?}")).and_then(|resources| {
            let stream = resources[0].resource().stream;
            if stream.is_null() {
                return Err("CubeCL named no stream (is vendor/cubecl-cuda patched in?)".to_owned());
            }
            Ok((stream, resources.iter().map(|r| r.resource().ptr).collect()))
        }))
    });
}

#[cfg(test)]
mod tests {
    use super::channel_lanes;

    #[test]
    fn vectors_hold_up_to_sixteen_bytes_of_whole_channels() {
        assert_eq!(channel_lanes(64, 2), 8); // bf16 activations
        assert_eq!(channel_lanes(64, 4), 4); // f32, or an f32 input written as bf16
        assert_eq!(channel_lanes(24, 2), 8);
        assert_eq!(channel_lanes(6, 2), 2);
        assert_eq!(channel_lanes(3, 4), 1); // the image's channels
        assert_eq!(channel_lanes(7, 2), 1);
    }
}
