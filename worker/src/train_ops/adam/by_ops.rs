//! Adam's update through burn's ops on any backend: the reference the CUDA kernels are tested
//! against, and what backends without them run.

use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn::tensor::ops::FloatTensor;

use super::AdamScalars;
use crate::train_ops::{unwrap, wrap};

/// [`AdamOps::adam_update`] through burn's ops (any backend).
pub fn update_by_ops<B: Backend>(
    [param, grad, moment_1, moment_2]: [Tensor<B, 1>; 4],
    s: AdamScalars,
) -> [Tensor<B, 1>; 3] {
    let moment_1 = moment_1.mul_scalar(s.beta_1).add(grad.clone().mul_scalar(1.0 - s.beta_1));
    let moment_2 = moment_2.mul_scalar(s.beta_2).add(grad.square().mul_scalar(1.0 - s.beta_2));
    let step = moment_1.clone().mul_scalar(s.step_size).div(moment_2.clone().sqrt().add_scalar(s.epsilon));
    [param - step, moment_1, moment_2]
}

/// [`AdamOps::adam_update_many`]'s update of one parameter of `scalars.len()` stacked models
/// through burn's ops (any backend, any layout).
pub fn update_stacked_by_ops<B: Backend>(
    inputs: [FloatTensor<B>; 4],
    scalars: &[AdamScalars],
) -> [FloatTensor<B>; 3] {
    let table = scalars_table::<B>(scalars, &B::float_device(&inputs[0]));
    update_stacked_at::<B>(inputs, table, (scalars[0].beta_1, scalars[0].beta_2))
}

/// Each model's `[step_size, epsilon]` in turn on `device`: what [`update_stacked_at`] and the
/// CUDA kernel read.
pub fn scalars_table<B: Backend>(scalars: &[AdamScalars], device: &B::Device) -> FloatTensor<B> {
    let pairs = scalars.iter().flat_map(|s| [s.step_size, s.epsilon]).collect();
    B::float_from_data(TensorData::new(pairs, [2 * scalars.len()]), device)
}

/// [`update_stacked_by_ops`] with the models' `[step_size, epsilon]` pairs in a tensor.
pub fn update_stacked_at<B: Backend>(
    inputs: [FloatTensor<B>; 4],
    model_scalars: FloatTensor<B>,
    (beta_1, beta_2): (f32, f32),
) -> [FloatTensor<B>; 3] {
    let shape = inputs[0].shape();
    let models = model_scalars.shape().num_elements() / 2;
    let rows = [models, shape.num_elements() / models];
    let [param, grad, moment_1, moment_2] = inputs.map(|t| wrap::<B, 2>(B::float_reshape(t, rows.into())));
    let table = wrap::<B, 1>(model_scalars).reshape([models, 2]);
    let column = |i: usize| table.clone().narrow(1, i, 1);
    let moment_1 = moment_1.mul_scalar(beta_1).add(grad.clone().mul_scalar(1.0 - beta_1));
    let moment_2 = moment_2.mul_scalar(beta_2).add(grad.square().mul_scalar(1.0 - beta_2));
    let denominator = moment_2.clone().sqrt().add(column(1));
    let step = moment_1.clone().mul(column(0)).div(denominator);
    [param - step, moment_1, moment_2].map(|t| B::float_reshape(unwrap(t), shape.clone()))
}
