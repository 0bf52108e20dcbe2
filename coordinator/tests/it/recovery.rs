//! Recovery from interruptions on the queue: a worker handing a job back (release), leases given
//! grace after a coordinator restart, and users retrying failed or cancelled jobs.

use std::time::Duration;

use coordinator::auth::Role;
use coordinator::queue::Registration;
use coordinator::{Config, Database, Error, Principal, Queue};
use sweep_proto::domain::{EpochMetrics, JobId, JobKind, JobState, RetryTarget, SweepSpec};

use crate::common::*;

const LOCAL: Principal = Principal::Local;

fn epoch(epoch: u32, val_acc: f64) -> EpochMetrics {
    EpochMetrics::try_from(metrics(epoch, val_acc)).unwrap()
}

async fn open(dir: &std::path::Path, config: &Config) -> (Database, Queue) {
    let db = Database::open(&db_url(dir)).await.unwrap();
    let queue = Queue::new(db.clone(), config);
    let worker = Registration {
        worker_id: "w".into(),
        hostname: "h".into(),
        gpus: vec![],
        slots: 0,
        data_files: vec![],
    };
    queue.register(worker, &LOCAL).await.unwrap();
    (db, queue)
}

async fn submit(queue: &Queue, name: &str, seeds: &[u64], epochs: u32, by: &Principal) {
    let mut wire = spec(name, &["normal_lr1e-3"], seeds, epochs);
    wire.max_attempts = 2;
    queue.submit(SweepSpec::try_from(wire).unwrap(), by).await.unwrap();
}

#[tokio::test]
async fn a_released_job_is_requeued_without_using_an_attempt_and_keeps_its_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, queue) = open(dir.path(), &Config::default()).await;
    submit(&queue, "rel", &[0], 4, &LOCAL).await;

    let first = queue.lease("w".into(), vec![JobKind::Builtin], &LOCAL).await.unwrap().unwrap();
    assert_eq!(first.epochs_stored, 0);
    for (e, acc) in [(1, 0.3), (2, 0.6)] {
        queue.record_epoch(first.fence.clone(), epoch(e, acc), &LOCAL).await.unwrap().await.unwrap();
    }
    let job = queue.release(first.fence.clone(), &LOCAL).await.unwrap();
    assert_eq!(
        (job.state, job.attempt, job.max_attempts, job.epochs_done, job.best_epoch),
        (JobState::Queued, 2, 3, 2, 2),
        "a new attempt, the budget grown by one, the stored epochs kept"
    );
    // The old attempt's fence is stale: it can neither write nor hand the job back again.
    let write = match queue.record_epoch(first.fence.clone(), epoch(3, 0.7), &LOCAL).await {
        Ok(pending) => pending.await,
        Err(e) => Err(e),
    };
    assert!(matches!(write, Err(Error::StaleLease(_))), "{write:?}");
    assert!(queue.release(first.fence.clone(), &LOCAL).await.is_err());

    // The next attempt learns what is stored and continues after it.
    let second = queue.lease("w".into(), vec![JobKind::Builtin], &LOCAL).await.unwrap().unwrap();
    assert_eq!((second.fence.attempt, second.epochs_stored), (2, 2));
    for (e, acc) in [(3, 0.5), (4, 0.55)] {
        queue.record_epoch(second.fence.clone(), epoch(e, acc), &LOCAL).await.unwrap().await.unwrap();
    }
    let done = queue.complete(second.fence.clone(), &LOCAL).await.unwrap();
    assert_eq!(
        (done.state, done.epochs_done, done.best_epoch, done.best_value),
        (JobState::Succeeded, 4, 2, 0.6)
    );
    let (_, epochs) = queue.job(done.id).await.unwrap();
    let attempts: Vec<(u32, u32)> = epochs.iter().map(|e| (e.metrics.epoch, e.attempt)).collect();
    assert_eq!(attempts, [(1, 1), (2, 1), (3, 2), (4, 2)], "each epoch says which attempt stored it");
}

#[tokio::test]
async fn an_attempt_that_starts_over_rewrites_the_stored_epochs_and_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, queue) = open(dir.path(), &Config::default()).await;
    submit(&queue, "over", &[0], 3, &LOCAL).await;
    let first = queue.lease("w".into(), vec![JobKind::Builtin], &LOCAL).await.unwrap().unwrap();
    for (e, acc) in [(1, 0.2), (2, 0.9)] {
        queue.record_epoch(first.fence.clone(), epoch(e, acc), &LOCAL).await.unwrap().await.unwrap();
    }
    queue.release(first.fence, &LOCAL).await.unwrap();
    // A worker without a checkpoint trains from epoch 1 again: its rows replace the old ones.
    let second = queue.lease("w".into(), vec![JobKind::Builtin], &LOCAL).await.unwrap().unwrap();
    for (e, acc) in [(1, 0.25), (2, 0.4), (3, 0.5)] {
        queue.record_epoch(second.fence.clone(), epoch(e, acc), &LOCAL).await.unwrap().await.unwrap();
    }
    let done = queue.complete(second.fence, &LOCAL).await.unwrap();
    assert_eq!((done.epochs_done, done.best_epoch, done.best_value), (3, 3, 0.5), "the old best is gone");
    let (_, epochs) = queue.job(done.id).await.unwrap();
    assert!(epochs.iter().all(|e| e.attempt == 2));
}

