//! `--slots-per-gpu` as given ([`SlotChoice`]): how many jobs (or fused groups) each device
//! trains side by side, fixed or chosen from the device, its kernels and its free memory
//! ([`plan`]).

use tracing::{info, warn};

use super::Commands;
use crate::device::DeviceChoice;
use crate::train_ops::{KernelChoice, Kernels};
use crate::training::runner_estimate;

/// Slots a GPU gets under `auto` where they fit: three replayed batch-512 jobs side by side
/// trained 1.21× one job's images on an H100 and on an H200 (four: 1.19×), three fused groups of
/// 16 batch-64 jobs 1.10× one group.
pub const AUTO_SLOTS: u32 = 3;

/// The batch whose replayed step `auto` makes room for in every slot: the experiment's.
const AUTO_SLOT_BATCH: u32 = 512;

/// `--slots-per-gpu`: a fixed count, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlotChoice {
    /// [`AUTO_SLOTS`] on a GPU whose steps are replayed (`graph`), as many of them as fit its
    /// free memory with a batch-512 job and the data set each; one on the CPU, without replayed
    /// steps (the threads of a process share burn's fusion stream there) or where command jobs
    /// run (their programs' memory is unknown).
    #[default]
    Auto,
    /// This many slots on every device (at least one).
    Fixed(u32),
}

impl SlotChoice {
    /// The slots of `device` training with `kernels`, `free` bytes free on it before any runner
    /// started, each runner holding `data_bytes` of data set.
    pub fn slots(
        self,
        device: DeviceChoice,
        kernels: Kernels,
        free: Option<u64>,
        data_bytes: u64,
        commands: Commands,
    ) -> u32 {
        match self {
            SlotChoice::Fixed(n) => n.max(1),
            SlotChoice::Auto => {
                let side_by_side = matches!(device, DeviceChoice::Cuda(_))
                    && kernels.replay_step
                    && commands == Commands::Refuse;
                let Some(free) = free.filter(|_| side_by_side) else { return 1 };
                let slot = data_bytes + runner_estimate(kernels, AUTO_SLOT_BATCH, 1.0, 1);
                u32::try_from(free / slot).unwrap_or(u32::MAX).clamp(1, AUTO_SLOTS)
            }
        }
    }
}

impl std::str::FromStr for SlotChoice {
    type Err = String;

    /// `auto` or a whole number of slots, at least 1.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let count = crate::auto_count::parse(s, "--slots-per-gpu", "slots", "at least one slot a device")?;
        Ok(count.map_or(SlotChoice::Auto, SlotChoice::Fixed))
    }
}

impl std::fmt::Display for SlotChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = match self {
            SlotChoice::Auto => None,
            SlotChoice::Fixed(n) => Some(*n),
        };
        crate::auto_count::write(count, f)
    }
}

/// A device's slots as the agent starts them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceSlots {
    pub device: DeviceChoice,
    /// The kernels its runners train with.
    pub kernels: Kernels,
    /// Device memory free before any runner started there (`None` on the CPU, or unknown).
    pub free: Option<u64>,
    pub slots: u32,
}

/// Every device's slots under `choice`, its memory read once before any runner starts.
pub fn plan(
    devices: &[DeviceChoice],
    choice: SlotChoice,
    kernels: KernelChoice,
    data_bytes: u64,
    commands: Commands,
) -> Vec<DeviceSlots> {
    devices
        .iter()
        .map(|&device| {
            let (kernels, free) = (kernels.for_device(device), free_memory(device));
            let slots = choice.slots(device, kernels, free, data_bytes, commands);
            info!(%device, slots, slots_per_gpu = %choice, "device slots");
            DeviceSlots { device, kernels, free, slots }
        })
        .collect()
}

/// Bytes free on `device` before its slots start, what `auto` sizes slots and fused groups by;
/// `None` on the CPU or where the driver does not say.
fn free_memory(device: DeviceChoice) -> Option<u64> {
    let DeviceChoice::Cuda(index) = device else { return None };
    match crate::device::cuda_free_memory(index) {
        Ok(free) => {
            info!(%device, free_mib = free >> 20, "device memory free");
            Some(free)
        }
        Err(reason) => {
            warn!(%device, %reason, "free device memory unknown: one slot, fused groups sized by batch alone");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn replayed() -> Kernels {
        Kernels { direct_launch: true, replay_step: true, ..Kernels::FAST_BF16_CUDNN }
    }

    #[test]
    fn auto_gives_a_large_gpu_three_slots_of_replayed_jobs() {
        let gpu = DeviceChoice::Cuda(0);
        let auto = SlotChoice::default();
        assert_eq!(auto, SlotChoice::Auto);
        let data = 200 << 20;
        assert_eq!(auto.slots(gpu, replayed(), Some(78 * GIB), data, Commands::Refuse), 3);
        // Each slot needs a batch-512 job's replayed step, the runtime, cuDNN's workspace and the data.
        let slot = data + runner_estimate(replayed(), 512, 1.0, 1);
        assert_eq!(auto.slots(gpu, replayed(), Some(3 * slot - 1), data, Commands::Refuse), 2);
        assert_eq!(auto.slots(gpu, replayed(), Some(slot - 1), data, Commands::Refuse), 1, "at least one");
    }

    #[test]
    fn auto_gives_one_slot_where_side_by_side_was_not_measured_fast_or_memory_is_unknown() {
        let (gpu, free, data) = (DeviceChoice::Cuda(0), Some(78 * GIB), 200 << 20);
        let auto = SlotChoice::Auto;
        assert_eq!(auto.slots(DeviceChoice::Cpu, replayed(), free, data, Commands::Refuse), 1);
        assert_eq!(
            auto.slots(gpu, Kernels::FAST_BF16_CUDNN, free, data, Commands::Refuse),
            1,
            "fusion stream"
        );
        assert_eq!(auto.slots(gpu, replayed(), None, data, Commands::Refuse), 1);
        for commands in [Commands::Allow, Commands::Only] {
            assert_eq!(auto.slots(gpu, replayed(), free, data, commands), 1, "{commands:?}");
        }
    }

    #[test]
    fn a_fixed_count_is_kept_on_any_device() {
        for device in [DeviceChoice::Cpu, DeviceChoice::Cuda(1)] {
            assert_eq!(SlotChoice::Fixed(4).slots(device, Kernels::FAST, None, 0, Commands::Allow), 4);
        }
    }

    #[test]
    fn the_flag_reads_auto_or_a_positive_count() {
        assert_eq!("auto".parse::<SlotChoice>(), Ok(SlotChoice::Auto));
        assert_eq!("3".parse::<SlotChoice>(), Ok(SlotChoice::Fixed(3)));
        let zero = "0".parse::<SlotChoice>().unwrap_err();
        assert!(zero.contains("at least one slot"), "{zero}");
        let word = "many".parse::<SlotChoice>().unwrap_err();
        assert!(word.contains("expected auto or a number"), "{word}");
        for choice in [SlotChoice::Auto, SlotChoice::Fixed(2)] {
            assert_eq!(choice.to_string().parse::<SlotChoice>(), Ok(choice));
        }
    }

    #[test]
    fn a_plan_of_cpu_devices_has_one_slot_each_under_auto() {
        let plan = plan(&[DeviceChoice::Cpu], SlotChoice::Auto, KernelChoice::default(), 0, Commands::Refuse);
        assert_eq!(plan.len(), 1);
        assert_eq!((plan[0].slots, plan[0].free), (1, None));
        assert_eq!(plan[0].kernels, Kernels::FAST);
    }
}
