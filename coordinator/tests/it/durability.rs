//! A restart on the same database file loses nothing the coordinator acknowledged.

use sweep_proto::pb;

use crate::common::*;

#[tokio::test]
async fn restart_keeps_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let mut workers = server.workers().await;
    submit(&mut sweeps, spec("durable", &["natural_softmax"], &[0, 1], 2)).await.unwrap();
    register(&mut workers, "w").await;
    let a = lease(&mut workers, "w").await.unwrap();
    let fa = fence(&a);
    let (acks, _) = report(&mut workers, vec![epoch_report(&fa, 1, 0.25), epoch_report(&fa, 2, 0.35)]).await;
    assert_eq!(acks.len(), 2);
    workers.complete_job(pb::CompleteJobRequest { fence: Some(fa.clone()) }).await.unwrap();
    let b = lease(&mut workers, "w").await.unwrap();
    let fb = fence(&b);
    let (acks, _) = report(&mut workers, vec![epoch_report(&fb, 1, 0.125)]).await;
    assert_eq!(acks.len(), 1);
    let before = summary(&mut sweeps, "durable").await;
    server.stop().await;

    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let mut workers = server.workers().await;
    let after = summary(&mut sweeps, "durable").await;
    assert_eq!(after, before);
    assert_eq!((after.succeeded, after.running, after.epochs_done), (1, 1, 3));
    let ja = job(&mut sweeps, fa.job_id).await;
    assert_eq!(ja.epochs.iter().map(|e| e.val_acc).collect::<Vec<_>>(), vec![Some(0.25), Some(0.35)]);
    let jb = job(&mut sweeps, fb.job_id).await;
    assert_eq!(jb.epochs.len(), 1);
    assert_eq!(jb.epochs[0], pb::EpochMetrics { attempt: 1, ..metrics(1, 0.125) });
    assert_eq!(sweeps.list_workers(pb::ListWorkersRequest {}).await.unwrap().into_inner().workers.len(), 1);

    // The lease survived too: the worker carries on where it was.
    let (acks, err) =
        report(&mut workers, vec![epoch_report(&fb, 1, 0.125), epoch_report(&fb, 2, 0.5)]).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(acks.iter().map(|a| a.duplicate).collect::<Vec<_>>(), vec![true, false]);
    workers.complete_job(pb::CompleteJobRequest { fence: Some(fb) }).await.unwrap();
    assert_eq!(summary(&mut sweeps, "durable").await.succeeded, 2);
    server.stop().await;
}
