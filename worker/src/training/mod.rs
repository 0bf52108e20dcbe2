//! The [`JobRunner`] API the worker's job loop calls: one runner per device, created once (data
//! uploaded once), training job after job (or several fused jobs at once), reporting each epoch
//! to an [`EpochSink`] and polling it for cancellation between batches. The explicit epoch loop
//! is [`job`]'s (one job) and [`fused`]'s (several jobs, one step).

mod fuse_choice;
mod fused;
mod fused_step;
mod job;
mod replay;

pub use fuse_choice::{FuseChoice, FuseTarget, runner_estimate, step_bytes};
pub use fused::{FusedRun, fuses_with, train_fused};
pub use fused_step::{FusedOutputs, FusedStepper, eager_fused_step};
pub use job::train_job;
pub use replay::{Stepped, Stepper, eager_step};

use std::time::Instant;

use burn::prelude::*;
use sweep_proto::LossVariant;
use sweep_proto::domain::{DataOptions, EpochMetrics, JobAssignment, MAX_WIDTH_MULTIPLIER};

use crate::checkpoint::Checkpointing;
use crate::data::{Cifar10, DataError, DeviceDataset, DeviceSplit};
use crate::device::DeviceChoice;
use crate::loss::{gradient_free_term, trained_loss};
use crate::model::Cnn;
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
    /// Trains `runs` as one group, each run's result in order ([`train_fused`]). Default: one
    /// after the other.
    fn run_fused(&mut self, runs: Vec<FusedRun<'_>>) -> Vec<Result<JobOutcome, TrainError>> {
        runs.into_iter().map(|r| self.run_with_checkpoints(r.job, r.checkpoints, r.sink)).collect()
    }
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

    fn run_fused(&mut self, runs: Vec<FusedRun<'_>>) -> Vec<Result<JobOutcome, TrainError>> {
        train_fused(&self.device, &self.data, self.config, runs)
    }
}

