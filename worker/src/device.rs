//! Which devices a worker trains on (`--device auto|cuda|cpu`, `--gpus all|0,1`).
//!
//! CUDA detection (feature `cuda`): the driver library is loaded lazily by cudarc, which panics
//! when `libcuda` is absent. [`cuda_devices`] calls `cuInit`, `cuDeviceGetCount` and
//! `cuDeviceGetName` through cudarc's safe wrappers inside `catch_unwind` (with the panic hook
//! silenced for that moment) and caches the answer; any panic or driver error, or zero devices,
//! means "no CUDA". `auto` then falls back to the CPU with a warning; an explicit `cuda` fails.

use std::fmt;
use std::sync::OnceLock;

/// One device a runner can train on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceChoice {
    /// CUDA device by ordinal.
    Cuda(usize),
    /// burn's flex CPU backend.
    Cpu,
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(i) => {
                let name = CUDA_PROBE.get().and_then(|p| p.as_ref().ok()).and_then(|n| n.get(*i));
                match name {
                    Some(name) => write!(f, "cuda:{i} ({name})"),
                    None => write!(f, "cuda:{i}"),
                }
            }
        }
    }
}

/// Why the requested devices cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device kind {0:?} (expected auto, cuda or cpu)")]
    UnknownKind(String),
    #[error("invalid GPU list {0:?} (expected \"all\" or comma-separated ordinals like \"0,1\")")]
    InvalidGpuList(String),
    #[error("GPU {index} requested but only {count} CUDA device(s) present")]
    NoSuchGpu { index: usize, count: usize },
    #[error("CUDA requested but unavailable: {0}")]
    CudaUnavailable(String),
}

static CUDA_PROBE: OnceLock<Result<Vec<String>, String>> = OnceLock::new();

/// Names of the CUDA devices present, or why CUDA is unusable. Probed once per process.
pub fn cuda_devices() -> Result<Vec<String>, String> {
    CUDA_PROBE.get_or_init(probe_cuda).clone()
}

#[cfg(feature = "cuda")]
fn probe_cuda() -> Result<Vec<String>, String> {
    use cudarc::driver::result;
    let probe = || -> Result<Vec<String>, String> {
        result::init().map_err(|e| format!("cuInit failed: {e:?}"))?;
        let count = result::device::get_count().map_err(|e| format!("cuDeviceGetCount: {e:?}"))?;
        (0..count)
            .map(|i| {
                let dev = result::device::get(i).map_err(|e| format!("cuDeviceGet({i}): {e:?}"))?;
                Ok(result::device::get_name(dev).unwrap_or_else(|_| format!("CUDA device {i}")))
            })
            .collect()
    };
    let outcome = quiet_catch_unwind(probe)
        .unwrap_or_else(|msg| Err(format!("CUDA driver library could not be loaded ({msg})")));
    match outcome {
        Ok(names) if names.is_empty() => Err("no CUDA device found".to_owned()),
        other => other,
    }
}

/// Bytes free on CUDA device `index` now, or why that could not be read.
pub fn cuda_free_memory(index: usize) -> Result<u64, String> {
    FreeMemory::open(index)?.read()
}

/// Reads of a CUDA device's free memory with its primary context held open in between, so that
/// two reads differ only by what was allocated between them.
pub struct FreeMemory {
    #[cfg(feature = "cuda")]
    context: std::sync::Arc<cudarc::driver::CudaContext>,
}

impl FreeMemory {
    /// Opens CUDA device `index`'s primary context.
    #[cfg(feature = "cuda")]
    pub fn open(index: usize) -> Result<Self, String> {
        cuda_devices()?;
        let open =
            || cudarc::driver::CudaContext::new(index).map_err(|e| format!("CUDA device {index}: {e:?}"));
        let context = quiet_catch_unwind(open).unwrap_or_else(Err)?;
        Ok(FreeMemory { context })
    }

    /// Opens CUDA device `index`'s primary context.
    #[cfg(not(feature = "cuda"))]
    pub fn open(_index: usize) -> Result<Self, String> {
        Err("this worker was built without the `cuda` feature".to_owned())
    }

    /// Bytes free on the device now.
    pub fn read(&self) -> Result<u64, String> {
        #[cfg(feature = "cuda")]
        return self
            .context
            .mem_get_info()
            .map(|(free, _)| free as u64)
            .map_err(|e| format!("cuMemGetInfo: {e:?}"));
        #[cfg(not(feature = "cuda"))]
        Err("this worker was built without the `cuda` feature".to_owned())
    }
}

