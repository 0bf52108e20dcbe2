//! Checkpoint and resume on the CPU: a job stopped after some epochs and continued from its
//! checkpoint by another runner reports, epoch for epoch, exactly what an uninterrupted run
//! reports; a damaged newest checkpoint falls back to an older one.

mod common;

use std::sync::{Arc, OnceLock};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha12Rng;
use sweep_proto::LossVariant;
use sweep_proto::domain::{DataOptions, EpochMetrics};
use worker::checkpoint::{Cadence, CheckpointStore, Checkpointing, DirectoryStore};
use worker::{Cifar10, DeviceChoice, EpochSink, JobOutcome, TrainJob, open_runner};

fn data() -> Arc<Cifar10> {
    static DATA: OnceLock<Arc<Cifar10>> = OnceLock::new();
    DATA.get_or_init(|| Arc::new(common::small_dataset(192, 64))).clone()
}

#[derive(Default)]
struct Collect {
    epochs: Vec<EpochMetrics>,
    stop_after: Option<usize>,
    drain_after: Option<usize>,
    resumed_after: Option<u32>,
}

impl EpochSink for Collect {
    fn on_epoch(&mut self, metrics: EpochMetrics) {
        self.epochs.push(metrics);
    }
    fn should_stop(&self) -> bool {
        self.stop_after.is_some_and(|n| self.epochs.len() >= n)
    }
    fn stop_after_epoch(&self) -> bool {
        self.drain_after.is_some_and(|n| self.epochs.len() >= n)
    }
    fn on_resumed(&mut self, epoch: u32) {
        self.resumed_after = Some(epoch);
    }
}

fn job() -> TrainJob {
    let data = DataOptions {
        train_limit: Some(192),
        test_limit: Some(64),
        augment: true,
        width_multiplier: 0.125,
        bn_group: None,
    };
    TrainJob {
        variant: LossVariant::NaturalSoftmax,
        seed: 11,
        epochs: 4,
        batch_size: 64,
        learning_rate: 1e-3,
        data,
    }
}

/// (epoch, train loss, train accuracy, validation loss, validation accuracy): all but timings.
fn numbers(epochs: &[EpochMetrics]) -> Vec<(u32, [Option<f64>; 4])> {
    epochs.iter().map(|m| (m.epoch, [m.train_loss, m.train_acc, m.val_loss, m.val_acc])).collect()
}

fn run(checkpoints: Option<&Checkpointing>, sink: &mut Collect) -> JobOutcome {
    let mut runner = open_runner(DeviceChoice::Cpu, data()).unwrap();
    runner.run_with_checkpoints(&job(), checkpoints, sink).unwrap()
}

fn checkpointing(store: &Arc<DirectoryStore>, resume_at_most: u32) -> Checkpointing {
    Checkpointing {
        store: store.clone(),
        key: "resume/job-1".into(),
        cadence: Cadence::every(1),
        resume_at_most,
    }
}

#[test]
fn the_data_order_generator_is_rands_standard_one() {
    let mut a: Vec<u32> = (0..1000).collect();
    let mut b = a.clone();
    a.shuffle(&mut StdRng::seed_from_u64(5));
    b.shuffle(&mut ChaCha12Rng::seed_from_u64(5));
    assert_eq!(a, b, "runs from before checkpoints must keep their data order");
}

#[test]
fn a_resumed_job_reports_what_an_uninterrupted_one_reports() {
    let mut straight = Collect::default();
    let outcome = run(None, &mut straight);
    assert!(matches!(outcome, JobOutcome::Completed { epochs: 4, .. }));

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DirectoryStore::new(dir.path(), 3));
    let mut first = Collect { stop_after: Some(2), ..Collect::default() };
    assert_eq!(
        run(Some(&checkpointing(&store, u32::MAX)), &mut first),
        JobOutcome::Stopped { epochs_done: 2 }
    );
    assert_eq!(numbers(&first.epochs), numbers(&straight.epochs[..2]), "checkpointing changes nothing");

    let mut second = Collect::default();
    let resumed = run(Some(&checkpointing(&store, 2)), &mut second);
    assert_eq!(second.resumed_after, Some(2));
    assert_eq!(numbers(&second.epochs), numbers(&straight.epochs[2..]), "epochs 3 and 4, bit for bit");
    assert_eq!(resumed, outcome, "the same best epoch and accuracy");
}

#[test]
fn a_damaged_checkpoint_falls_back_to_an_older_one_and_never_past_what_was_stored() {
    let mut straight = Collect::default();
    run(None, &mut straight);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DirectoryStore::new(dir.path(), 3));
    let mut first = Collect { stop_after: Some(3), ..Collect::default() };
    run(Some(&checkpointing(&store, u32::MAX)), &mut first);
    let newest = dir.path().join("resume/job-1/epoch-00003.ckpt");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    assert_eq!(store.latest("resume/job-1", u32::MAX).unwrap().header.epoch, 2);

    let mut second = Collect::default();
    run(Some(&checkpointing(&store, u32::MAX)), &mut second);
    assert_eq!(second.resumed_after, Some(2));
    assert_eq!(numbers(&second.epochs), numbers(&straight.epochs[2..]));

    // The coordinator stored only epoch 1: the run continues after it, not after 2.
    let mut third = Collect::default();
    run(Some(&checkpointing(&store, 1)), &mut third);
    assert_eq!(third.resumed_after, Some(1));
    assert_eq!(numbers(&third.epochs), numbers(&straight.epochs[1..]));
}

#[test]
fn a_graceful_stop_checkpoints_its_epoch_whatever_the_interval() {
    let mut straight = Collect::default();
    run(None, &mut straight);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DirectoryStore::new(dir.path(), 3));
    let sparse = Checkpointing { cadence: Cadence::every(100), ..checkpointing(&store, u32::MAX) };
    let mut first = Collect { drain_after: Some(3), ..Collect::default() };
    assert_eq!(run(Some(&sparse), &mut first), JobOutcome::Stopped { epochs_done: 3 });
    assert_eq!(store.latest("resume/job-1", u32::MAX).unwrap().header.epoch, 3);
    let mut second = Collect::default();
    run(Some(&sparse), &mut second);
    assert_eq!(numbers(&second.epochs), numbers(&straight.epochs[3..]));
}

#[test]
fn a_time_floor_leaves_due_epochs_unsaved_until_it_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DirectoryStore::new(dir.path(), 3));
    let hourly = Checkpointing { cadence: Cadence::new(1, 3600), ..checkpointing(&store, u32::MAX) };
    let mut first = Collect { stop_after: Some(3), ..Collect::default() };
    assert_eq!(run(Some(&hourly), &mut first), JobOutcome::Stopped { epochs_done: 3 });
    assert!(store.latest("resume/job-1", u32::MAX).is_none(), "no epoch ended an hour after the start");
    let eager = Checkpointing { cadence: Cadence::every(1), ..hourly };
    let mut second = Collect { stop_after: Some(3), ..Collect::default() };
    assert_eq!(run(Some(&eager), &mut second), JobOutcome::Stopped { epochs_done: 3 });
    assert_eq!(store.latest("resume/job-1", u32::MAX).unwrap().header.epoch, 3);
}
