//! The explicit epoch loop and the [`JobRunner`] API the worker's job loop calls: one runner per
//! device, created once (data uploaded once), training job after job, reporting each epoch to
//! an [`EpochSink`] and polling it for cancellation between batches.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha12Rng;
use sweep_proto::LossVariant;
use sweep_proto::domain::{DataOptions, EpochMetrics, JobAssignment, MAX_WIDTH_MULTIPLIER};

use crate::augment::augment_batch;
use crate::checkpoint::{self, Checkpointing};
use crate::data::{Cifar10, DataError, DeviceDataset, DeviceSplit};
use crate::device::DeviceChoice;
use crate::loss::variant_loss;
use crate::model::{Cnn, CnnConfig, seeded_model};
use crate::train_ops::adam::FusedAdam;
use crate::train_ops::{Kernels, TrainBackend};

/// Adam β1 (Keras default).
pub const ADAM_BETA_1: f32 = 0.9;
/// Adam β2 (Keras default).
pub const ADAM_BETA_2: f32 = 0.999;
/// Adam ε (Keras default `K.epsilon()`).
pub const ADAM_EPSILON: f32 = 1e-7;

/// The experiment's optimizer: Adam with Keras's defaults, one fused update per step
/// ([`FusedAdam::init`]).
pub fn adam() -> FusedAdam {
    FusedAdam { beta_1: ADAM_BETA_1, beta_2: ADAM_BETA_2, epsilon: ADAM_EPSILON }
}

/// What training needs to know of a job: the run's description alone (the lease that a
/// coordinator's job comes with stays with the agent).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainJob {
    pub variant: LossVariant,
    /// Seed of the initial weights and of the data order.
    pub seed: u64,
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub data: DataOptions,
}

impl TrainJob {
    /// A job of `variant` at its own learning rate on the full data.
    pub fn new(variant: LossVariant, seed: u64, epochs: u32, batch_size: u32) -> Self {
        let learning_rate = variant.default_learning_rate();
        TrainJob { variant, seed, epochs, batch_size, learning_rate, data: DataOptions::default() }
    }
}

impl TryFrom<&JobAssignment> for TrainJob {
    type Error = sweep_proto::domain::UnknownVariant;
    /// A built-in job; a command job's label is no loss variant.
    fn try_from(a: &JobAssignment) -> Result<Self, Self::Error> {
        Ok(TrainJob {
            variant: a.variant.parse()?,
            seed: a.seed,
            epochs: a.epochs,
            batch_size: a.batch_size,
            learning_rate: a.learning_rate,
            data: a.data,
        })
    }
}

/// Receives the metrics of each finished epoch and answers cancellation polls.
pub trait EpochSink {
    /// Called as soon as an epoch (training + validation) has finished.
    fn on_epoch(&mut self, metrics: EpochMetrics);
    /// Polled before every batch; `true` makes the run return [`JobOutcome::Stopped`].
    fn should_stop(&self) -> bool;
    /// Called once per job, right after the first optimiser step has finished on the device.
    fn on_first_step(&mut self) {}
    /// Polled at the end of every epoch; `true` (a graceful stop: preemption, SIGTERM) saves a
    /// checkpoint of the finished epoch, whatever the interval, and returns
    /// [`JobOutcome::Stopped`].
    fn stop_after_epoch(&self) -> bool {
        false
    }
    /// Called when the run continues from a checkpoint taken after `epoch` (its epochs up to
    /// there are not trained or reported again).
    fn on_resumed(&mut self, epoch: u32) {
        let _ = epoch;
    }
}

/// How a job ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JobOutcome {
    /// Every epoch ran. `best_epoch` is 1-based (first epoch reaching `best_val_acc`).
    Completed { best_val_acc: f64, best_epoch: u32, epochs: u32 },
    /// [`EpochSink::should_stop`] asked to stop after `epochs_done` whole epochs.
    Stopped { epochs_done: u32 },
}

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("loss became non-finite in epoch {epoch}")]
    NonFiniteLoss { epoch: u32 },
    #[error("device error: {0}")]
    Device(String),
    #[error("invalid job: {0}")]
    InvalidJob(String),
    #[error(transparent)]
    HostProfile(#[from] crate::host_profile::HostProfileError),
}

