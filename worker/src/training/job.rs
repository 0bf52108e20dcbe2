//! One job's training state between batches ([`JobState`]: weights, optimizer, data order and
//! RNG, best epoch) and the single-job epoch loop, [`train_job`].

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha12Rng;
use sweep_proto::domain::EpochMetrics;

use super::{
    EpochSink, JobOutcome, PassTotals, RunnerConfig, Stepper, TrainError, TrainJob, adam, check_job, evaluate,
};
use crate::augment::{Crops, apply_crops};
use crate::checkpoint::{self, Checkpointing};
use crate::data::{DeviceDataset, DeviceSplit};
use crate::model::{Cnn, CnnConfig, seeded_model};
use crate::train_ops::TrainBackend;
use crate::train_ops::adam::ModuleAdam;

/// A job between two batches, but for its model (which the optimizer takes and gives back).
pub(super) struct JobState<B: TrainBackend> {
    optim: ModuleAdam<B>,
    /// The algorithm of rand's StdRng (same stream for a seed), whose position a checkpoint keeps.
    rng: ChaCha12Rng,
    order: Vec<i64>,
    best_val_acc: f64,
    best_epoch: u32,
    /// The epoch being trained (1-based).
    pub epoch: u32,
    first_step_reported: bool,
    /// When the job last checkpointed, or started.
    last_checkpoint: Instant,
    /// Writes the job's checkpoints while it trains on.
    saver: checkpoint::Saver,
}

impl<B: TrainBackend> JobState<B> {
    /// The job's seeded model and fresh optimizer, or its newest fitting checkpoint's state
    /// (reported to `sink`), for `train_n` training images.
    pub fn start(
        device: &B::Device,
        config: RunnerConfig,
        job: &TrainJob,
        train_n: usize,
        checkpoints: Option<&Checkpointing>,
        sink: &mut dyn EpochSink,
    ) -> (Self, Cnn<B>) {
        let cnn = CnnConfig::new().with_width_multiplier(job.data.width_multiplier);
        let model: Cnn<B> = seeded_model(&cnn, job.seed, device)
            .with_kernels(config.kernels)
            .with_bn_group(job.data.bn_group.map(|g| g as usize));
        let mut state = JobState {
            optim: adam().init::<B>(),
            rng: ChaCha12Rng::seed_from_u64(job.seed),
            order: (0..train_n as i64).collect(),
            best_val_acc: f64::NEG_INFINITY,
            best_epoch: 0,
            epoch: 1,
            first_step_reported: false,
            last_checkpoint: Instant::now(),
            saver: checkpoint::Saver::default(),
        };
        let Some(saved) = checkpoints.and_then(|c| c.store.latest(&c.key, c.resume_at_most)) else {
            return (state, model);
        };
        let header = saved.header.clone();
        if saved.order.len() != train_n || header.epoch >= job.epochs {
            tracing::warn!(key = %checkpoints.map_or("", |c| &c.key), epoch = header.epoch, "checkpoint does not fit this job; starting over");
            return (state, model);
        }
        match checkpoint::restore(&saved, model.clone(), state.optim, job.seed, device) {
            Ok((restored, optim, order, rng)) => {
                (state.optim, state.order, state.rng) = (optim, order, rng);
                (state.best_val_acc, state.best_epoch, state.epoch) =
                    (header.best_val_acc, header.best_epoch, header.epoch + 1);
                tracing::info!(epoch = header.epoch, "continuing from a checkpoint");
                sink.on_resumed(header.epoch);
                return (state, restored);
            }
            Err(e) => {
                tracing::warn!(error = %e, "checkpoint could not be restored; starting over");
                state.optim = adam().init::<B>();
            }
        }
        (state, model)
    }

    /// Shuffles the order for a new epoch; the permutation on `device`.
    pub fn shuffle(&mut self, device: &B::Device) -> Tensor<B, 1, Int> {
        self.order.shuffle(&mut self.rng);
        let n = self.order.len();
        Tensor::from_data(TensorData::new(self.order.clone(), [n]), device)
    }

