//! Throughput benchmarks behind `worker bench`: the training step (forward + backward + Adam)
//! on random data, and optionally one whole epoch through the real data pipeline. Prints lines
//! comparable with `bench/pytorch_peer.py`:
//! `burn device=cuda:0 kernels=fast batch=512 img_per_s=5123.4 step_ms=99.94 pipelined_img_per_s=5301.2`.
//! The same run times the validation forward and projects the experiment's protocol from both
//! rates ([`protocol`]).

mod concurrent;
pub mod protocol;
#[cfg(test)]
mod tests;
mod trainee;

use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::Distribution;
use sweep_proto::LossVariant;
use sweep_proto::domain::EpochMetrics;

use crate::backend::{CpuBackend, open_runner};
use crate::data::Cifar10;
use crate::device::{DeviceChoice, panic_message};
use crate::model::{Cnn, CnnConfig, seeded_model};
use crate::train_ops::{Kernels, TrainBackend};
use crate::training::{EpochSink, JobOutcome, TrainError, TrainJob};
pub use concurrent::bench_concurrent;
use protocol::Workload;
use trainee::Trainee;

/// What to time in the step benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct StepBenchConfig {
    pub batch_size: usize,
    pub steps: usize,
    pub warmup: usize,
    pub width_multiplier: f32,
    /// Images per BatchNorm group (`None`: the whole batch).
    pub bn_group: Option<usize>,
    /// Implementation of the conv / BatchNorm training nodes.
    pub kernels: Kernels,
    /// Whose trained loss the step differentiates ([`crate::loss::trained_loss`]).
    pub variant: LossVariant,
    /// Models trained as one fused step ([`FusedCnn`]; 1: a single job).
    pub fuse: usize,
    /// Images in each timed validation forward.
    pub eval_batch: usize,
    /// Sample the host side of the synced timed steps ([`crate::host_profile`]) and write the
    /// folded stacks here.
    pub host_profile: Option<std::path::PathBuf>,
}

/// Result of the step benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct StepBench {
    pub device: DeviceChoice,
    pub kernels: Kernels,
    pub variant: LossVariant,
    pub batch_size: usize,
    /// Models in each step; the images per second are all of theirs.
    pub fuse: usize,
    /// Timed steps (after warm-up).
    pub step_times: Vec<Duration>,
    /// Host time of each timed step: from its start (on an idle GPU) until the last operation
    /// of its optimizer update is queued, before the sync. When it is close to the step time,
    /// the host, not the GPU, sets the pace.
    pub host_times: Vec<Duration>,
    /// The host time of each timed step split into its phases: forward and loss, backward,
    /// optimizer update (each until its last operation is queued).
    pub host_phases: Vec<[Duration; 3]>,
    /// Time of the warm-up steps (includes burn's kernel autotune on a cold cache).
    pub warmup_time: Duration,
    /// Wall time of another `step_times.len()` steps queued back to back with a single sync at
    /// the end: what an epoch loop (which never syncs per step) gets.
    pub pipelined_time: Duration,
    /// Images in each validation batch (the epoch loop's).
    pub eval_batch: usize,
    /// Wall time of `step_times.len()` validation forwards (inference mode, one model) queued
    /// back to back with one sync at the end, after as many untimed ones as warm-up.
    pub eval_time: Duration,
    /// The summary of the host profile of the synced timed steps, when one was asked for.
    pub host_profile: Option<String>,
    /// Loss of the first and of the last step (summed over fused models). Every step trains on
    /// the same batch, so a path
    /// that learns drives the loss down; a fast path that does not (a wrong or non-finite
    /// gradient) shows here instead of only in a training run.
    pub first_loss: f32,
    pub last_loss: f32,
    /// Device memory the run took on CUDA: the free bytes before it less those after its steps
    /// (the memory pools keep what they reserved, so about its peak), beside what `--fuse
    /// auto` estimates for it ([`crate::training::runner_estimate`]).
    pub memory: Option<(u64, u64)>,
}

