//! `coordinator migrate`: a sweep history copied from the embedded SQLite file into a new
//! database (PostgreSQL with `SWEEP_TEST_POSTGRES_URL`, else another SQLite file) reads back the
//! same through the queue, a lease taken before the copy still fences writes after it, and a
//! destination that holds anything is refused untouched.

use std::collections::BTreeMap;

use coordinator::cli::migrate::{MigrateArgs, run};
use coordinator::queue::{Recorded, Registration};
use coordinator::{Config, Database, Error, Principal, Queue};
use sweep_proto::domain::{EpochMetrics, JobKind, SweepSpec};

use crate::common::*;

const LOCAL: Principal = Principal::Local;

/// Everything the queue reads back: summaries, every job with its epochs, workers. The ETA is
/// rounded: it comes from an average the two backends sum in different orders (last bit).
async fn history(queue: &Queue) -> String {
    let mut summaries = queue.summaries().await.unwrap();
    for s in &mut summaries {
        s.eta_seconds = s.eta_seconds.map(|eta| (eta * 1e6).round() / 1e6);
    }
    let mut out = format!("{summaries:?}\n{:?}\n", queue.workers().await.unwrap());
    for summary in queue.summaries().await.unwrap() {
        out.push_str(&format!("{:?}\n", queue.jobs_with_epochs(&summary.spec.name).await.unwrap()));
    }
    out
}

fn epoch(epoch: u32, val_acc: f64, top5: Option<f64>) -> EpochMetrics {
    let mut m = EpochMetrics::try_from(metrics(epoch, val_acc)).unwrap();
    m.values = top5.map(|v| BTreeMap::from([("top5".to_string(), v)])).unwrap_or_default();
    m
}

/// A source with a finished job, a failed one, a running one (leased, one epoch stored) and
/// queued ones, in two sweeps; returns the running job's lease.
async fn fill(queue: &Queue) -> sweep_proto::domain::Fence {
    let worker = Registration {
        worker_id: "w".into(),
        hostname: "h".into(),
        gpus: vec!["GPU".into()],
        slots: 2,
        data_files: vec![],
    };
    queue.register(worker, &LOCAL).await.unwrap();
    let a = SweepSpec::try_from(spec("a", &["natural_softmax", "normal_lr1e-3"], &[0, 1], 2)).unwrap();
    queue.submit(a, &LOCAL).await.unwrap();
    queue
        .submit(SweepSpec::try_from(spec("b", &["multi_softmax"], &[u64::MAX], 3)).unwrap(), &LOCAL)
        .await
        .unwrap();
    let lease = || queue.lease("w".into(), vec![JobKind::Builtin], &LOCAL);
    let done = lease().await.unwrap().unwrap().fence;
    for (e, acc) in [(1, 0.4), (2, 0.7)] {
        let stored = queue.record_epoch(done.clone(), epoch(e, acc, Some(0.9)), &LOCAL).await.unwrap().await;
        assert_eq!(stored.unwrap(), Recorded::Stored);
    }
    queue.complete(done, &LOCAL).await.unwrap();
    let failed = lease().await.unwrap().unwrap().fence;
    queue.fail(failed, "out of memory".into(), &LOCAL).await.unwrap();
    let running = lease().await.unwrap().unwrap().fence;
    queue.record_epoch(running.clone(), epoch(1, 0.3, None), &LOCAL).await.unwrap().await.unwrap();
    running
}

#[tokio::test]
async fn migrate_copies_a_sweep_history_without_loss() {
    let (from_dir, to_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (from, to) = (sqlite_url(from_dir.path()), db_url(to_dir.path()));
    let source = Database::open(&from).await.unwrap();
    let queue = Queue::new(source.clone(), &Config::default());
    let running = fill(&queue).await;
    let before = history(&queue).await;
    source.close().await;

    run(MigrateArgs { from: from.clone(), to: to.clone() }).await.unwrap();

    let (source, dest) = (Database::open(&from).await.unwrap(), Database::open(&to).await.unwrap());
    let (old, new) =
        (Queue::new(source.clone(), &Config::default()), Queue::new(dest.clone(), &Config::default()));
    assert_eq!(history(&old).await, before, "the source is unchanged");
    assert_eq!(history(&new).await, before, "the copy reads back the same");

    // The running job's worker carries on against the new database under its old lease.
    let stored = new.record_epoch(running.clone(), epoch(2, 0.5, None), &LOCAL).await.unwrap().await.unwrap();
    assert_eq!(stored, Recorded::Stored);
    assert_eq!(new.complete(running.clone(), &LOCAL).await.unwrap().epochs_done, 2);
    // New jobs get ids after the copied ones.
    let max = new
        .jobs("a", None, None)
        .await
        .unwrap()
        .iter()
        .chain(&new.jobs("b", None, None).await.unwrap())
        .map(|j| j.id.0)
        .max();
    new.submit(SweepSpec::try_from(spec("c", &["natural_softmax"], &[0], 1)).unwrap(), &LOCAL).await.unwrap();
    assert!(new.jobs("c", None, None).await.unwrap()[0].id.0 > max.unwrap());
    source.close().await;
    dest.close().await;
}

#[tokio::test]
async fn migrate_refuses_a_destination_that_is_not_empty_and_changes_nothing() {
    let (from_dir, to_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (from, to) = (sqlite_url(from_dir.path()), db_url(to_dir.path()));
    let source = Database::open(&from).await.unwrap();
    fill(&Queue::new(source.clone(), &Config::default())).await;
    source.close().await;
    let dest = Database::open(&to).await.unwrap();
    let queue = Queue::new(dest.clone(), &Config::default());
    queue
        .submit(SweepSpec::try_from(spec("mine", &["natural_softmax"], &[7], 1)).unwrap(), &LOCAL)
        .await
        .unwrap();
    let before = history(&queue).await;

    let err = run(MigrateArgs { from, to }).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("not empty (1 sweeps, 1 jobs"), "{err}");
    assert_eq!(history(&queue).await, before);
    dest.close().await;
}

#[tokio::test]
async fn the_protocol_experiments_database_migrates_whole() {
    let (from_dir, to_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    crate::legacy::copy_live_db(from_dir.path());
    let (from, to) = (sqlite_url(from_dir.path()), db_url(to_dir.path()));
    run(MigrateArgs { from: from.clone(), to: to.clone() }).await.unwrap();
    let (source, dest) = (Database::open(&from).await.unwrap(), Database::open(&to).await.unwrap());
    let (old, new) =
        (Queue::new(source.clone(), &Config::default()), Queue::new(dest.clone(), &Config::default()));
    let copied = history(&new).await;
    assert_eq!(copied, history(&old).await);
    assert!(copied.len() > 100_000, "the whole history: {} bytes", copied.len());
    source.close().await;
    dest.close().await;
}
