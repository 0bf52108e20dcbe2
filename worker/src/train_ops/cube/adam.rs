//! Adam's update of one parameter as one kernel: `(param, grad, m, v) → (param', m', v')`.
//!
//! burn's Adam runs about a dozen tensor ops per parameter (each a fusion-stream operation on
//! the host, a few fused kernels on the GPU); the model has 38 parameters, so the optimizer was
//! about 500 host operations of every training step.

use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement};
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use super::{FusionTensor, custom_op_many};
use crate::train_ops::adam::AdamScalars;

/// One thread per element: `m' = β₁·m + (1−β₁)·g`, `v' = β₂·v + (1−β₂)·g²`,
/// `param' = param − step_size · m' / (√v' + ε)`; all contiguous f32.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn adam_kernel(
    param: &Tensor<f32>,
    grad: &Tensor<f32>,
    moment_1: &Tensor<f32>,
    moment_2: &Tensor<f32>,
    param_out: &mut Tensor<f32>,
    moment_1_out: &mut Tensor<f32>,
    moment_2_out: &mut Tensor<f32>,
    beta_1: f32,
    beta_2: f32,
    step_size: f32,
    epsilon: f32,
) {
    let pos = ABSOLUTE_POS;
    if pos >= param_out.len() {
        terminate!();
    }
    let g = grad[pos];
    let m = moment_1[pos] * beta_1 + g * (1.0 - beta_1);
    let v = moment_2[pos] * beta_2 + g * g * (1.0 - beta_2);
    moment_1_out[pos] = m;
    moment_2_out[pos] = v;
    param_out[pos] = param[pos] - step_size * m / (v.sqrt() + epsilon);
}

fn launch<R: CubeRuntime>(inputs: [CubeTensor<R>; 4], scalars: AdamScalars) -> [CubeTensor<R>; 3] {
    let [param, grad, moment_1, moment_2] = inputs.map(into_contiguous);
    let (client, device) = (param.client.clone(), param.device.clone());
    let shape: Shape = param.meta.shape().clone();
    let outputs: [CubeTensor<R>; 3] = std::array::from_fn(|_| {
        empty_device_contiguous_dtype(client.clone(), device.clone(), shape.clone(), DType::F32)
    });
    let threads = shape.num_elements();
    let cube_dim = CubeDim::new(&client, threads);
    let cube_count = calculate_cube_count_elemwise(&client, threads, cube_dim);
    adam_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        param.into_tensor_arg(),
        grad.into_tensor_arg(),
        moment_1.into_tensor_arg(),
        moment_2.into_tensor_arg(),
        outputs[0].clone().into_tensor_arg(),
        outputs[1].clone().into_tensor_arg(),
        outputs[2].clone().into_tensor_arg(),
        scalars.beta_1,
        scalars.beta_2,
        scalars.step_size,
        scalars.epsilon,
    );
    outputs
}

/// [`crate::train_ops::TrainOps::adam_update`] on burn's fused CubeCL backends: one kernel
/// (f32 parameters, gradients and moments, any layout).
pub fn adam_update<R, F, I, BT>(inputs: [FusionTensor<R>; 4], scalars: AdamScalars) -> [FusionTensor<R>; 3]
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let out = (inputs[0].shape.clone(), DType::F32);
    let outputs = [out.clone(), out.clone(), out];
    custom_op_many::<R, F, I, BT, 4, 3>("adam_update", inputs, outputs, Box::new(move |t| launch(t, scalars)))
}
