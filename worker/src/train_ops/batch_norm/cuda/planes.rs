//! BatchNorm's second stages with the `psum` part: the channel sums' `[G·P, 2, C]` partials
//! ([`super::channel_sums`]) added up by one plane (warp) per group of the batch, each lane
//! taking every `PLANE_DIM`-th partial and the plane adding its lanes by shuffles.
//!
//! Without the part, a cube of 256 threads adds each of the two sums of each group in turn by a
//! shared-memory tree (eight barriers each) over 2·(P/G) partials: on an H100 those 18 launches
//! took 139 µs of a 3.8 ms step, 7–9 µs each for 0.5 MB of partials. Here the cube of a channel
//! runs its groups side by side, one plane each, and meets at one barrier (the forward's running
//! averages) or none (the backward).

use cubecl::prelude::*;

use super::statistics::{blend_running, finish_group};

/// Threads of a second-stage cube: eight 32-lane planes, one group of the batch each.
pub const CUBE_THREADS: usize = 256;

/// Planes of a cube, at most (a plane has 8 lanes or more on the runtimes CubeCL targets).
const MAX_PLANES: usize = CUBE_THREADS / 8;

/// `(Σ_p partials[p, 0, c], Σ_p partials[p, 1, c])` over the partials `p` in `first..end` of
/// `[P, 2, C]` partials, valid in every lane of the calling plane (all of whose lanes call it).
#[cube]
fn plane_partials(partials: &Tensor<f32>, c: usize, first: usize, end: usize) -> (f32, f32) {
    let channels = partials.shape(2);
    let lanes = PLANE_DIM as usize;
    let mut first_sum = 0.0f32;
    let mut second_sum = 0.0f32;
    let mut p = first + UNIT_POS_PLANE as usize;
    while p < end {
        first_sum += partials[2 * p * channels + c];
        second_sum += partials[(2 * p + 1) * channels + c];
        p += lanes;
    }
    (plane_sum(first_sum), plane_sum(second_sum))
}

/// The forward's second stage ([`super::statistics`]'s `statistics_kernel`, same arguments and
/// results) in a cube per channel `c`: plane `w` finishes the groups `w`, `w + planes`, …, its
/// first lane writing each group's mean, `1/√(σ² + ε)` and `γ·inv_std` and keeping the sums of
/// its groups' means and variances; after one barrier the cube's first thread blends the mean
/// over the groups into the running averages.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn statistics_planes_kernel<X: Float>(
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
    let planes = (CUBE_DIM / PLANE_DIM) as usize;
    let plane = PLANE_POS as usize;
    let mut mean_sum = 0.0f32;
    let mut var_sum = 0.0f32;
    let mut group = plane;
    while group < groups {
        let first = group * group_partials;
        let (shifted_sum, squares_sum) = plane_partials(partials, c, first, first + group_partials);
        if UNIT_POS_PLANE == 0 {
            let at = group * channels + c;
            let (group_mean, var) =
                finish_group(shifted_sum, squares_sum, x, gamma, mean, inv_std, scale, at, rows, epsilon);
            mean_sum += group_mean;
            var_sum += var;
        }
        group += planes;
    }
    let mut means = SharedMemory::<f32>::new(MAX_PLANES);
    let mut vars = SharedMemory::<f32>::new(MAX_PLANES);
    if UNIT_POS_PLANE == 0 {
        means[plane] = mean_sum;
        vars[plane] = var_sum;
    }
    sync_cube();
    if UNIT_POS == 0 {
        // In plane order, whatever the planes' timing: the same sum on every run.
        let mut total_mean = 0.0f32;
        let mut total_var = 0.0f32;
        for w in 0..planes {
            total_mean += means[w];
            total_var += vars[w];
        }
        blend_running(
            running_mean,
            running_var,
            running_mean_out,
            running_var_out,
            shift,
            c,
            total_mean,
            total_var,
            groups,
            momentum,
            shifted,
        );
    }
}

/// The backward's second stage (`finish_sums_kernel` of [`super::channel_sums`]): the `[G, 2,
/// C]` sums (`Σ g`, `Σ g·x̂` of each group) from the `[G·P, 2, C]` partials, in a cube per
/// channel whose plane `w` adds up the groups `w`, `w + planes`, ….
#[cube(launch)]
pub fn finish_sums_planes_kernel(partials: &Tensor<f32>, sums: &mut Tensor<f32>) {
    let c = CUBE_POS;
    let channels = partials.shape(2);
    let groups = sums.len() / (2 * channels);
    let group_partials = partials.shape(0) / groups;
    let planes = (CUBE_DIM / PLANE_DIM) as usize;
    let mut group = PLANE_POS as usize;
    while group < groups {
        let first = group * group_partials;
        let (sum_g, sum_g_x_hat) = plane_partials(partials, c, first, first + group_partials);
        if UNIT_POS_PLANE == 0 {
            sums[2 * group * channels + c] = sum_g;
            sums[(2 * group + 1) * channels + c] = sum_g_x_hat;
        }
        group += planes;
    }
}

/// A cube of [`CUBE_THREADS`] threads per channel.
pub fn per_channel_planes(channels: usize) -> (CubeDim, CubeCount) {
    (CubeDim::new_1d(CUBE_THREADS as u32), CubeCount::Static(channels as u32, 1, 1))
}
