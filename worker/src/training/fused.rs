//! Horizontal fusion of jobs: several compatible jobs ([`fuses_with`]) trained as one model
//! ([`FusedCnn`]) with one optimizer ([`StackedAdam`]), so each batch is one forward, one
//! backward and one Adam launch for all of them. Each job keeps its own weights, optimizer
//! state, data order, augmentation, loss variant, learning rate, metrics, checkpoints and
//! cancellation: between epochs every job is its own model and optimizer again (validation,
//! checkpoints), and a job that stops or fails leaves the group while the others go on. The
//! step itself, op by op or replayed, is [`super::fused_step`]'s.

use std::time::Instant;

use burn::module::ParamId;
use burn::prelude::*;

use super::fused_step::FusedStepper;
use super::job::JobState;
use super::{EpochSink, JobOutcome, PassTotals, RunnerConfig, TrainError, TrainJob, check_job, train_job};
use crate::augment::{Crops, apply_crops};
use crate::checkpoint::Checkpointing;
use crate::data::{DeviceDataset, DeviceSplit};
use crate::model::{Cnn, FusedCnn, FusionError, NUM_CLASSES};
use crate::train_ops::TrainBackend;
use crate::train_ops::adam::StackedAdam;

/// Whether two jobs can train in one fused step: the same epochs, batch size and data options
/// (width, BatchNorm groups, augmentation, data limits). Loss variants, seeds and learning
/// rates may differ.
pub fn fuses_with(a: &TrainJob, b: &TrainJob) -> bool {
    a.epochs == b.epochs && a.batch_size == b.batch_size && a.data == b.data
}

/// One job of a fused group: what to train, where its checkpoints go, who hears its epochs.
pub struct FusedRun<'a> {
    pub job: &'a TrainJob,
    pub checkpoints: Option<&'a Checkpointing>,
    pub sink: &'a mut dyn EpochSink,
}

/// A job of the group while it trains.
struct Member<B: TrainBackend> {
    /// Index of its [`FusedRun`].
    run: usize,
    state: JobState<B>,
    /// Its model as of the last time the group unstacked ([`Stack::unstack`]).
    model: Cnn<B>,
    /// This epoch's data order on the device.
    perm: Tensor<B, 1, Int>,
    totals: PassTotals<B::InnerBackend>,
}

impl<B: TrainBackend> Member<B> {
    /// Shuffles for the next epoch and clears its sums.
    fn next_epoch(&mut self, device: &B::Device) {
        self.perm = self.state.shuffle(device);
        self.totals = PassTotals::new();
    }

    /// Ends the member's epoch of `train_n` images begun at `started` (validation on `test`,
    /// metrics, checkpoint) and gets it ready for the next one; returns how its job ended, if
    /// it did.
    fn end_epoch(
        &mut self,
        run: &mut FusedRun<'_>,
        (train_n, started): (usize, Instant),
        test: &DeviceSplit<B::InnerBackend>,
        config: RunnerConfig,
        device: &B::Device,
    ) -> Option<Result<JobOutcome, TrainError>> {
        let FusedRun { job, checkpoints, ref mut sink } = *run;
        let totals = std::mem::replace(&mut self.totals, PassTotals::new());
        let pass = (totals, train_n, started);
        match self.state.end_epoch(&self.model, pass, test, job, config, checkpoints, &mut **sink) {
            Ok(None) => {
                self.next_epoch(device);
                None
            }
            ended => Some(ended.map(|o| o.expect("matched above"))),
        }
    }
}