/// Trains jobs on one device; created by [`crate::backend::open_runner`].
pub trait JobRunner: Send {
    /// Trains `job` to completion (or cancellation), synchronously.
    fn run(&mut self, job: &TrainJob, sink: &mut dyn EpochSink) -> Result<JobOutcome, TrainError> {
        self.run_with_checkpoints(job, None, sink)
    }
    /// [`JobRunner::run`], saving checkpoints as `checkpoints` says and continuing from its
    /// store's newest one for the job.
    fn run_with_checkpoints(
        &mut self,
        job: &TrainJob,
        checkpoints: Option<&Checkpointing>,
        sink: &mut dyn EpochSink,
    ) -> Result<JobOutcome, TrainError>;
    /// The device this runner trains on.
    fn device(&self) -> &DeviceChoice;
}

/// Settings of a runner that are not part of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerConfig {
    /// Batch size of the validation pass (does not change results, only speed and memory).
    pub eval_batch_size: usize,
    /// Implementation of the conv / BatchNorm training nodes (same results, different speed).
    pub kernels: Kernels,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig { eval_batch_size: 1000, kernels: Kernels::default() }
    }
}

/// [`JobRunner`] for the experiment's CNN on backend `B`.
pub struct CnnRunner<B: TrainBackend> {
    device: B::Device,
    choice: DeviceChoice,
    data: DeviceDataset<B>,
    config: RunnerConfig,
}

impl<B: TrainBackend> CnnRunner<B> {
    /// Uploads `data` to `device` once. May panic inside the backend if the device is unusable.
    pub fn new(device: B::Device, choice: DeviceChoice, data: &Cifar10, config: RunnerConfig) -> Self {
        let started = Instant::now();
        let data = DeviceDataset::upload(data, &device);
        tracing::info!(device = %choice, seconds = started.elapsed().as_secs_f64(), "data set uploaded");
        CnnRunner { device, choice, data, config }
    }
}

impl<B: TrainBackend> JobRunner for CnnRunner<B> {
    fn run_with_checkpoints(
        &mut self,
        job: &TrainJob,
        checkpoints: Option<&Checkpointing>,
        sink: &mut dyn EpochSink,
    ) -> Result<JobOutcome, TrainError> {
        train_job(&self.device, &self.data, self.config, job, checkpoints, sink)
    }

    fn device(&self) -> &DeviceChoice {
        &self.choice
    }
}

/// Rejects jobs this runner cannot train; returns (train, test) sizes.
fn check_job(job: &TrainJob, train: usize, test: usize) -> Result<(usize, usize), TrainError> {
    let bad = |m: String| Err(TrainError::InvalidJob(m));
    if job.epochs == 0 {
        return bad("epochs must be at least 1".into());
    }
    if job.batch_size == 0 {
        return bad("batch_size must be at least 1".into());
    }
    if !(job.learning_rate.is_finite() && job.learning_rate > 0.0) {
        return bad(format!("learning rate {} is not a positive number", job.learning_rate));
    }
    let w = job.data.width_multiplier;
    if !(w.is_finite() && w > 0.0 && w <= MAX_WIDTH_MULTIPLIER) {
        return bad(format!("width multiplier {w} outside (0, {MAX_WIDTH_MULTIPLIER}]"));
    }
    let limit = |l: Option<u32>, have: usize, what: &str| match l {
        Some(0) => Err(TrainError::InvalidJob(format!("{what}_limit must be at least 1"))),
        Some(n) => Ok((n as usize).min(have)),
        None => Ok(have),
    };
    if let Some(group) = job.data.bn_group
        && (group == 0 || !job.batch_size.is_multiple_of(group))
    {
        return bad(format!("bn_group {group} does not divide the batch size {}", job.batch_size));
    }
    let train_n = limit(job.data.train_limit, train, "train")?;
    let test_n = limit(job.data.test_limit, test, "test")?;
    if train_n == 0 || test_n == 0 {
        return bad("the data set on this device is empty".into());
    }
    Ok((train_n, test_n))
}

