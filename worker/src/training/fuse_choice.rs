//! `--fuse` as given ([`FuseChoice`]): how many built-in jobs of one shape a slot trains as one
//! fused step, fixed or chosen per group from the jobs' batch size.

use crate::device::DeviceChoice;
use crate::train_ops::Kernels;

/// Images one fused step holds under `auto`: on an H200 with cuDNN's grouped convolutions, 8 jobs
/// of 128 trained at 4.03× one job's rate (4 of 128: 3.26×).
pub const AUTO_IMAGES_PER_STEP: u32 = 1024;

/// Jobs of this batch size or more train alone under `auto`: one batch-512 job fills an H200
/// (4 fused batch-512 jobs ran at 0.95× one job).
pub const AUTO_ALONE_FROM_BATCH: u32 = 512;

/// Most jobs in one fused step under `auto`.
pub const AUTO_MAX_JOBS: u32 = 8;

/// `--fuse`: a fixed group size, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FuseChoice {
    /// Where the runner's fused step is the measured fast one (CUDA with cuDNN's convolutions):
    /// jobs of a batch below [`AUTO_ALONE_FROM_BATCH`] in groups of up to
    /// [`AUTO_IMAGES_PER_STEP`] images ([`AUTO_MAX_JOBS`] jobs at most); anything else one job
    /// at a time.
    #[default]
    Auto,
    /// Up to this many jobs a step on any device (1: one job at a time).
    Fixed(u32),
}

impl FuseChoice {
    /// The most jobs a slot whose runner trains on `device` with `kernels` puts in one step
    /// when the group's first job has `batch_size` images a step.
    pub fn group_size(self, batch_size: u32, device: DeviceChoice, kernels: Kernels) -> u32 {
        match self {
            FuseChoice::Fixed(k) => k.max(1),
            FuseChoice::Auto => {
                let fast_fused = matches!(device, DeviceChoice::Cuda(_)) && kernels.cudnn_conv;
                if !fast_fused || batch_size == 0 || batch_size >= AUTO_ALONE_FROM_BATCH {
                    1
                } else {
                    (AUTO_IMAGES_PER_STEP / batch_size).clamp(1, AUTO_MAX_JOBS)
                }
            }
        }
    }
}

impl std::str::FromStr for FuseChoice {
    type Err = String;

    /// `auto` or a whole number of jobs, at least 1.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(FuseChoice::Auto);
        }
        match s.parse::<u32>() {
            Ok(0) => Err("--fuse 0: at least one job a step (1 trains one job at a time)".to_owned()),
            Ok(k) => Ok(FuseChoice::Fixed(k)),
            Err(_) => Err(format!("--fuse {s:?}: expected auto or a number of jobs (1, 2, …)")),
        }
    }
}

impl std::fmt::Display for FuseChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FuseChoice::Auto => f.write_str("auto"),
            FuseChoice::Fixed(k) => write!(f, "{k}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_groups_small_batches_on_cuda_with_cudnn_only() {
        let (cuda, cudnn) = (DeviceChoice::Cuda(0), Kernels::FAST_BF16_CUDNN);
        let auto = FuseChoice::default();
        assert_eq!(auto, FuseChoice::Auto);
        let sizes: Vec<u32> = [32, 64, 128, 256, 384, 511, 512, 1024]
            .iter()
            .map(|&b| auto.group_size(b, cuda, cudnn))
            .collect();
        assert_eq!(sizes, [8, 8, 8, 4, 2, 2, 1, 1]);
        assert_eq!(auto.group_size(128, DeviceChoice::Cpu, Kernels::FAST), 1);
        assert_eq!(
            auto.group_size(128, cuda, Kernels::FAST_BF16),
            1,
            "batched-GEMM fusion is not the fast one"
        );
        assert_eq!(auto.group_size(0, cuda, cudnn), 1);
    }

    #[test]
    fn a_fixed_size_holds_everywhere() {
        for device in [DeviceChoice::Cpu, DeviceChoice::Cuda(1)] {
            assert_eq!(FuseChoice::Fixed(5).group_size(512, device, Kernels::FAST), 5);
            assert_eq!(FuseChoice::Fixed(1).group_size(64, device, Kernels::FAST_BF16_CUDNN), 1);
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
