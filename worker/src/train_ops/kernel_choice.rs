//! `--kernels` as given ([`KernelChoice`]): a fixed set or `auto`, resolved per device (cuDNN's
//! convolutions where libcudnn loads), and whether a set can run on a device ([`check_kernels`]).

use super::Kernels;
use crate::device::DeviceChoice;

/// `--kernels` as given: a fixed set, or `auto`, the fastest set measured for the device kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum KernelChoice {
    /// [`Kernels::FAST_BF16_CUDNN`] launched directly with its step replayed (`+direct+graph`)
    /// on CUDA where libcudnn loads ([`Kernels::FAST_BF16`] without it), [`Kernels::FAST`] on
    /// the CPU (burn-flex has no bf16 GEMM worth having, and bf16 there only adds casts).
    #[default]
    Auto,
    /// [`KernelChoice::Auto`] with [`Kernels::direct_launch`] on CUDA (`auto+direct`).
    AutoDirect,
    /// [`KernelChoice::AutoDirect`] with [`Kernels::replay_step`] (`auto+direct+graph`).
    AutoGraph,
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
            (KernelChoice::Set(kernels), _) => return kernels,
            (_, DeviceChoice::Cpu) => return Kernels::FAST,
            _ => {}
        }
        let base = cudnn().map_or_else(
            |reason| {
                tracing::info!(%reason, "auto kernels: fast-bf16 (cuDNN's convolutions are faster where libcudnn loads)");
                Kernels::FAST_BF16
            },
            |_| Kernels::FAST_BF16_CUDNN,
        );
        let (direct_launch, replay_step) = match self {
            // The replayed step is the measured fastest with cuDNN's convolutions.
            KernelChoice::Auto => (base.cudnn_conv, base.cudnn_conv),
            KernelChoice::AutoDirect => (true, false),
            _ => (true, true),
        };
        Kernels { direct_launch, replay_step, ..base }
    }

    /// This choice with its operations launched without burn's fusion stream
    /// ([`Kernels::direct_launch`]); `auto` stays automatic for everything else.
    fn launched_directly(self) -> Self {
        match self {
            KernelChoice::Auto => KernelChoice::AutoDirect,
            KernelChoice::Set(kernels) => KernelChoice::Set(Kernels { direct_launch: true, ..kernels }),
            direct @ (KernelChoice::AutoDirect | KernelChoice::AutoGraph) => direct,
        }
    }

    /// This choice launched directly with its step recorded once and replayed
    /// ([`Kernels::replay_step`]).
    fn replayed(self) -> Self {
        match self.launched_directly() {
            KernelChoice::Set(kernels) => KernelChoice::Set(Kernels { replay_step: true, ..kernels }),
            _ => KernelChoice::AutoGraph,
        }
    }

    /// `auto`, or any kernel set as [`Kernels`] parses it, parts included (`worker bench`).
    pub fn parse_parts(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(KernelChoice::Auto),
            "auto+direct" => Ok(KernelChoice::AutoDirect),
            "auto+direct+graph" => Ok(KernelChoice::AutoGraph),
            _ => s.parse().map(KernelChoice::Set),
        }
    }
}

impl std::str::FromStr for KernelChoice {
    type Err = String;

    /// `auto`, `fast`, `fast-bf16`, `fast-bf16-cudnn` or `stock`, each optionally `+direct` or
    /// `+direct+graph`: the
    /// sets users choose between (the parts that make them are a benchmarking tool,
    /// [`KernelChoice::parse_parts`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rest, graph) = s.strip_suffix("+graph").map_or((s, false), |set| (set, true));
        let (set, direct) = rest.strip_suffix("+direct").map_or((rest, false), |set| (set, true));
        if graph && !direct {
            return Err(format!("{s:?}: +graph records the step as +direct launches it (+direct+graph)"));
        }
        let choice = match set {
            "auto" | "fast" | "fast-bf16" | "fast-bf16-cudnn" | "stock" => Self::parse_parts(set)?,
            _ => {
                return Err(format!(
                    "unknown kernels {s:?} (expected auto, fast, fast-bf16, fast-bf16-cudnn or stock, \
                     optionally +direct or +direct+graph; other parts joined by + are for `worker bench --kernels`)"
                ));
            }
        };
        Ok(match (direct, graph) {
            (_, true) => choice.replayed(),
            (true, false) => choice.launched_directly(),
            (false, false) => choice,
        })
    }
}

impl std::fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelChoice::Auto => f.write_str("auto"),
            KernelChoice::AutoDirect => f.write_str("auto+direct"),
            KernelChoice::AutoGraph => f.write_str("auto+direct+graph"),
            KernelChoice::Set(kernels) => kernels.fmt(f),
        }
    }
}