#[tokio::test]
async fn an_attempt_resumed_after_the_last_stored_epoch_can_complete_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, queue) = open(dir.path(), &Config::default()).await;
    submit(&queue, "full", &[0], 2, &LOCAL).await;
    let first = queue.lease("w".into(), vec![JobKind::Builtin], &LOCAL).await.unwrap().unwrap();
    for e in 1..=2 {
        queue.record_epoch(first.fence.clone(), epoch(e, 0.5), &LOCAL).await.unwrap().await.unwrap();
    }
    // Stopped between its last epoch and completing: the next attempt's checkpoint is the end.
    queue.release(first.fence, &LOCAL).await.unwrap();
    let second = queue.lease("w".into(), vec![JobKind::Builtin], &LOCAL).await.unwrap().unwrap();
    assert_eq!(second.epochs_stored, 2);
    assert_eq!(queue.complete(second.fence, &LOCAL).await.unwrap().state, JobState::Succeeded);
}

#[tokio::test]
async fn leases_get_a_whole_ttl_of_grace_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config();
    let (db, queue) = open(dir.path(), &config).await;
    submit(&queue, "grace", &[0, 1], 5, &LOCAL).await;
    let a = queue.lease("w".into(), vec![JobKind::Builtin], &LOCAL).await.unwrap().unwrap();
    queue.record_epoch(a.fence.clone(), epoch(1, 0.5), &LOCAL).await.unwrap().await.unwrap();
    // The coordinator is down for longer than the TTL: nobody renews the lease.
    tokio::time::sleep(config.lease_ttl * 2).await;
    db.close().await;

    let (_db, queue) = open(dir.path(), &config).await;
    assert_eq!(queue.grant_restart_grace().await.unwrap(), 1, "the one running lease");
    assert!(queue.reap_expired().await.unwrap().is_empty(), "nothing expires inside the grace");
    // The worker reconnects within it: its fence still writes.
    queue.record_epoch(a.fence.clone(), epoch(2, 0.6), &LOCAL).await.unwrap().await.unwrap();
    // Without heartbeats the grace runs out like any lease.
    tokio::time::sleep(config.lease_ttl + Duration::from_millis(100)).await;
    let reaped = queue.reap_expired().await.unwrap();
    assert_eq!(
        reaped.iter().map(|j| (j.id, j.state, j.attempt)).collect::<Vec<_>>(),
        [(a.fence.job(), JobState::Queued, 2)]
    );
}

#[tokio::test]
async fn failed_and_cancelled_jobs_can_be_retried_by_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, queue) = open(dir.path(), &Config::default()).await;
    let alice = Principal::Token { name: "alice".into(), role: Role::User };
    let bob = Principal::Token { name: "bob".into(), role: Role::User };
    submit(&queue, "re", &[0, 1, 2], 1, &alice).await;

    // Job A fails for good (2 attempts), job B is cancelled, job C stays queued.
    let a = queue.lease("w".into(), vec![JobKind::Builtin], &LOCAL).await.unwrap().unwrap();
    queue.fail(a.fence.clone(), "out of memory".into(), &LOCAL).await.unwrap();
    let a2 = queue.lease("w".into(), vec![JobKind::Builtin], &LOCAL).await.unwrap().unwrap();
    assert_eq!(a2.fence.job(), a.fence.job());
    let failed = queue.fail(a2.fence, "out of memory".into(), &LOCAL).await.unwrap();
    assert_eq!((failed.state, failed.attempt), (JobState::Failed, 2));
    let b = JobId(a.fence.job().0 + 1);
    queue.cancel(b, &alice).await.unwrap();

    // Not the owner; a queued job: refused, nothing changed.
    let err = queue.retry(RetryTarget::Job(failed.id), &bob).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
    let err = queue.retry(RetryTarget::Job(JobId(b.0 + 1)), &alice).await.unwrap_err();
    assert!(err.to_string().contains("queued job cannot be retried"), "{err}");
    let summary = queue.summary("re").await.unwrap();
    assert_eq!((summary.queued, summary.failed, summary.cancelled), (1, 1, 1));

    // The sweep's failed jobs only: A comes back with a fresh budget, B stays cancelled.
    let target = RetryTarget::Sweep { name: "re".into(), failed: true, cancelled: false };
    let retried = queue.retry(target, &alice).await.unwrap();
    assert_eq!(
        retried.iter().map(|j| (j.id, j.state, j.attempt, j.max_attempts)).collect::<Vec<_>>(),
        [(failed.id, JobState::Queued, 3, 4)]
    );
    assert_eq!(
        retried[0].last_error.as_deref(),
        Some("out of memory"),
        "the reason stays until the next outcome"
    );
    let (job, _) = queue.job(b).await.unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    // One job by id: the cancelled one.
    let retried = queue.retry(RetryTarget::Job(b), &alice).await.unwrap();
    assert_eq!((retried[0].state, retried[0].attempt), (JobState::Queued, 2));
    let summary = queue.summary("re").await.unwrap();
    assert_eq!((summary.queued, summary.failed, summary.cancelled), (3, 0, 0));
}