    /// The images (augmented if asked) and labels at positions `start..start + len` of `perm`.
    pub fn batch(
        &mut self,
        train: &DeviceSplit<B>,
        perm: &Tensor<B, 1, Int>,
        (start, len): (usize, usize),
        augment: bool,
    ) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
        let (images, labels) = train.gather(perm.clone().narrow(0, start, len));
        let images = if augment { apply_crops(images, self.crops(len)) } else { images };
        (images, labels)
    }

    /// The augmentation of the job's next `n` images, drawn from its generator.
    pub fn crops(&mut self, n: usize) -> Crops {
        Crops::draw(n, &mut self.rng)
    }

    /// After the job's first optimizer step: waits for the device and tells `sink`.
    pub fn stepped(&mut self, device: &B::Device, sink: &mut dyn EpochSink) -> Result<(), TrainError> {
        if !self.first_step_reported {
            B::sync(device).map_err(|e| TrainError::Device(e.to_string()))?;
            sink.on_first_step();
            self.first_step_reported = true;
        }
        Ok(())
    }

    /// The job's optimizer.
    pub fn optimizer(&self) -> &ModuleAdam<B> {
        &self.optim
    }

    /// The job's optimizer, to step with.
    pub fn optimizer_mut(&mut self) -> &mut ModuleAdam<B> {
        &mut self.optim
    }

    /// Puts `optim` in place of the job's optimizer (its state after fused steps).
    pub fn set_optimizer(&mut self, optim: ModuleAdam<B>) {
        self.optim = optim;
    }

    /// Ends the epoch that trained `model` since `started` with its training `totals` over
    /// `train_n` images: validation on `test`, the metrics to `sink`, the best epoch, a checkpoint when
    /// due. Returns how the job ended, if it did; otherwise moves on to the next epoch.
    #[allow(clippy::too_many_arguments)]
    pub fn end_epoch(
        &mut self,
        model: &Cnn<B>,
        (totals, train_n, started): (PassTotals<B::InnerBackend>, usize, Instant),
        test: &DeviceSplit<B::InnerBackend>,
        job: &TrainJob,
        config: RunnerConfig,
        checkpoints: Option<&Checkpointing>,
        sink: &mut dyn EpochSink,
    ) -> Result<Option<JobOutcome>, TrainError> {
        let epoch = self.epoch;
        let (train_loss, train_acc) = totals.read(train_n, job.variant);
        let train_seconds = started.elapsed().as_secs_f64();
        if !train_loss.is_finite() {
            return Err(TrainError::NonFiniteLoss { epoch });
        }
        let Some((val_loss, val_acc)) = evaluate(&model.valid(), test, job, config, sink) else {
            return Ok(Some(self.ended(JobOutcome::Stopped { epochs_done: epoch - 1 })));
        };
        let metrics = EpochMetrics::builtin(
            epoch,
            [train_loss, train_acc, val_loss, val_acc],
            started.elapsed().as_secs_f64(),
            train_n as f64 / train_seconds.max(1e-9),
        );
        if val_acc > self.best_val_acc {
            (self.best_val_acc, self.best_epoch) = (val_acc, epoch);
        }
        tracing::debug!(?metrics, "epoch done");
        sink.on_epoch(metrics);
        let stop = sink.stop_after_epoch() && epoch < job.epochs;
        let since_last = self.last_checkpoint.elapsed();
        let due = |c: &&Checkpointing| stop || (c.cadence.due(epoch, since_last) && epoch < job.epochs);
        if let Some(c) = checkpoints.filter(due) {
            self.last_checkpoint = Instant::now();
            let marks = [epoch, self.best_epoch];
            match checkpoint::capture(model, &self.optim, &self.order, &self.rng, marks, self.best_val_acc) {
                Ok(checkpoint) => self.saver.save(c.store.clone(), c.key.clone(), checkpoint),
                Err(e) => tracing::warn!(error = %e, "checkpoint not captured; the job goes on"),
            }
        }
        self.epoch += 1;
        let outcome = if stop {
            Some(JobOutcome::Stopped { epochs_done: epoch })
        } else if epoch >= job.epochs {
            Some(JobOutcome::Completed {
                best_val_acc: self.best_val_acc,
                best_epoch: self.best_epoch,
                epochs: job.epochs,
            })
        } else {
            None
        };
        Ok(outcome.map(|o| self.ended(o)))
    }

    /// `outcome`, once the job's last checkpoint is in place: its end is reported after it.
    fn ended(&mut self, outcome: JobOutcome) -> JobOutcome {
        self.saver.wait();
        outcome
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
    let (train_n, test_n) = check_job(job, data.train.len(), data.test.len(), config)?;
    let train = data.train.first(train_n);
    let test = data.test.first(test_n).inner();
    let batch = job.batch_size as usize;
    let (mut state, mut model) = JobState::start(device, config, job, train_n, checkpoints, sink);
    let mut stepper = Stepper::new(config.kernels);
    tracing::debug!(variant = %job.variant, seed = job.seed, epochs = job.epochs, train_n, test_n, batch, "job starts");
    loop {
        let started = Instant::now();
        let perm = state.shuffle(device);
        let mut totals = PassTotals::<B::InnerBackend>::new();
        for start in (0..train_n).step_by(batch) {
            if sink.should_stop() {
                return Ok(JobOutcome::Stopped { epochs_done: state.epoch - 1 });
            }
            let (images, labels) =
                state.batch(&train, &perm, (start, batch.min(train_n - start)), job.data.augment);
            let optim = state.optimizer_mut();
            let stepped =
                stepper.step(model, optim, (images, labels.clone()), job.variant, job.learning_rate)?;
            totals.add(stepped.loss, stepped.logits, labels.inner());
            model = stepped.model;
            state.stepped(device, sink)?;
        }
        if let Some(outcome) =
            state.end_epoch(&model, (totals, train_n, started), &test, job, config, checkpoints, sink)?
        {
            return Ok(outcome);
        }
    }
}