impl StepBench {
    /// Median of the timed steps.
    pub fn median_step(&self) -> Duration {
        median(&self.step_times)
    }

    /// Median host time of the timed steps.
    pub fn median_host(&self) -> Duration {
        median(&self.host_times)
    }

    /// Median host time of each phase (forward and loss, backward, optimizer).
    pub fn median_host_phases(&self) -> [Duration; 3] {
        std::array::from_fn(|i| median(&self.host_phases.iter().map(|p| p[i]).collect::<Vec<_>>()))
    }

    /// Images per second at the median step time.
    pub fn images_per_sec(&self) -> f64 {
        (self.fuse * self.batch_size) as f64 / self.median_step().as_secs_f64().max(1e-12)
    }

    /// Images per second with no sync between steps.
    pub fn pipelined_images_per_sec(&self) -> f64 {
        (self.fuse * self.batch_size * self.step_times.len()) as f64
            / self.pipelined_time.as_secs_f64().max(1e-12)
    }

    /// Images per second validated (one model).
    pub fn eval_images_per_sec(&self) -> f64 {
        (self.eval_batch * self.step_times.len()) as f64 / self.eval_time.as_secs_f64().max(1e-12)
    }

    /// The experiment's protocol on this device at the pipelined training and the validation
    /// rate, each job at this batch size and fused as here.
    pub fn protocol_time(&self) -> Option<Duration> {
        Workload::PROTOCOL.device_time(self.pipelined_images_per_sec(), self.eval_images_per_sec())
    }

    /// Whether the loss fell over the run (and stayed finite).
    pub fn learns(&self) -> bool {
        self.last_loss.is_finite() && self.last_loss < self.first_loss
    }

    /// The parseable summary line.
    pub fn line(&self) -> String {
        format!(
            "burn device={} kernels={} batch={} img_per_s={:.1} step_ms={:.2} host_ms={:.2} \
             pipelined_img_per_s={:.1} loss_first={:.4} loss_last={:.4} host_fwd_bwd_opt_ms={} fuse={} \
             eval_img_per_s={:.1} protocol_min={:.1} device_mib={} estimate_mib={} variant={}",
            short_name(&self.device),
            self.kernels,
            self.batch_size,
            self.images_per_sec(),
            self.median_step().as_secs_f64() * 1e3,
            self.median_host().as_secs_f64() * 1e3,
            self.pipelined_images_per_sec(),
            self.first_loss,
            self.last_loss,
            self.median_host_phases().map(|p| format!("{:.2}", p.as_secs_f64() * 1e3)).join("/"),
            self.fuse,
            self.eval_images_per_sec(),
            self.protocol_time().map_or(f64::NAN, |t| t.as_secs_f64() / 60.0),
            self.memory.map_or("na".to_owned(), |(used, _)| (used >> 20).to_string()),
            self.memory.map_or("na".to_owned(), |(_, estimate)| (estimate >> 20).to_string()),
            self.variant,
        )
    }
}

/// The median of `times` (zero for none).
fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// `cuda:0` / `cpu`, without the device's marketing name (no spaces, for parsing).
pub fn short_name(device: &DeviceChoice) -> String {
    match device {
        DeviceChoice::Cuda(i) => format!("cuda:{i}"),
        DeviceChoice::Cpu => "cpu".to_owned(),
    }
}

