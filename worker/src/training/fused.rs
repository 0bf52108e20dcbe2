//! Horizontal fusion of jobs: several compatible jobs ([`fuses_with`]) trained in one step per
//! batch ([`crate::model::forward_fused`], one backward), each job with its own weights,
//! optimizer, data order, augmentation, loss variant, learning rate, metrics, checkpoints and
//! cancellation. A job that stops or fails leaves the group; the others go on.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;

use super::job::JobState;
use super::{EpochSink, JobOutcome, PassTotals, RunnerConfig, TrainError, TrainJob, check_job, train_job};
use crate::checkpoint::Checkpointing;
use crate::data::{DeviceDataset, DeviceSplit};
use crate::loss::variant_loss;
use crate::model::{Cnn, forward_fused};
use crate::train_ops::TrainBackend;

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
    while !members.is_empty() {
        let started = Instant::now();
        for start in (0..train_n).step_by(batch) {
            members.retain(|m| {
                let stop = runs[m.run].sink.should_stop();
                if stop {
                    outcomes[m.run] = Some(Ok(JobOutcome::Stopped { epochs_done: m.state.epoch - 1 }));
                }
                !stop
            });
            if members.is_empty() {
                break;
            }
            let batch = (&train, start, batch.min(train_n - start), augment);
            members = fused_step(device, members, batch, &mut runs, &mut outcomes);
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

/// Every run's outcome, once all have one.
fn ended(outcomes: Vec<Option<Result<JobOutcome, TrainError>>>) -> Vec<Result<JobOutcome, TrainError>> {
    outcomes.into_iter().map(|o| o.expect("every run ends with an outcome")).collect()
}

/// One fused training step of `members` on the batch at `start` (`len` images) of each one's
/// order: one forward and backward, then each job's own Adam step. Returns the members that
/// go on (a failing step ends only its job).
fn fused_step<B: TrainBackend>(
    device: &B::Device,
    members: Vec<Member<B>>,
    (train, start, len, augment): (&DeviceSplit<B>, usize, usize, bool),
    runs: &mut [FusedRun<'_>],
    outcomes: &mut [Option<Result<JobOutcome, TrainError>>],
) -> Vec<Member<B>> {
    let mut members = members;
    let (images, labels): (Vec<_>, Vec<_>) =
        members.iter_mut().map(|m| m.state.batch(train, &m.perm, (start, len), augment)).unzip();
    let models: Vec<&Cnn<B>> = members.iter().map(|m| &m.model).collect();
    let logits = match forward_fused(&models, images) {
        Ok(logits) => logits,
        Err(e) => {
            for m in &members {
                outcomes[m.run] = Some(Err(TrainError::InvalidJob(e.to_string())));
            }
            return Vec::new();
        }
    };
    let mut total: Option<Tensor<B, 1>> = None;
    for ((m, logits), labels) in members.iter_mut().zip(logits).zip(labels) {
        let loss = variant_loss(runs[m.run].job.variant, logits.clone(), labels.clone());
        m.totals.add(loss.clone().inner(), logits.inner(), labels.inner());
        total = Some(match total {
            Some(t) => t.add(loss),
            None => loss,
        });
    }
    // The jobs share no parameter, so the summed loss's gradients are each job's own.
    let mut grads = total.expect("at least one member").backward();
    let mut going_on = Vec::with_capacity(members.len());
    for Member { run, mut state, model, perm, totals } in members {
        let model_grads = GradientsParams::from_module(&mut grads, &model);
        let step = (model, model_grads, runs[run].job.learning_rate);
        match state.step(step, device, &mut *runs[run].sink) {
            Ok(model) => going_on.push(Member { run, state, model, perm, totals }),
            Err(e) => outcomes[run] = Some(Err(e)),
        }
    }
    going_on
}