/// Sums of a pass over a split, kept on the device until read.
struct PassTotals<B: Backend> {
    loss_sum: Option<Tensor<B, 1>>,
    correct: Option<Tensor<B, 1, Int>>,
}

impl<B: Backend> PassTotals<B> {
    fn new() -> Self {
        PassTotals { loss_sum: None, correct: None }
    }

    fn add(&mut self, loss: Tensor<B, 1>, logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) {
        let n = labels.dims()[0];
        let loss = loss.mul_scalar(n as f64);
        let correct = logits.argmax(1).squeeze_dim::<1>(1).equal(labels).int().sum();
        self.loss_sum = Some(match self.loss_sum.take() {
            Some(s) => s.add(loss),
            None => loss,
        });
        self.correct = Some(match self.correct.take() {
            Some(c) => c.add(correct),
            None => correct,
        });
    }

    /// (mean loss, accuracy) over `n` images; reading them synchronises the device.
    fn read(self, n: usize) -> (f64, f64) {
        let loss = self.loss_sum.map_or(0.0, |t| t.into_scalar().elem::<f64>());
        let correct = self.correct.map_or(0.0, |t| t.into_scalar().elem::<f64>());
        (loss / n as f64, correct / n as f64)
    }
}

/// Trains one job on already-uploaded data: the experiment's explicit epoch loop.
pub fn train_job<B: TrainBackend>(
    device: &B::Device,
    data: &DeviceDataset<B>,
    config: RunnerConfig,
    job: &TrainJob,
    checkpoints: Option<&Checkpointing>,
    sink: &mut dyn EpochSink,
) -> Result<JobOutcome, TrainError> {
    let (train_n, test_n) = check_job(job, data.train.len(), data.test.len())?;
    if job.data.bn_group.is_some() && !config.kernels.fused_batch_norm {
        return Err(TrainError::InvalidJob(format!(
            "bn_group needs the fused BatchNorm node (kernels fast or fast-bf16), not {}",
            config.kernels
        )));
    }
    let train = data.train.first(train_n);
    let test = data.test.first(test_n).inner();
    let batch = job.batch_size as usize;

    let cnn = CnnConfig::new().with_width_multiplier(job.data.width_multiplier);
    let mut model: Cnn<B> = seeded_model(&cnn, job.seed, device)
        .with_kernels(config.kernels)
        .with_bn_group(job.data.bn_group.map(|g| g as usize));
    let mut optim = adam().init::<B>();
    // The algorithm of rand's StdRng (same stream for a seed), whose position a checkpoint keeps.
    let mut rng = ChaCha12Rng::seed_from_u64(job.seed);
    let mut order: Vec<i64> = (0..train_n as i64).collect();
    let mut first_step_reported = false;
    let (mut best_val_acc, mut best_epoch) = (f64::NEG_INFINITY, 0u32);
    let mut first_epoch = 1;
    if let Some(saved) = checkpoints.and_then(|c| c.store.latest(&c.key, c.resume_at_most)) {
        let header = saved.header.clone();
        if saved.order.len() != train_n || header.epoch >= job.epochs {
            tracing::warn!(key = %checkpoints.map_or("", |c| &c.key), epoch = header.epoch, "checkpoint does not fit this job; starting over");
        } else {
            match checkpoint::restore(&saved, model.clone(), optim, job.seed, device) {
                Ok(restored) => {
                    (model, optim, order, rng) = restored;
                    (best_val_acc, best_epoch, first_epoch) =
                        (header.best_val_acc, header.best_epoch, header.epoch + 1);
                    tracing::info!(epoch = header.epoch, "continuing from a checkpoint");
                    sink.on_resumed(header.epoch);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "checkpoint could not be restored; starting over");
                    optim = adam().init::<B>();
                }
            }
        }
    }

    tracing::debug!(variant = %job.variant, seed = job.seed, epochs = job.epochs, train_n, test_n, batch, "job starts");
    for epoch in first_epoch..=job.epochs {
        let started = Instant::now();
        order.shuffle(&mut rng);
        let perm = Tensor::<B, 1, Int>::from_data(TensorData::new(order.clone(), [train_n]), device);
        let mut totals = PassTotals::<B::InnerBackend>::new();
        for start in (0..train_n).step_by(batch) {
            if sink.should_stop() {
                return Ok(JobOutcome::Stopped { epochs_done: epoch - 1 });
            }
            let len = batch.min(train_n - start);
            let (mut images, labels) = train.gather(perm.clone().narrow(0, start, len));
            if job.data.augment {
                images = augment_batch(images, &mut rng);
            }
            let logits = model.forward(images);
            let loss = variant_loss(job.variant, logits.clone(), labels.clone());
            totals.add(loss.clone().inner(), logits.inner(), labels.inner());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(job.learning_rate, model, grads);
            if !first_step_reported {
                B::sync(device).map_err(|e| TrainError::Device(e.to_string()))?;
                sink.on_first_step();
                first_step_reported = true;
            }
        }
        let (train_loss, train_acc) = totals.read(train_n);
        let train_seconds = started.elapsed().as_secs_f64();
        if !train_loss.is_finite() {
            return Err(TrainError::NonFiniteLoss { epoch });
        }

        let Some((val_loss, val_acc)) = evaluate(&model.valid(), &test, job, config, sink) else {
            return Ok(JobOutcome::Stopped { epochs_done: epoch - 1 });
        };
        let metrics = EpochMetrics::builtin(
            epoch,
            [train_loss, train_acc, val_loss, val_acc],
            started.elapsed().as_secs_f64(),
            train_n as f64 / train_seconds.max(1e-9),
        );
        if val_acc > best_val_acc {
            (best_val_acc, best_epoch) = (val_acc, epoch);
        }
        tracing::debug!(?metrics, "epoch done");
        sink.on_epoch(metrics);
        let stop = sink.stop_after_epoch() && epoch < job.epochs;
        let due = |c: &&Checkpointing| stop || (epoch.is_multiple_of(c.every.max(1)) && epoch < job.epochs);
        if let Some(c) = checkpoints.filter(due) {
            let saved = checkpoint::capture(&model, &optim, &order, &rng, [epoch, best_epoch], best_val_acc)
                .and_then(|checkpoint| c.store.save(&c.key, &checkpoint));
            if let Err(e) = saved {
                tracing::warn!(error = %e, "checkpoint not saved; the job goes on");
            }
        }
        if stop {
            return Ok(JobOutcome::Stopped { epochs_done: epoch });
        }
    }
    Ok(JobOutcome::Completed { best_val_acc, best_epoch, epochs: job.epochs })
}

/// Validation pass in inference mode (BatchNorm running statistics); `None` if stopped.
fn evaluate<B: crate::train_ops::TrainOps>(
    model: &Cnn<B>,
    test: &DeviceSplit<B>,
    job: &TrainJob,
    config: RunnerConfig,
    sink: &dyn EpochSink,
) -> Option<(f64, f64)> {
    let n = test.len();
    let batch = config.eval_batch_size.max(1);
    let mut totals = PassTotals::<B>::new();
    for start in (0..n).step_by(batch) {
        if sink.should_stop() {
            return None;
        }
        let (images, labels) = test.range(start, batch.min(n - start));
        let logits = model.forward(images);
        let loss = variant_loss(job.variant, logits.clone(), labels.clone());
        totals.add(loss, logits, labels);
    }
    Some(totals.read(n))
}
