//! `--kernels` as given ([`KernelChoice`]): a fixed set or `auto`, resolved per device (cuDNN's
//! convolutions where libcudnn loads), and whether a set can run on a device ([`check_kernels`]).

use super::Kernels;
use crate::device::DeviceChoice;

/// `--kernels` as given: a fixed set, or `auto`, the fastest set measured for the device kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum KernelChoice {
    /// [`Kernels::FAST_BF16_CUDNN`] on CUDA where libcudnn loads ([`Kernels::FAST_BF16`]
    /// without it), [`Kernels::FAST`] on the CPU (burn-flex has no bf16 GEMM worth having, and
    /// bf16 there only adds casts).
    #[default]
    Auto,
    /// This set on every device.
    Set(Kernels),
}

impl KernelChoice {
    /// The kernels a runner on `device` uses.
    pub fn for_device(self, device: DeviceChoice) -> Kernels {
        self.resolve(device, cudnn_version)
    }

    /// [`KernelChoice::for_device`] with `cudnn` telling whether libcudnn loads (its version,
    /// or why not); asked only when the answer matters.
    fn resolve(self, device: DeviceChoice, cudnn: impl FnOnce() -> Result<usize, String>) -> Kernels {
        match (self, device) {
            (KernelChoice::Set(kernels), _) => kernels,
            (KernelChoice::Auto, DeviceChoice::Cuda(_)) => match cudnn() {
                Ok(_) => Kernels::FAST_BF16_CUDNN,
                Err(reason) => {
                    tracing::info!(%reason, "auto kernels: fast-bf16 (cuDNN's convolutions are faster where libcudnn loads)");
                    Kernels::FAST_BF16
                }
            },
            (KernelChoice::Auto, DeviceChoice::Cpu) => Kernels::FAST,
        }
    }

    /// `auto`, or any kernel set as [`Kernels`] parses it, parts included (`worker bench`).
    pub fn parse_parts(s: &str) -> Result<Self, String> {
        if s == "auto" { Ok(KernelChoice::Auto) } else { s.parse().map(KernelChoice::Set) }
    }
}

impl std::str::FromStr for KernelChoice {
    type Err = String;

    /// `auto`, `fast`, `fast-bf16` or `stock`: the sets users choose between (the parts that
    /// make them are a benchmarking tool, [`KernelChoice::parse_parts`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" | "fast" | "fast-bf16" | "fast-bf16-cudnn" | "stock" => Self::parse_parts(s),
            _ => Err(format!(
                "unknown kernels {s:?} (expected auto, fast, fast-bf16, fast-bf16-cudnn or stock; parts joined \
                 by + are for `worker bench --kernels`)"
            )),
        }
    }
}

impl std::fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelChoice::Auto => f.write_str("auto"),
            KernelChoice::Set(kernels) => kernels.fmt(f),
        }
    }
}

/// Whether `kernels` can run on `device`: the `cudnn` part needs a CUDA device and the cuDNN
/// library, which is loaded at run time.
pub fn check_kernels(kernels: Kernels, device: DeviceChoice) -> Result<(), String> {
    if !kernels.cudnn_conv {
        return Ok(());
    }
    match device {
        DeviceChoice::Cuda(_) => cudnn_version()
            .map(|version| tracing::info!(version, "cuDNN runs the bf16 convolutions"))
            .map_err(|reason| format!("kernel part cudnn: {reason}")),
        DeviceChoice::Cpu => Err("kernel part cudnn: cuDNN runs on CUDA devices only".to_owned()),
    }
}

/// libcudnn's version where it loads, or why it does not.
fn cudnn_version() -> Result<usize, String> {
    #[cfg(feature = "cuda")]
    return super::conv::cudnn_library_version();
    #[cfg(not(feature = "cuda"))]
    Err("this build has no CUDA backend".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_cudnn_where_it_loads_bf16_activations_on_cuda_and_f32_on_the_cpu() {
        let auto: KernelChoice = "auto".parse().unwrap();
        assert_eq!(auto, KernelChoice::default());
        let loads = || Ok(91400);
        let missing = || Err("no libcudnn".to_owned());
        assert_eq!(auto.resolve(DeviceChoice::Cuda(1), loads), Kernels::FAST_BF16_CUDNN);
        assert_eq!(auto.resolve(DeviceChoice::Cuda(1), missing), Kernels::FAST_BF16);
        let never = || -> Result<usize, String> { panic!("the CPU does not ask for cuDNN") };
        assert_eq!(auto.resolve(DeviceChoice::Cpu, never), Kernels::FAST);
        assert_eq!(auto.for_device(DeviceChoice::Cpu), Kernels::FAST);
        let set = KernelChoice::Set(Kernels::FAST_BF16);
        assert_eq!(set.resolve(DeviceChoice::Cuda(0), never), Kernels::FAST_BF16);
        let stock: KernelChoice = "stock".parse().unwrap();
        for device in [DeviceChoice::Cuda(0), DeviceChoice::Cpu] {
            assert_eq!(stock.for_device(device), Kernels::STOCK);
        }
        assert_eq!(auto.to_string(), "auto");
        assert_eq!(
            "fast-bf16".parse::<KernelChoice>().unwrap().to_string(),
            "wgrad+dgrad+bn+bf16+tconv+pool+xgemm"
        );
        let err = KernelChoice::parse_parts("bf16").unwrap_err();
        assert!(err.contains("need the bn part"), "{err}");
        let err = "wgrad+bn".parse::<KernelChoice>().unwrap_err();
        assert!(err.contains("worker bench"), "{err}");
        assert_eq!(
            KernelChoice::parse_parts("wgrad+bn").unwrap(),
            KernelChoice::Set("wgrad+bn".parse().unwrap())
        );
    }
}