/// Checks every run against the data and the group's first valid run (the leader): the runs
/// that cannot join get their failure in `outcomes`. Returns the leader's index and its
/// `(train, test)` image counts, if any run is valid.
fn leader(
    runs: &[FusedRun<'_>],
    data: (usize, usize),
    config: RunnerConfig,
    outcomes: &mut [Option<Result<JobOutcome, TrainError>>],
) -> Option<(usize, (usize, usize))> {
    let mut leader: Option<(usize, (usize, usize))> = None;
    for (i, run) in runs.iter().enumerate() {
        match (check_job(run.job, data.0, data.1, config), leader) {
            (Err(e), _) => outcomes[i] = Some(Err(e)),
            (Ok(sizes), None) => leader = Some((i, sizes)),
            (Ok(_), Some((first, _))) if !fuses_with(runs[first].job, run.job) => {
                outcomes[i] = Some(Err(TrainError::InvalidJob(format!(
                    "job {i} does not fuse with job {first}: epochs, batch size or data options differ"
                ))));
            }
            (Ok(_), Some(_)) => {}
        }
    }
    leader
}

/// The group's members stacked for training: one model, one optimizer, their epoch orders.
struct Stack<B: TrainBackend> {
    model: FusedCnn<B>,
    optim: StackedAdam<B>,
    /// Each member's trained parameters' ids ([`FusedCnn::trainable_ids`]).
    ids: Vec<Vec<ParamId>>,
    /// The members' orders of this epoch, `[K, train_n]`.
    perms: Tensor<B, 2, Int>,
}

impl<B: TrainBackend> Stack<B> {
    fn new(members: &[Member<B>]) -> Result<Self, FusionError> {
        let models: Vec<&Cnn<B>> = members.iter().map(|m| &m.model).collect();
        let model = FusedCnn::stack(&models)?;
        let ids: Vec<_> = models.iter().map(|m| FusedCnn::trainable_ids(m)).collect();
        let optims: Vec<_> = members.iter().map(|m| m.state.optimizer()).collect();
        let optim = StackedAdam::stack(&optims, &ids, &model.trainables());
        let perms = Tensor::stack(members.iter().map(|m| m.perm.clone()).collect(), 0);
        Ok(Stack { model, optim, ids, perms })
    }

    /// Gives every member its own model and optimizer back, as trained so far.
    fn unstack(self, members: &mut [Member<B>]) {
        for (j, member) in members.iter_mut().enumerate() {
            member.model = self.model.member(j, &member.model);
            member.state.set_optimizer(self.optim.unstack(j, &self.ids[j]));
        }
    }
}

/// Trains `runs` as one group on already-uploaded data and returns each run's result, in
/// order. A run that is invalid or does not fuse with the group's first valid run fails with
/// [`TrainError::InvalidJob`] without stopping the others. Kernels without the fused BatchNorm
/// node (which keeps every job's statistics apart) train the runs one after the other.
pub fn train_fused<B: TrainBackend>(
    device: &B::Device,
    data: &DeviceDataset<B>,
    config: RunnerConfig,
    mut runs: Vec<FusedRun<'_>>,
) -> Vec<Result<JobOutcome, TrainError>> {
    if runs.len() == 1 || !config.kernels.fused_batch_norm {
        return runs
            .iter_mut()
            .map(|r| train_job(device, data, config, r.job, r.checkpoints, &mut *r.sink))
            .collect();
    }
    let mut outcomes: Vec<Option<Result<JobOutcome, TrainError>>> = runs.iter().map(|_| None).collect();
    let leader = leader(&runs, (data.train.len(), data.test.len()), config, &mut outcomes);
    let Some((first, (train_n, test_n))) = leader else { return ended(outcomes) };
    let train = data.train.first(train_n);
    let test = data.test.first(test_n).inner();
    let (batch, augment) = (runs[first].job.batch_size as usize, runs[first].job.data.augment);
    let mut members: Vec<Member<B>> = (0..runs.len())
        .filter(|i| outcomes[*i].is_none())
        .map(|i| {
            let FusedRun { job, checkpoints, ref mut sink } = runs[i];
            let (state, model) = JobState::start(device, config, job, train_n, checkpoints, &mut **sink);
            let mut member =
                Member { run: i, state, model, perm: Tensor::empty([0], device), totals: PassTotals::new() };
            member.next_epoch(device);
            member
        })
        .collect();
    tracing::debug!(jobs = members.len(), train_n, test_n, batch, "fused jobs start");
    let mut stepper = FusedStepper::new(config.kernels);
    while !members.is_empty() {
        let started = Instant::now();
        let mut stack: Option<Stack<B>> = None;
        for start in (0..train_n).step_by(batch) {
            let stopping: Vec<bool> = members.iter().map(|m| runs[m.run].sink.should_stop()).collect();
            if stopping.contains(&true) {
                // The others train on as a smaller stack.
                if let Some(stack) = stack.take() {
                    stack.unstack(&mut members);
                }
                let mut stopping = stopping.into_iter();
                members.retain(|m| {
                    let stop = stopping.next().expect("one answer per member");
                    if stop {
                        outcomes[m.run] = Some(Ok(JobOutcome::Stopped { epochs_done: m.state.epoch - 1 }));
                    }
                    !stop
                });
            }
            let stacked = match stack.take() {
                Some(stack) => Ok(stack),
                None if members.is_empty() => break,
                None => {
                    stepper.restacked();
                    Stack::new(&members).map_err(|e| TrainError::InvalidJob(e.to_string()))
                }
            };
            let batch = (&train, start, batch.min(train_n - start), augment);
            let mut step = |mut s: Stack<B>| {
                fused_step(device, (&mut s, &mut stepper), &mut members, batch, &mut runs).map(|()| s)
            };
            match stacked.and_then(&mut step) {
                Ok(s) => stack = Some(s),
                Err(e) => {
                    // A device that fails a step, or a group that cannot stack, fails every job in it.
                    for m in members.drain(..) {
                        outcomes[m.run] = Some(Err(for_each_job(&e)));
                    }
                }
            }
        }
        if let Some(stack) = stack.take() {
            stack.unstack(&mut members);
        }
        members.retain_mut(|m| {
            match m.end_epoch(&mut runs[m.run], (train_n, started), &test, config, device) {
                None => true,
                ended => {
                    outcomes[m.run] = ended;
                    false
                }
            }
        });
    }
    ended(outcomes)
}

/// A group's failure as one of its jobs' (the error is not `Clone`).
fn for_each_job(e: &TrainError) -> TrainError {
    match e {
        TrainError::InvalidJob(m) => TrainError::InvalidJob(m.clone()),
        e => TrainError::Device(e.to_string()),
    }
}

/// Every run's outcome, once all have one.
fn ended(outcomes: Vec<Option<Result<JobOutcome, TrainError>>>) -> Vec<Result<JobOutcome, TrainError>> {
    outcomes.into_iter().map(|o| o.expect("every run ends with an outcome")).collect()
}

/// One fused training step of the stacked `members` on the batch at `start` (`len` images) of
/// each one's order: one gather, then the step `stepper` runs (forward, backward and Adam
/// update for all of them), then each member's sums.
fn fused_step<B: TrainBackend>(
    device: &B::Device,
    (stack, stepper): (&mut Stack<B>, &mut FusedStepper<B>),
    members: &mut [Member<B>],
    (train, start, len, augment): (&DeviceSplit<B>, usize, usize, bool),
    runs: &mut [FusedRun<'_>],
) -> Result<(), TrainError> {
    let k = members.len();
    let (images, labels) = train.gather(stack.perms.clone().narrow(1, start, len).reshape([k * len]));
    let images = match augment {
        true => {
            let mut crops = Crops::default();
            for member in members.iter_mut() {
                crops.extend(member.state.crops(len));
            }
            apply_crops(images, crops)
        }
        false => images,
    };
    let variants: Vec<_> = members.iter().map(|m| runs[m.run].job.variant).collect();
    let learning_rates: Vec<f64> = members.iter().map(|m| runs[m.run].job.learning_rate).collect();
    let batch = (images, labels.clone());
    let outputs = stepper.step(&mut stack.model, &mut stack.optim, batch, &variants, &learning_rates)?;
    let labels = labels.inner();
    for (j, (m, loss)) in members.iter_mut().zip(outputs.losses).enumerate() {
        let logits = outputs.logits.clone().narrow(0, j, 1).reshape([len, NUM_CLASSES]);
        m.totals.add(loss, logits, labels.clone().narrow(0, j * len, len));
    }
    for m in members.iter_mut() {
        m.state.stepped(device, &mut *runs[m.run].sink)?;
    }
    Ok(())
}