/// Times `warmup + steps` training steps on random data on `device`.
pub fn bench_train_step(device: DeviceChoice, config: StepBenchConfig) -> Result<StepBench, TrainError> {
    if config.batch_size == 0 || config.steps == 0 || config.fuse == 0 {
        return Err(TrainError::InvalidJob("batch size, steps and fused models must be at least 1".into()));
    }
    crate::train_ops::check_kernels(config.kernels, device)
        .map_err(|reason| TrainError::Device(format!("{device}: {reason}")))?;
    let run = move || match device {
        DeviceChoice::Cpu => time_steps::<CpuBackend>(&Default::default(), device, config),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(i) => time_cuda(i, device, config),
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda(_) => Err(TrainError::Device("built without the `cuda` feature".into())),
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .map_err(|p| TrainError::Device(format!("{device}: {}", panic_message(p.as_ref()))))?
}

/// [`time_steps`] on CUDA device `index` (with or without burn's fusion stream, as the kernels
/// say), with the device memory the run took ([`StepBench::memory`]).
#[cfg(feature = "cuda")]
fn time_cuda(index: usize, device: DeviceChoice, config: StepBenchConfig) -> Result<StepBench, TrainError> {
    let cuda = burn_cuda::CudaDevice::new(index);
    let probe = crate::device::FreeMemory::open(index).ok();
    let free = || probe.as_ref().and_then(|p| p.read().ok());
    let (batch, fuse) = (config.batch_size as u32, config.fuse as u32);
    let estimate = crate::training::runner_estimate(config.kernels, batch, config.width_multiplier, fuse);
    let before = free();
    let mut bench = match config.kernels.direct_launch {
        false => time_steps::<crate::backend::CudaBackend>(&cuda, device, config),
        true => time_steps::<crate::backend::CudaDirectBackend>(&cuda, device, config),
    }?;
    bench.memory = before.zip(free()).map(|(before, after)| (before.saturating_sub(after), estimate));
    Ok(bench)
}

fn time_steps<B: TrainBackend>(
    device: &B::Device,
    choice: DeviceChoice,
    config: StepBenchConfig,
) -> Result<StepBench, TrainError> {
    let sync = || B::sync(device).map_err(|e| TrainError::Device(e.to_string()));
    let models: Vec<Cnn<B>> = bench_models(&config, 0, device);
    let evaluated = models[0].valid();
    let mut trainee =
        Trainee::new(models, config.kernels).map_err(|e| TrainError::InvalidJob(e.to_string()))?;
    let n = config.batch_size;
    let (images, labels) = bench_batch::<B>(n, 0, device);
    sync()?;
    let warm_start = Instant::now();
    let mut step_times = Vec::with_capacity(config.steps);
    let mut host_times = Vec::with_capacity(config.steps);
    let mut host_phases = Vec::with_capacity(config.steps);
    let mut first_loss = f32::NAN;
    let mut profiler = None;
    for step in 0..config.warmup + config.steps {
        if step == config.warmup {
            tracing::info!(seconds = warm_start.elapsed().as_secs_f64(), "warm-up done");
            if config.host_profile.is_some() {
                profiler = Some(crate::host_profile::HostProfiler::start()?);
            }
        }
        let started = Instant::now();
        let (loss, phases);
        (trainee, loss, phases) = trainee.step(&images, &labels, config.variant)?;
        let queued = started.elapsed();
        if step == 0 {
            first_loss = loss.into_scalar().elem(); // outside the timed steps
        }
        sync()?;
        if step >= config.warmup {
            step_times.push(started.elapsed());
            host_times.push(queued);
            host_phases.push(phases);
        }
    }
    let host_profile = match (profiler, &config.host_profile) {
        (Some(profiler), Some(path)) => Some(profiler.finish(path)?),
        _ => None,
    };
    let warmup_time = warm_start.elapsed().saturating_sub(step_times.iter().sum());
    let pipelined = Instant::now();
    let mut last_loss = None;
    for _ in 0..config.steps {
        let loss;
        (trainee, loss, _) = trainee.step(&images, &labels, config.variant)?;
        last_loss = Some(loss);
    }
    sync()?;
    let pipelined_time = pipelined.elapsed();
    let last_loss = last_loss.map_or(f32::NAN, |loss| loss.into_scalar().elem());
    let eval_time = time_validation::<B>(&evaluated, config.eval_batch, config.warmup, config.steps, device)?;
    Ok(StepBench {
        device: choice,
        kernels: config.kernels,
        variant: config.variant,
        batch_size: n,
        fuse: config.fuse,
        step_times,
        host_times,
        host_phases,
        warmup_time,
        pipelined_time,
        eval_batch: config.eval_batch,
        eval_time,
        host_profile,
        first_loss,
        last_loss,
        memory: None,
    })
}

/// The `config.fuse` models of bench group `group` (seeds `group · fuse` on): `config`'s width,
/// kernels and BatchNorm groups.
fn bench_models<B: TrainBackend>(config: &StepBenchConfig, group: u64, device: &B::Device) -> Vec<Cnn<B>> {
    let cnn = CnnConfig::new().with_width_multiplier(config.width_multiplier);
    let fuse = config.fuse as u64;
    (group * fuse..(group + 1) * fuse)
        .map(|seed| {
            seeded_model::<B>(&cnn, seed, device).with_kernels(config.kernels).with_bn_group(config.bn_group)
        })
        .collect()
}

/// The fixed batch a bench job of seed `seed` trains on: `n` uniform random images and labels
/// cycling through the classes.
fn bench_batch<B: TrainBackend>(
    n: usize,
    seed: u64,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
    let images = crate::model::drawn(|| {
        Tensor::<B, 4>::random([n, 3, 32, 32], Distribution::Uniform(0.0, 1.0), device)
    });
    let labels: Vec<i64> = (0..n as i64).map(|i| (i * 7 + seed as i64) % 10).collect();
    (images, Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [n]), device))
}