#[cfg(not(feature = "cuda"))]
fn probe_cuda() -> Result<Vec<String>, String> {
    Err("this worker was built without the `cuda` feature".to_owned())
}

/// Runs `f`, turning a panic into `Err(message)` without printing the panic to stderr.
/// The panic hook is process-global: call this while no other thread is expected to panic.
pub fn quiet_catch_unwind<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    result.map_err(|payload| panic_message(payload.as_ref()))
}

/// Text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// Parses `--gpus`: `"all"` → `None`, `"0,1"` → `Some([0, 1])` (sorted, deduplicated).
pub fn parse_gpu_list(gpus: &str) -> Result<Option<Vec<usize>>, DeviceError> {
    let trimmed = gpus.trim();
    if trimmed.eq_ignore_ascii_case("all") {
        return Ok(None);
    }
    let mut list = trimmed
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| DeviceError::InvalidGpuList(gpus.to_owned()))?;
    if list.is_empty() {
        return Err(DeviceError::InvalidGpuList(gpus.to_owned()));
    }
    list.sort_unstable();
    list.dedup();
    Ok(Some(list))
}

/// Picks ordinals from `count` present GPUs according to a parsed `--gpus` list.
pub fn select_gpus(list: Option<Vec<usize>>, count: usize) -> Result<Vec<usize>, DeviceError> {
    match list {
        None => Ok((0..count).collect()),
        Some(list) => match list.iter().find(|&&i| i >= count) {
            Some(&index) => Err(DeviceError::NoSuchGpu { index, count }),
            None => Ok(list),
        },
    }
}

/// The devices to train on. `requested`: `"auto"` (CUDA if present, else CPU with a warning),
/// `"cuda"` (error if absent) or `"cpu"`; `gpus`: `"all"` or `"0,1"` (ignored for the CPU).
pub fn available_devices(requested: &str, gpus: &str) -> Result<Vec<DeviceChoice>, DeviceError> {
    let kind = requested.trim().to_ascii_lowercase();
    if !matches!(kind.as_str(), "auto" | "cuda" | "cpu") {
        return Err(DeviceError::UnknownKind(requested.to_owned()));
    }
    let list = parse_gpu_list(gpus)?;
    if kind == "cpu" {
        return Ok(vec![DeviceChoice::Cpu]);
    }
    match cuda_devices() {
        Ok(names) => {
            let chosen = select_gpus(list, names.len())?;
            let devices: Vec<DeviceChoice> = chosen.into_iter().map(DeviceChoice::Cuda).collect();
            for d in &devices {
                tracing::info!(device = %d, "using CUDA device");
            }
            Ok(devices)
        }
        Err(reason) if kind == "auto" => {
            tracing::warn!(%reason, "no usable CUDA device; falling back to the CPU (burn flex), expect ~100x slower training");
            Ok(vec![DeviceChoice::Cpu])
        }
        Err(reason) => Err(DeviceError::CudaUnavailable(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_lists_parse() {
        assert_eq!(parse_gpu_list("all").unwrap(), None);
        assert_eq!(parse_gpu_list(" 1, 0,1").unwrap(), Some(vec![0, 1]));
        assert!(parse_gpu_list("0,x").is_err());
        assert!(parse_gpu_list("").is_err());
        assert_eq!(select_gpus(None, 2).unwrap(), vec![0, 1]);
        assert_eq!(select_gpus(Some(vec![3]), 2), Err(DeviceError::NoSuchGpu { index: 3, count: 2 }));
    }

    #[test]
    fn cpu_and_auto_resolve_without_a_gpu() {
        assert_eq!(available_devices("cpu", "all").unwrap(), vec![DeviceChoice::Cpu]);
        assert!(available_devices("tpu", "all").is_err());
        // This machine has no GPU: auto must fall back, cuda must fail, neither may panic.
        if cuda_devices().is_err() {
            assert_eq!(available_devices("auto", "all").unwrap(), vec![DeviceChoice::Cpu]);
            assert!(matches!(available_devices("cuda", "0"), Err(DeviceError::CudaUnavailable(_))));
        }
        assert_eq!(DeviceChoice::Cpu.to_string(), "cpu");
    }
}
