//! `--fuse` as given ([`FuseChoice`]): how many built-in jobs of one shape a slot trains as one
//! fused step, fixed or chosen per group from the jobs' batch size and the device memory the
//! slot may use ([`FuseTarget`], [`step_bytes`]).

use crate::device::DeviceChoice;
use crate::model::{CONVS_PER_BLOCK, block_filters, keras_param_count};
use crate::train_ops::Kernels;
use crate::train_ops::conv::CUDNN_WORKSPACE_BYTES;

/// Images one fused step holds under `auto`: on an H200 with cuDNN's grouped convolutions, 8 jobs
/// of 128 trained at 4.03× one job's rate op by op (4 of 128: 3.26×), 16 of 64 at 1.63× one
/// replayed job (8 of 64: 1.37×).
pub const AUTO_IMAGES_PER_STEP: u32 = 1024;

/// Jobs of this batch size or more train alone under `auto`: one batch-512 job fills an H200
/// (4 fused batch-512 jobs ran at 0.95× one job).
pub const AUTO_ALONE_FROM_BATCH: u32 = 512;

/// [`AUTO_ALONE_FROM_BATCH`] where steps are replayed (`graph`): a replayed batch-256 job beat
/// 2 and 4 of them fused (0.74×, 0.89× on an H200; 8 of 128 still gained 1.22×).
pub const AUTO_ALONE_FROM_BATCH_REPLAYED: u32 = 256;

/// Most jobs in one fused step under `auto`.
pub const AUTO_MAX_JOBS: u32 = 16;

/// What a slot's group size depends on besides the jobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FuseTarget {
    /// The device the slot's runner trains on.
    pub device: DeviceChoice,
    /// The kernels it trains with.
    pub kernels: Kernels,
    /// Device memory the slot's training steps may take (its share of what was free when the
    /// worker started, less its data set and [`runner_bytes`]); `None`: unknown, no cap.
    pub step_memory: Option<u64>,
}

impl FuseTarget {
    /// The target of one of `slots` slots of `device`, on which `free` bytes were free before
    /// any runner started there; each slot's runner holds its own `data_bytes` of data set and
    /// [`runner_bytes`].
    pub fn sharing(
        device: DeviceChoice,
        kernels: Kernels,
        free: Option<u64>,
        slots: u32,
        data_bytes: u64,
    ) -> Self {
        let step_memory = free
            .map(|free| (free / u64::from(slots.max(1))).saturating_sub(data_bytes + runner_bytes(kernels)));
        FuseTarget { device, kernels, step_memory }
    }
}

/// Device memory a GPU runner holds whatever it trains: the kernels' device code (CubeCL's,
/// cuBLAS's, cuDNN's) and the pools' first pages. A batch-512 job on an H100 took 384–414 MiB
/// beyond its steps' estimate and cuDNN's workspace.
pub const RUNTIME_BYTES: u64 = 512 << 20;

/// Device memory a GPU runner with `kernels` holds besides its steps and data: [`RUNTIME_BYTES`]
/// and, where cuDNN runs the convolutions, its workspace.
pub fn runner_bytes(kernels: Kernels) -> u64 {
    RUNTIME_BYTES + if kernels.cudnn_conv { CUDNN_WORKSPACE_BYTES } else { 0 }
}

/// Device memory a GPU runner holds while `fuse` jobs of `batch_size` train in one step:
/// their steps, [`runner_bytes`] and, for a single job's step replayed as a graph, the buffers the
/// graph keeps besides the pools' (half a step's estimate; 758–764 MiB measured at batch 512).
pub fn runner_estimate(kernels: Kernels, batch_size: u32, width_multiplier: f32, fuse: u32) -> u64 {
    let step = step_bytes(batch_size, width_multiplier);
    let graph = if kernels.replay_step && fuse <= 1 { step / 2 } else { 0 };
    u64::from(fuse.max(1)) * step + runner_bytes(kernels) + graph
}

/// Device memory a training step of one job holds, estimated from the architecture: per image
/// the nine convolutions' and BatchNorm + ReLU outputs kept for the backward (bf16), the largest
/// layer's two gradients in flight (f32) and the pooled maps; per job the parameters with their
/// gradients, moments and bf16 copies. Doubled for the memory pools' rounding and what the
/// count leaves out.
pub fn step_bytes(batch_size: u32, width_multiplier: f32) -> u64 {
    let [f1, f2, f3] = block_filters(width_multiplier).map(|f| f as u64);
    let maps = [(32 * 32, f1), (16 * 16, f2), (8 * 8, f3)];
    let kept: u64 = maps.iter().map(|(pixels, f)| CONVS_PER_BLOCK as u64 * pixels * f * 2 * 2).sum();
    let in_flight = 2 * 32 * 32 * f1 * 4;
    let pooled = (16 * 16 * f1 + 8 * 8 * f2) * 2;
    let per_image = kept + in_flight + pooled;
    let per_job = keras_param_count(width_multiplier).trainable as u64 * (4 * 4 + 2);
    2 * (u64::from(batch_size) * per_image + per_job)
}