/// Rejects jobs this runner cannot train with `config`; returns (train, test) sizes.
fn check_job(
    job: &TrainJob,
    train: usize,
    test: usize,
    config: RunnerConfig,
) -> Result<(usize, usize), TrainError> {
    let bad = |m: String| Err(TrainError::InvalidJob(m));
    if job.data.bn_group.is_some() && !config.kernels.fused_batch_norm {
        return bad(format!(
            "bn_group needs the fused BatchNorm node (kernels fast or fast-bf16), not {}",
            config.kernels
        ));
    }
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

/// A pass's per-batch trained losses ([`trained_loss`]), logits and labels, kept on the device
/// and added up only when read, with its variant's gradient-free term over all the pass's rows
/// ([`gradient_free_term`]): a running sum records seven operations a step (the loss weighted
/// and added, argmax, compare, count, add) between the step's own; the deferred one a dozen at
/// the pass's end.
struct PassTotals<B: Backend> {
    /// Each batch's mean trained loss `[1]` with its image count.
    losses: Vec<(Tensor<B, 1>, usize)>,
    logits: Vec<Tensor<B, 2>>,
    labels: Vec<Tensor<B, 1, Int>>,
}

impl<B: Backend> PassTotals<B> {
    fn new() -> Self {
        PassTotals { losses: Vec::new(), logits: Vec::new(), labels: Vec::new() }
    }

    fn add(&mut self, trained_loss: Tensor<B, 1>, logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) {
        self.losses.push((trained_loss, labels.dims()[0]));
        self.logits.push(logits);
        self.labels.push(labels);
    }

    /// (mean loss of `variant`, accuracy) over `n` images; reading them synchronises the device.
    fn read(self, n: usize, variant: LossVariant) -> (f64, f64) {
        let Some(device) = self.labels.first().map(|l| l.device()) else { return (0.0, 0.0) };
        let (losses, counts): (Vec<_>, Vec<_>) = self.losses.into_iter().unzip();
        let counts: Vec<f32> = counts.into_iter().map(|c| c as f32).collect();
        let counts = Tensor::<B, 1>::from_data(TensorData::new(counts, [losses.len()]), &device);
        let loss_sum = Tensor::cat(losses, 0).mul(counts).sum();
        let (logits, labels) = (Tensor::cat(self.logits, 0), Tensor::cat(self.labels, 0));
        let extra = gradient_free_term(variant, logits.clone(), labels.clone());
        let correct = logits.argmax(1).squeeze_dim::<1>(1).equal(labels).int().sum();
        let extra = extra.map_or(0.0, |term| term.into_scalar().elem::<f64>());
        let loss = loss_sum.into_scalar().elem::<f64>() / n as f64 + extra;
        (loss, correct.into_scalar().elem::<f64>() / n as f64)
    }
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
        let loss = trained_loss(job.variant, logits.clone(), labels.clone());
        totals.add(loss, logits, labels);
    }
    Some(totals.read(n, job.variant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::variant_loss;
    use burn::backend::Flex;

    /// Batches of unequal size count by their images: the mean loss over the pass and the
    /// share of argmax hits.
    #[test]
    fn pass_totals_weigh_batches_by_their_images() {
        let device = Default::default();
        let normal = LossVariant::NormalLr1e3;
        let mut totals = PassTotals::<Flex>::new();
        assert_eq!(PassTotals::<Flex>::new().read(1, normal), (0.0, 0.0));
        // Three images, two right (argmax 1, 0, 1 against labels 1, 0, 0), mean loss 2.
        let logits = Tensor::<Flex, 2>::from_floats([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], &device);
        let labels = Tensor::<Flex, 1, Int>::from_ints([1, 0, 0], &device);
        totals.add(Tensor::from_floats([2.0], &device), logits, labels);
        // One image, right, loss 6.
        let logits = Tensor::<Flex, 2>::from_floats([[0.0, 3.0]], &device);
        totals.add(Tensor::from_floats([6.0], &device), logits, Tensor::from_ints([1], &device));
        let (loss, accuracy) = totals.read(4, normal);
        assert!((loss - 3.0).abs() < 1e-9, "loss {loss}");
        assert!((accuracy - 0.75).abs() < 1e-9, "accuracy {accuracy}");
    }

    /// Every variant's pass loss, its gradient-free term added once over the pass, equals the
    /// mean of its full per-batch losses weighted by their images.
    #[test]
    fn pass_totals_add_the_gradient_free_terms_over_the_pass() {
        let device = Default::default();
        let batch = |rows: usize, shift: usize| {
            let values: Vec<f32> =
                (0..rows * 10).map(|i| (((i + shift) * 37 % 23) as f32 - 11.0) / 4.0).collect();
            let labels: Vec<i64> = (0..rows).map(|r| ((r * 3 + shift) % 10) as i64).collect();
            let logits = Tensor::<Flex, 2>::from_data(TensorData::new(values, [rows, 10]), &device);
            (logits, Tensor::<Flex, 1, Int>::from_data(TensorData::new(labels, [rows]), &device))
        };
        let batches = [batch(8, 0), batch(8, 5), batch(3, 11)];
        let pass_loss = |variant| {
            let mut totals = PassTotals::<Flex>::new();
            let mut expected = 0.0;
            for (logits, labels) in batches.iter().cloned() {
                let full: f64 = variant_loss(variant, logits.clone(), labels.clone()).into_scalar().elem();
                expected += full * labels.dims()[0] as f64 / 19.0;
                totals.add(trained_loss(variant, logits.clone(), labels.clone()), logits, labels);
            }
            (totals.read(19, variant).0, expected)
        };
        for variant in LossVariant::ALL {
            let (loss, expected) = pass_loss(variant);
            assert!(
                (loss - expected).abs() < 1e-6 * expected.abs().max(1.0),
                "{variant}: {loss} vs {expected}"
            );
        }
        // multi_softmax's term is a few 1e-6: the pass adds exactly it to the cross-entropy.
        let labels = Tensor::cat(batches.iter().map(|(_, labels)| labels.clone()).collect(), 0);
        let term: f64 = crate::loss::multi_softmax_constant(labels).into_scalar().elem();
        let added = pass_loss(LossVariant::MultiSoftmax).0 - pass_loss(LossVariant::NormalLr1e3).0;
        assert!(term > 1e-6 && (added - term).abs() < 1e-12, "added {added}, term {term}");
    }
}
