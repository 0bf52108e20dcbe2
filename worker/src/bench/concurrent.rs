//! Several jobs trained at once by threads of one process, each with its own model, optimizer
//! and stream ([`bench_concurrent`]): what that many worker slots on one device get together.

use std::sync::{Arc, Barrier};
use std::time::Instant;

use burn::prelude::*;

use super::StepBenchConfig;
use super::trainee::Trainee;
use crate::backend::CpuBackend;
use crate::device::{DeviceChoice, panic_message};
use crate::train_ops::TrainBackend;
use crate::training::TrainError;

/// Aggregate training images per second of `jobs` threads each stepping its own job
/// (`config.fuse` models trained as one step, `config`'s batch, kernels and variant) with no
/// sync between steps, timed from when all have warmed up (`config.warmup` steps each) until
/// the last has run `config.steps` more: worker slots that each train a fused group.
pub fn bench_concurrent(
    device: DeviceChoice,
    config: StepBenchConfig,
    jobs: usize,
) -> Result<f64, TrainError> {
    if jobs == 0 || config.steps == 0 || config.fuse == 0 {
        return Err(TrainError::InvalidJob(
            "concurrent jobs, steps and fused models must be at least 1".into(),
        ));
    }
    crate::train_ops::check_kernels(config.kernels, device)
        .map_err(|reason| TrainError::Device(format!("{device}: {reason}")))?;
    match device {
        DeviceChoice::Cpu => run::<CpuBackend>(Default::default(), config, jobs),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(i) => match config.kernels.direct_launch {
            false => run::<crate::backend::CudaBackend>(burn_cuda::CudaDevice::new(i), config, jobs),
            true => run::<crate::backend::CudaDirectBackend>(burn_cuda::CudaDevice::new(i), config, jobs),
        },
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda(_) => Err(TrainError::Device("built without the `cuda` feature".into())),
    }
}

fn run<B: TrainBackend>(device: B::Device, config: StepBenchConfig, jobs: usize) -> Result<f64, TrainError> {
    // Every thread reaches the barrier, a failed one too, so none waits forever.
    let ready = Arc::new(Barrier::new(jobs + 1));
    let threads: Vec<_> = (0..jobs)
        .map(|job| {
            let (device, config, ready) = (device.clone(), config.clone(), ready.clone());
            std::thread::spawn(move || {
                let warm = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    warm_up::<B>(&device, &config, job as u64)
                }))
                .unwrap_or_else(|p| Err(TrainError::Device(panic_message(p.as_ref()))));
                ready.wait();
                let (mut trainee, images, labels) = warm?;
                for _ in 0..config.steps {
                    (trainee, _, _) = trainee.step(&images, &labels, config.variant)?;
                }
                B::sync(&device).map_err(|e| TrainError::Device(e.to_string()))
            })
        })
        .collect();
    ready.wait();
    let started = Instant::now();
    for thread in threads {
        thread.join().map_err(|p| TrainError::Device(panic_message(p.as_ref())))??;
    }
    let images = (jobs * config.steps * config.batch_size * config.fuse) as f64;
    Ok(images / started.elapsed().as_secs_f64().max(1e-12))
}

/// The job (or fused group) of thread `seed` after `config.warmup` steps, and the batch it
/// trains on.
type Warm<B> = (Trainee<B>, Tensor<B, 4>, Tensor<B, 1, Int>);

fn warm_up<B: TrainBackend>(
    device: &B::Device,
    config: &StepBenchConfig,
    seed: u64,
) -> Result<Warm<B>, TrainError> {
    let models = super::bench_models::<B>(config, seed, device);
    let mut trainee =
        Trainee::new(models, config.kernels).map_err(|e| TrainError::InvalidJob(e.to_string()))?;
    let (images, labels) = super::bench_batch::<B>(config.batch_size, seed, device);
    for _ in 0..config.warmup {
        (trainee, _, _) = trainee.step(&images, &labels, config.variant)?;
    }
    B::sync(device).map_err(|e| TrainError::Device(e.to_string()))?;
    Ok((trainee, images, labels))
}