/// `--fuse`: a fixed group size, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FuseChoice {
    /// Where the runner's fused step is the measured fast one (CUDA with cuDNN's convolutions):
    /// jobs of a batch below [`AUTO_ALONE_FROM_BATCH`] (with replayed steps
    /// [`AUTO_ALONE_FROM_BATCH_REPLAYED`]) in groups of up to
    /// [`AUTO_IMAGES_PER_STEP`] images ([`AUTO_MAX_JOBS`] jobs at most) whose steps fit the
    /// slot's memory ([`step_bytes`]); anything else one job at a time.
    #[default]
    Auto,
    /// Up to this many jobs a step on any device, whatever their memory (1: one job at a time).
    Fixed(u32),
}

impl FuseChoice {
    /// The most jobs a slot training on `target` puts in one step when the group's first job
    /// has `batch_size` images a step at `width_multiplier`.
    pub fn group_size(self, batch_size: u32, width_multiplier: f32, target: FuseTarget) -> u32 {
        match self {
            FuseChoice::Fixed(k) => k.max(1),
            FuseChoice::Auto => auto_size(batch_size, width_multiplier, target),
        }
    }
}

/// [`FuseChoice::Auto`]'s group size.
fn auto_size(batch_size: u32, width_multiplier: f32, target: FuseTarget) -> u32 {
    let fast_fused = matches!(target.device, DeviceChoice::Cuda(_)) && target.kernels.cudnn_conv;
    let alone_from =
        if target.kernels.replay_step { AUTO_ALONE_FROM_BATCH_REPLAYED } else { AUTO_ALONE_FROM_BATCH };
    if !fast_fused || batch_size == 0 || batch_size >= alone_from {
        return 1;
    }
    let by_batch = (AUTO_IMAGES_PER_STEP / batch_size).clamp(1, AUTO_MAX_JOBS);
    let fitting =
        target.step_memory.map_or(u64::MAX, |memory| memory / step_bytes(batch_size, width_multiplier));
    by_batch.min(u32::try_from(fitting).unwrap_or(u32::MAX)).max(1)
}

impl std::str::FromStr for FuseChoice {
    type Err = String;

    /// `auto` or a whole number of jobs, at least 1.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let zero = "at least one job a step (1 trains one job at a time)";
        let count = crate::auto_count::parse(s, "--fuse", "jobs", zero)?;
        Ok(count.map_or(FuseChoice::Auto, FuseChoice::Fixed))
    }
}

