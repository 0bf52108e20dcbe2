//! Cancelling jobs and sweeps; a running job's worker learns it at its next heartbeat.

use sweep_proto::pb::{self, lease_status::Verdict};
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn cancel_queued_and_running_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let mut workers = server.workers().await;
    submit(&mut sweeps, spec("stop", &["natural_softmax"], &[0, 1, 2], 3)).await.unwrap();
    register(&mut workers, "w").await;
    let running = lease(&mut workers, "w").await.unwrap();
    let f = fence(&running);
    let (acks, _) = report(&mut workers, vec![epoch_report(&f, 1, 0.2)]).await;
    assert_eq!(acks.len(), 1);

    // A queued job is cancelled at once and never leased.
    let queued_id = f.job_id + 1;
    let r = sweeps.cancel_job(pb::CancelJobRequest { job_id: queued_id }).await.unwrap().into_inner();
    assert_eq!(r.cancelled, 1);
    let j = job(&mut sweeps, queued_id).await.job.unwrap();
    assert_eq!(j.state, state(pb::JobState::Cancelled));
    assert!(j.finished_at_ms > 0);

    // The running job: cancelled, the heartbeat says so, later writes are rejected.
    sweeps.cancel_job(pb::CancelJobRequest { job_id: f.job_id }).await.unwrap();
    let hb = workers
        .heartbeat(pb::HeartbeatRequest { worker_id: "w".into(), leases: vec![f.clone()], idle_slots: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.leases[0].verdict, Verdict::Cancelled as i32);
    let (acks, err) = report(&mut workers, vec![epoch_report(&f, 2, 0.3)]).await;
    assert!(acks.is_empty());
    assert_eq!(err.unwrap().code(), Code::FailedPrecondition);
    let err = workers.complete_job(pb::CompleteJobRequest { fence: Some(f.clone()) }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let detail = job(&mut sweeps, f.job_id).await;
    assert_eq!(detail.epochs.len(), 1, "the epoch acked before the cancel stays, nothing after");
    assert_eq!(detail.job.unwrap().state, state(pb::JobState::Cancelled));

    // Cancelling a finished job is refused; cancelling the sweep takes the last queued job.
    let err = sweeps.cancel_job(pb::CancelJobRequest { job_id: f.job_id }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let r = sweeps.cancel_sweep(pb::CancelSweepRequest { sweep: "stop".into() }).await.unwrap().into_inner();
    assert_eq!(r.cancelled, 1);
    let s = summary(&mut sweeps, "stop").await;
    assert_eq!((s.cancelled, s.queued, s.running), (3, 0, 0));
    assert_eq!(s.progress_percent, 100.0, "cancelled jobs count only the epochs they ran");
    assert!(lease(&mut workers, "w").await.is_none());
    server.stop().await;
}