/// Wall time of `steps` validation forwards of `batch` random images queued back to back, after
/// `warmup` untimed ones (their shapes autotune on a cold cache).
fn time_validation<B: TrainBackend>(
    model: &Cnn<B::InnerBackend>,
    batch: usize,
    warmup: usize,
    steps: usize,
    device: &B::Device,
) -> Result<Duration, TrainError> {
    let sync = || B::sync(device).map_err(|e| TrainError::Device(e.to_string()));
    let images = crate::model::drawn(|| {
        Tensor::<B::InnerBackend, 4>::random([batch, 3, 32, 32], Distribution::Uniform(0.0, 1.0), device)
    });
    let mut started = Instant::now();
    let mut last = None;
    for step in 0..warmup.max(1) + steps {
        if step == warmup.max(1) {
            sync()?;
            started = Instant::now();
        }
        last = Some(model.forward(images.clone()));
    }
    // Reading one value waits for the queue, as the epoch loop's totals do.
    let _: f32 = last.map_or(0.0, |logits| logits.slice([0..1, 0..1]).into_scalar().elem());
    Ok(started.elapsed())
}

struct LastEpoch(Option<EpochMetrics>);

impl EpochSink for LastEpoch {
    fn on_epoch(&mut self, metrics: EpochMetrics) {
        self.0 = Some(metrics);
    }
    fn should_stop(&self) -> bool {
        false
    }
}

/// Trains two real epochs of `variant` (all 50,000 images) through the runner and returns
/// the second one's metrics (`images_per_sec` is the training phase's throughput): the first
/// epoch pays for autotuning the shapes the step benchmark never sees (the last, partial batch
/// and the validation batches).
pub fn bench_epoch(
    device: DeviceChoice,
    data: Arc<Cifar10>,
    (batch_size, width_multiplier): (u32, f32),
    variant: LossVariant,
) -> Result<EpochMetrics, TrainError> {
    let mut runner = open_runner(device, data)?;
    let mut job = TrainJob::new(variant, 0, 2, batch_size);
    job.data.width_multiplier = width_multiplier;
    let mut sink = LastEpoch(None);
    match runner.run(&job, &mut sink)? {
        JobOutcome::Completed { .. } => {}
        JobOutcome::Stopped { .. } => return Err(TrainError::Device("epoch bench stopped".into())),
    }
    sink.0.ok_or_else(|| TrainError::Device("no epoch metrics".into()))
}