impl std::fmt::Display for FuseChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = match self {
            FuseChoice::Auto => None,
            FuseChoice::Fixed(k) => Some(*k),
        };
        crate::auto_count::write(count, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(device: DeviceChoice, kernels: Kernels) -> FuseTarget {
        FuseTarget { device, kernels, step_memory: None }
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn auto_groups_small_batches_on_cuda_with_cudnn_only() {
        let cuda = target(DeviceChoice::Cuda(0), Kernels::FAST_BF16_CUDNN);
        let auto = FuseChoice::default();
        assert_eq!(auto, FuseChoice::Auto);
        let sizes: Vec<u32> =
            [32, 64, 128, 256, 384, 511, 512, 1024].iter().map(|&b| auto.group_size(b, 1.0, cuda)).collect();
        assert_eq!(sizes, [16, 16, 8, 4, 2, 2, 1, 1]);
        let replayed = target(
            DeviceChoice::Cuda(0),
            Kernels { direct_launch: true, replay_step: true, ..Kernels::FAST_BF16_CUDNN },
        );
        let sizes: Vec<u32> =
            [32, 64, 128, 255, 256, 512].iter().map(|&b| auto.group_size(b, 1.0, replayed)).collect();
        assert_eq!(sizes, [16, 16, 8, 4, 1, 1], "a replayed job of 256 or more trains alone");
        assert_eq!(auto.group_size(128, 1.0, target(DeviceChoice::Cpu, Kernels::FAST)), 1);
        assert_eq!(
            auto.group_size(128, 1.0, target(DeviceChoice::Cuda(0), Kernels::FAST_BF16)),
            1,
            "batched-GEMM fusion is not the fast one"
        );
        assert_eq!(auto.group_size(0, 1.0, cuda), 1);
    }

    #[test]
    fn auto_fits_the_group_in_the_slots_memory() {
        let slot = |gib: u64| FuseTarget {
            step_memory: Some(gib * GIB),
            ..target(DeviceChoice::Cuda(0), Kernels::FAST_BF16_CUDNN)
        };
        let auto = FuseChoice::Auto;
        // A whole H200's share: the batch rule decides.
        assert_eq!(auto.group_size(128, 1.0, slot(120)), 8);
        // A 128-image step at width 1 holds about half a GiB; at width 4 the maps take four
        // times that and the parameters sixteen.
        let (one, wide) = (step_bytes(128, 1.0), step_bytes(128, 4.0));
        assert!((GIB / 4..GIB).contains(&one), "one step at width 1: {one} bytes");
        assert!(wide > 4 * one && wide < 6 * one, "width 4: {wide} bytes against {one}");
        assert_eq!(auto.group_size(128, 4.0, slot(120)), 8);
        assert_eq!(auto.group_size(128, 4.0, FuseTarget { step_memory: Some(3 * wide + 1), ..slot(0) }), 3);
        // Too little for even one: the job still trains, alone.
        assert_eq!(auto.group_size(64, 1.0, slot(0)), 1);
    }

    #[test]
    fn a_runner_holds_its_steps_its_runtime_and_a_replayed_steps_buffers() {
        let step = step_bytes(512, 1.0);
        let eager = Kernels { direct_launch: true, ..Kernels::FAST_BF16_CUDNN };
        let replayed = Kernels { replay_step: true, ..eager };
        let base = RUNTIME_BYTES + CUDNN_WORKSPACE_BYTES;
        assert_eq!(runner_estimate(eager, 512, 1.0, 1), step + base);
        assert_eq!(runner_estimate(replayed, 512, 1.0, 1), step + base + step / 2);
        // A fused step is not replayed: no graph's buffers.
        assert_eq!(runner_estimate(replayed, 512, 1.0, 4), 4 * step + base);
        // What a batch-512 job took on an H100: 3,408 MiB op by op, 4,172 MiB replayed.
        assert!(runner_estimate(eager, 512, 1.0, 1) >= 3408 << 20);
        assert!(runner_estimate(replayed, 512, 1.0, 1) >= 4172 << 20);
    }

    #[test]
    fn slots_share_what_was_free_less_their_data_and_runtime() {
        let cuda = DeviceChoice::Cuda(0);
        let data = 737 << 20;
        let share = FuseTarget::sharing(cuda, Kernels::FAST_BF16_CUDNN, Some(80 * GIB), 2, data);
        assert_eq!(share.step_memory, Some(40 * GIB - data - RUNTIME_BYTES - CUDNN_WORKSPACE_BYTES));
        let no_cudnn = FuseTarget::sharing(cuda, Kernels::FAST_BF16, Some(80 * GIB), 2, data);
        assert_eq!(no_cudnn.step_memory, Some(40 * GIB - data - RUNTIME_BYTES));
        assert_eq!(
            FuseTarget::sharing(cuda, Kernels::FAST_BF16_CUDNN, Some(GIB), 4, data).step_memory,
            Some(0)
        );
        assert_eq!(FuseTarget::sharing(cuda, Kernels::FAST_BF16_CUDNN, None, 1, data).step_memory, None);
    }

    #[test]
    fn a_fixed_size_holds_everywhere() {
        for device in [DeviceChoice::Cpu, DeviceChoice::Cuda(1)] {
            assert_eq!(FuseChoice::Fixed(5).group_size(512, 1.0, target(device, Kernels::FAST)), 5);
            let tight = FuseTarget { step_memory: Some(0), ..target(device, Kernels::FAST_BF16_CUDNN) };
            assert_eq!(FuseChoice::Fixed(4).group_size(64, 1.0, tight), 4, "the user's size is kept");
            assert_eq!(FuseChoice::Fixed(1).group_size(64, 1.0, tight), 1);
        }
    }

    #[test]
    fn parses_auto_and_counts_and_refuses_the_rest() {
        assert_eq!("auto".parse(), Ok(FuseChoice::Auto));
        assert_eq!("4".parse(), Ok(FuseChoice::Fixed(4)));
        for bad in ["0", "-1", "four", "", "2.5"] {
            let err = bad.parse::<FuseChoice>().unwrap_err();
            assert!(err.contains("--fuse"), "{bad:?}: {err}");
        }
        for choice in [FuseChoice::Auto, FuseChoice::Fixed(3)] {
            assert_eq!(choice.to_string().parse(), Ok(choice));
        }
    }
}