/// Whether `kernels` can run on `device`: the `cudnn` part needs a CUDA device and the cuDNN
/// library, which is loaded at run time; the `direct` part a CUDA device.
pub fn check_kernels(kernels: Kernels, device: DeviceChoice) -> Result<(), String> {
    if kernels.direct_launch && device == DeviceChoice::Cpu {
        return Err("kernel part direct: burn's fusion stream it leaves out exists on CUDA only".to_owned());
    }
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
    fn auto_replays_cudnn_steps_where_it_loads_bf16_activations_on_cuda_and_f32_on_the_cpu() {
        let auto: KernelChoice = "auto".parse().unwrap();
        assert_eq!(auto, KernelChoice::default());
        let loads = || Ok(91400);
        let missing = || Err("no libcudnn".to_owned());
        let replayed = Kernels { direct_launch: true, replay_step: true, ..Kernels::FAST_BF16_CUDNN };
        assert_eq!(auto.resolve(DeviceChoice::Cuda(1), loads), replayed);
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
            "wgrad+dgrad+bn+bf16+tconv+pool+xgemm+head"
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

    #[test]
    fn direct_launch_is_a_cuda_choice_of_any_set() {
        let direct_cudnn = Kernels { direct_launch: true, ..Kernels::FAST_BF16_CUDNN };
        assert_eq!("fast-bf16-cudnn+direct".parse(), Ok(KernelChoice::Set(direct_cudnn)));
        assert_eq!(
            direct_cudnn.to_string(),
            "wgrad+dgrad+bn+bf16+tconv+pool+cudnn+bimage+bnpool+head+direct"
        );
        assert_eq!(KernelChoice::parse_parts(&direct_cudnn.to_string()), Ok(KernelChoice::Set(direct_cudnn)));
        let auto: KernelChoice = "auto+direct".parse().unwrap();
        assert_eq!(
            (auto, auto.to_string().parse()),
            (KernelChoice::AutoDirect, Ok(KernelChoice::AutoDirect))
        );
        let (loads, missing) = (|| Ok(91400), || Err("no libcudnn".to_owned()));
        assert_eq!(auto.resolve(DeviceChoice::Cuda(0), loads), direct_cudnn);
        let fast_bf16 = auto.resolve(DeviceChoice::Cuda(0), missing);
        assert_eq!(fast_bf16, Kernels { direct_launch: true, ..Kernels::FAST_BF16 });
        assert_eq!(auto.resolve(DeviceChoice::Cpu, || panic!("not asked")), Kernels::FAST);
        let on_cpu = Kernels { direct_launch: true, ..Kernels::FAST };
        let err = check_kernels(on_cpu, DeviceChoice::Cpu).unwrap_err();
        assert!(err.contains("direct") && err.contains("CUDA only"), "{err}");
        for bad in ["direct", "fast+mconv+direct", "fast+direct+direct", "auto+cudnn"] {
            let err = bad.parse::<KernelChoice>().unwrap_err();
            assert!(err.contains("optionally +direct"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_replayed_step_is_a_direct_cuda_choice() {
        let graph = Kernels { direct_launch: true, replay_step: true, ..Kernels::FAST_BF16_CUDNN };
        assert_eq!("fast-bf16-cudnn+direct+graph".parse(), Ok(KernelChoice::Set(graph)));
        assert!(graph.to_string().ends_with("+cudnn+bimage+bnpool+head+direct+graph"), "{graph}");
        assert_eq!(KernelChoice::parse_parts(&graph.to_string()), Ok(KernelChoice::Set(graph)));
        let auto: KernelChoice = "auto+direct+graph".parse().unwrap();
        assert_eq!((auto, auto.to_string().parse()), (KernelChoice::AutoGraph, Ok(KernelChoice::AutoGraph)));
        assert_eq!(auto.resolve(DeviceChoice::Cuda(0), || Ok(91400)), graph);
        assert_eq!(auto.resolve(DeviceChoice::Cpu, || panic!("not asked")), Kernels::FAST);
        let err = "fast-bf16+graph".parse::<KernelChoice>().unwrap_err();
        assert!(err.contains("+direct+graph"), "{err}");
        let err = KernelChoice::parse_parts("fast-bf16+graph").unwrap_err();
        assert!(err.contains("needs the direct part"), "{err}");
        let err = check_kernels(graph, DeviceChoice::Cpu).unwrap_err();
        assert!(err.contains("CUDA only"), "{err}");
    }
}
