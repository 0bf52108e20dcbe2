//! BatchNorm's forward statistics: the channel sums' partials ([`super::channel_sums`]), then one
//! cube per channel that adds them up per group and finishes every per-channel result of the
//! layer (the groups' means, `1/√(σ² + ε)`, `γ·inv_std`, and the running averages).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::channel_sums::{launch_sums, per_channel_cubes, sum_partials};
use crate::train_ops::batch_norm::{NormConfig, NormStatistics};
use crate::train_ops::cube::{KernelTensor, channels_last, custom_op_many};

/// Stage 2 of the forward, a cube per channel `c`: for each group, the group's `[P, 2, C]` block
/// of the partials of the shifted sums (`Σ (x − s)`, `Σ (x − s)²` over `rows` rows per group,
/// `s` = the first row of the channels-last `x`) added up, then the group's mean,
/// `1/√(σ² + ε)` and `γ·inv_std` (`[G, C]`); then the running averages blended with `momentum`
/// from the mean over the groups of their means (shifted by `shift` when `shifted`) and
/// variances. All f32 but `x`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn statistics_kernel<X: Float>(
    partials: &Tensor<f32>,
    x: &Tensor<X>,
    gamma: &Tensor<f32>,
    shift: &Tensor<f32>,
    running_mean: &Tensor<f32>,
    running_var: &Tensor<f32>,
    mean: &mut Tensor<f32>,
    inv_std: &mut Tensor<f32>,
    scale: &mut Tensor<f32>,
    running_mean_out: &mut Tensor<f32>,
    running_var_out: &mut Tensor<f32>,
    rows: f32,
    epsilon: f32,
    momentum: f32,
    #[comptime] shifted: bool,
    #[define(X)] _dtype: StorageType,
) {
    let c = CUBE_POS;
    let channels = gamma.len();
    let groups = mean.len() / channels;
    let group_partials = partials.shape(0) / groups;
    let mut mean_sum = 0.0f32;
    let mut var_sum = 0.0f32;
    for group in 0..groups {
        let (first, end) = (group * group_partials, (group + 1) * group_partials);
        let (shifted_sum, squares_sum) = sum_partials(partials, c, first, end);
        if UNIT_POS == 0 {
            let shifted_mean = shifted_sum / rows;
            let raw_var = squares_sum / rows - shifted_mean * shifted_mean;
            let var = select(raw_var > 0.0, raw_var, 0.0);
            let group_mean = f32::cast_from(x[c]) + shifted_mean;
            let inv = 1.0 / (var + epsilon).sqrt();
            let at = group * channels + c;
            mean[at] = group_mean;
            inv_std[at] = inv;
            scale[at] = gamma[c] * inv;
            mean_sum += group_mean;
            var_sum += var;
        }
    }
    if UNIT_POS == 0 {
        let count = groups as f32;
        let mut running = mean_sum / count;
        if shifted {
            running += shift[c];
        }
        running_mean_out[c] = running_mean[c] * (1.0 - momentum) + running * momentum;
        running_var_out[c] = running_var[c] * (1.0 - momentum) + var_sum / count * momentum;
    }
}

/// The forward: the shifted sums, then [`statistics_kernel`] on `[partials, x, γ, shift (or
/// anything when not `shifted`), running mean, running variance]`.
fn launch_statistics<R: CubeRuntime>(
    inputs: [CubeTensor<R>; 5],
    config: NormConfig,
    shifted: bool,
) -> [CubeTensor<R>; 5] {
    let [x, gamma, shift, running_mean, running_var] = inputs;
    let (client, device) = (x.client.clone(), x.device.clone());
    let [n, channels, h, w] = x.meta.shape().dims::<4>();
    let groups = config.groups;
    // The forward reads only `x`: `x` fills the unread `dy` slot, `γ` the unread per-channel ones.
    let unread = || gamma.clone();
    let partials = launch_sums([x.clone(), x.clone(), unread(), unread(), unread(), unread()], false, groups);
    let outputs: [CubeTensor<R>; 5] = std::array::from_fn(|i| {
        let len = if i < 3 { groups * channels } else { channels };
        empty_device_contiguous_dtype(client.clone(), device.clone(), Shape::new([len]), DType::F32)
    });
    let (cube_dim, cube_count) = per_channel_cubes(channels, 1);
    let x_dtype = x.dtype.into();
    let x = channels_last(x);
    let [gamma, shift, running_mean, running_var] =
        [gamma, shift, running_mean, running_var].map(into_contiguous);
    statistics_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        partials.into_tensor_arg(),
        x.into_tensor_arg(),
        gamma.into_tensor_arg(),
        shift.into_tensor_arg(),
        running_mean.into_tensor_arg(),
        running_var.into_tensor_arg(),
        outputs[0].clone().into_tensor_arg(),
        outputs[1].clone().into_tensor_arg(),
        outputs[2].clone().into_tensor_arg(),
        outputs[3].clone().into_tensor_arg(),
        outputs[4].clone().into_tensor_arg(),
        (n / groups * h * w) as f32,
        config.epsilon as f32,
        config.momentum as f32,
        shifted,
        x_dtype,
    );
    outputs
}

/// [`crate::train_ops::BatchNormOps::batch_norm_statistics`] on burn's CubeCL backends: the
/// shifted sums' partials (one kernel), then every per-channel result (one kernel); the
/// statistics `[G·C]`, the running averages `[C]`.
pub fn batch_norm_statistics<B, T: KernelTensor>(
    x: T,
    gamma: T,
    mean_shift: Option<T>,
    [running_mean, running_var]: [T; 2],
    config: NormConfig,
) -> NormStatistics<B>
where
    B: Backend<FloatTensorPrimitive = T>,
{
    let c = x.shape()[1];
    let shifted = mean_shift.is_some();
    let shift = mean_shift.unwrap_or_else(|| gamma.clone());
    let inputs = [x, gamma, shift, running_mean, running_var];
    let out = |len: usize| (Shape::new([len]), DType::F32);
    let launch = Box::new(move |t| launch_statistics(t, config, shifted));
    let [mean, inv_std, scale, running_mean, running_var] = custom_op_many::<T, 5, 5>(
        "bn_statistics",
        inputs,
        std::array::from_fn(|i| out(if i < 3 { config.groups * c } else { c })),
        launch,
    );
    NormStatistics { mean, inv_std, scale, running_mean, running_var }
}
