//! The queue façade on its own, without gRPC: domain values in and out, one event per committed
//! change, and stored values that break the schema's rules reported instead of guessed at.

use coordinator::events::Event;
use coordinator::queue::{Recorded, Registration};
use coordinator::{Config, Database, Error, Principal, Queue};
use sqlx::Connection;
use sweep_proto::domain::{EpochMetrics, JobKind, JobState, LeaseVerdict, SweepSpec};

use crate::common::*;

/// Authentication off: every right.
const LOCAL: Principal = Principal::Local;

fn epoch(epoch: u32, val_acc: f64) -> EpochMetrics {
    EpochMetrics::try_from(metrics(epoch, val_acc)).unwrap()
}

async fn open(dir: &std::path::Path) -> (Database, Queue) {
    let db = Database::open(&db_url(dir)).await.unwrap();
    let queue = Queue::new(db.clone(), &Config::default());
    queue
        .register(
            Registration {
                worker_id: "w".into(),
                hostname: "h".into(),
                gpus: vec![],
                slots: 0,
                data_files: vec![],
            },
            &LOCAL,
        )
        .await
        .unwrap();
    (db, queue)
}

#[tokio::test]
async fn a_job_goes_through_the_queue_as_domain_values() {
    let dir = tempfile::tempdir().unwrap();
    let (db, queue) = open(dir.path()).await;
    let mut events = queue.events().subscribe();
    // A seed above i64::MAX: stored bit-for-bit, handed back as the same u64.
    let spec = SweepSpec::try_from(spec("typed", &["normal_lr1e-2"], &[u64::MAX], 2)).unwrap();
    let submitted = queue.submit(spec.clone(), &LOCAL).await.unwrap();
    assert_eq!((submitted.created, submitted.existing), (1, 0));
    assert_eq!(queue.submit(spec, &LOCAL).await.unwrap().existing, 1);

    let a = queue.lease("w".into(), vec![JobKind::Builtin], &LOCAL).await.unwrap().expect("a queued job");
    assert_eq!(
        (a.variant, a.seed, a.epochs, a.learning_rate),
        ("normal_lr1e-2".to_string(), u64::MAX, 2, 1e-2)
    );
    assert!(queue.lease("w".into(), vec![JobKind::Builtin], &LOCAL).await.unwrap().is_none());
    let beat = queue.heartbeat("w".into(), 0, vec![a.fence.clone()], &LOCAL).await.unwrap();
    assert_eq!(beat, vec![(a.fence.job(), LeaseVerdict::Renewed)]);

    let mut recorded = Vec::new();
    for (e, acc) in [(1, 0.5), (2, 0.25), (2, 0.25)] {
        recorded
            .push(queue.record_epoch(a.fence.clone(), epoch(e, acc), &LOCAL).await.unwrap().await.unwrap());
    }
    assert_eq!(recorded, [Recorded::Stored, Recorded::Stored, Recorded::Duplicate]);
    let job = queue.complete(a.fence.clone(), &LOCAL).await.unwrap();
    assert_eq!(
        (job.state, job.epochs_done, job.best_epoch, job.best_value),
        (JobState::Succeeded, 2, 1, 0.5)
    );
    let (stored, epochs) = queue.job(job.id).await.unwrap();
    assert_eq!(stored, job);
    let stored_epochs: Vec<_> = epochs.iter().map(|e| (e.metrics.clone(), e.attempt)).collect();
    assert_eq!(stored_epochs, vec![(epoch(1, 0.5), 1), (epoch(2, 0.25), 1)]);
    let summary = queue.summary("typed").await.unwrap();
    assert_eq!((summary.jobs_total(), summary.succeeded, summary.progress_percent()), (1, 1, 100.0));
    assert_eq!(summary.eta_seconds, Some(0.0));

    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(match &*event {
            Event::JobChanged(j) => format!("{} {}", j.id, j.state),
            Event::EpochRecorded(r) => format!("{} epoch {} seed {}", r.job_id, r.metrics.epoch, r.seed),
        });
    }
    let id = job.id;
    let want = [
        format!("{id} queued"),
        format!("{id} running"),
        format!("{id} epoch 1 seed {}", u64::MAX),
        format!("{id} epoch 2 seed {}", u64::MAX),
        format!("{id} succeeded"),
    ];
    assert_eq!(seen, want);
    db.close().await;
}

#[tokio::test]
async fn the_best_epoch_is_the_first_to_reach_the_best_value_however_the_epochs_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let (db, queue) = open(dir.path()).await;
    let spec = SweepSpec::try_from(spec("best", &["natural_softmax"], &[0], 6)).unwrap();
    queue.submit(spec, &LOCAL).await.unwrap();
    let a = queue.lease("w".into(), vec![JobKind::Builtin], &LOCAL).await.unwrap().unwrap();
    // Queued back to back, so SQLite stores them in one batch: the ranking must see them all.
    let mut pending = Vec::new();
    for (e, acc) in [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.7), (5, 0.2)] {
        pending.push(queue.record_epoch(a.fence.clone(), epoch(e, acc), &LOCAL).await.unwrap());
    }
    for p in pending {
        assert_eq!(p.await.unwrap(), Recorded::Stored);
    }
    let (job, _) = queue.job(a.fence.job()).await.unwrap();
    assert_eq!(
        (job.epochs_done, job.best_epoch, job.best_value),
        (5, 2, 0.7),
        "ties go to the earlier epoch"
    );
    queue.record_epoch(a.fence.clone(), epoch(6, 0.9), &LOCAL).await.unwrap().await.unwrap();
    let (job, _) = queue.job(a.fence.job()).await.unwrap();
    assert_eq!((job.epochs_done, job.best_epoch, job.best_value), (6, 6, 0.9));
    db.close().await;
}

#[tokio::test]
async fn an_unknown_stored_state_is_an_internal_error_not_a_failed_job() {
    let dir = tempfile::tempdir().unwrap();
    // SQLite: the hand edit below needs its pragma.
    let db = Database::open(&sqlite_url(dir.path())).await.unwrap();
    let queue = Queue::new(db.clone(), &Config::default());
    let spec = SweepSpec::try_from(spec("corrupt", &["natural_softmax"], &[0], 1)).unwrap();
    queue.submit(spec, &LOCAL).await.unwrap();
    let id = queue.jobs("corrupt", None, None).await.unwrap()[0].id;

    // Only a hand edit that bypasses the CHECK constraint can store such a state.
    let mut conn = sqlx::SqliteConnection::connect(&sqlite_url(dir.path())).await.unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = ON").execute(&mut conn).await.unwrap();
    sqlx::query("UPDATE jobs SET state = 'paused' WHERE id = ?1")
        .bind(id.0)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    for err in [queue.job(id).await.unwrap_err(), queue.summary("corrupt").await.unwrap_err()] {
        assert!(matches!(err, Error::Internal(_)), "{err:?}");
        assert!(err.to_string().contains("state"), "{err}");
    }
    assert!(matches!(queue.cancel(id, &LOCAL).await.unwrap_err(), Error::Internal(_)));
    db.close().await;
}
