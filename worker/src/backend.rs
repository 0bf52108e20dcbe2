//! The training backends and one long-lived [`JobRunner`] per device.

use std::sync::Arc;

use burn::backend::{Autodiff, Flex};

use crate::data::Cifar10;
use crate::device::DeviceChoice;
#[cfg(feature = "cuda")]
use crate::device::{cuda_devices, panic_message};
use crate::training::{CnnRunner, JobRunner, RunnerConfig, TrainError};

/// CPU training backend: burn's pure-Rust `flex` with autodiff.
pub type CpuBackend = Autodiff<Flex>;
/// CUDA training backend: burn-cuda (fusion + autotune) with autodiff.
#[cfg(feature = "cuda")]
pub type CudaBackend = Autodiff<burn_cuda::Cuda>;
/// CUDA training backend without burn's fusion stream (the `direct` kernel part): burn's CubeCL
/// backend with autodiff.
#[cfg(feature = "cuda")]
pub type CudaDirectBackend = Autodiff<crate::train_ops::CudaDirect>;

/// Creates the device, uploads `data` to it once and returns a runner that trains job after
/// job there, with the default kernels for the device (`--kernels auto`).
pub fn open_runner(device: DeviceChoice, data: Arc<Cifar10>) -> Result<Box<dyn JobRunner>, TrainError> {
    let kernels = crate::train_ops::KernelChoice::Auto.for_device(device);
    open_runner_with(device, data, RunnerConfig { kernels, ..RunnerConfig::default() })
}

/// [`open_runner`] with explicit runner settings.
pub fn open_runner_with(
    device: DeviceChoice,
    data: Arc<Cifar10>,
    config: RunnerConfig,
) -> Result<Box<dyn JobRunner>, TrainError> {
    crate::train_ops::check_kernels(config.kernels, device)
        .map_err(|reason| TrainError::Device(format!("{device}: {reason}")))?;
    match device {
        DeviceChoice::Cpu => {
            let runner = CnnRunner::<CpuBackend>::new(Default::default(), device, &data, config);
            Ok(Box::new(runner))
        }
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(index) => {
            if let Err(reason) = cuda_devices() {
                return Err(TrainError::Device(format!("{device}: {reason}")));
            }
            let open = || -> Box<dyn JobRunner> {
                let cuda = burn_cuda::CudaDevice::new(index);
                match config.kernels.direct_launch {
                    false => Box::new(CnnRunner::<CudaBackend>::new(cuda, device, &data, config)),
                    true => Box::new(CnnRunner::<CudaDirectBackend>::new(cuda, device, &data, config)),
                }
            };
            let runner = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open))
                .map_err(|p| TrainError::Device(format!("{device}: {}", panic_message(p.as_ref()))))?;
            Ok(runner)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda(_) => {
            Err(TrainError::Device(format!("{device}: this worker was built without the `cuda` feature")))
        }
    }
}
