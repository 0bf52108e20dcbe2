//! Leases: exclusive claims under concurrency, heartbeats, expiry, retries and fencing.

use std::collections::HashSet;
use std::time::Duration;

use sweep_proto::pb::{self, lease_status::Verdict};

use crate::common::*;

#[tokio::test]
async fn concurrent_leases_hand_out_each_job_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let variants = ["natural_hardmax", "natural_softmax", "multi_softmax", "normal_lr1e-3", "normal_lr1e-2"];
    let seeds: Vec<u64> = (0..20).collect();
    assert_eq!(submit(&mut sweeps, spec("race", &variants, &seeds, 1)).await.unwrap().jobs_created, 100);

    let mut clients = Vec::new();
    for _ in 0..32 {
        clients.push(server.workers().await);
    }
    let all = lease_until_empty(clients).await;
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!(all.len(), 100, "every job handed out once");
    assert_eq!(unique.len(), 100, "no job handed out twice");
    let s = summary(&mut sweeps, "race").await;
    assert_eq!((s.running, s.queued), (100, 0));
    server.stop().await;
}

/// The queued count a lease carries stops at its cap: a long queue costs a lease no longer walk.
#[tokio::test]
async fn a_leases_queued_count_stops_at_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let (mut sweeps, mut workers) = (server.sweeps().await, server.workers().await);
    let seeds: Vec<u64> = (0..4100).collect();
    assert_eq!(
        submit(&mut sweeps, spec("long", &["normal_lr1e-3"], &seeds, 1)).await.unwrap().jobs_created,
        4100
    );
    register(&mut workers, "w").await;
    let request = pb::LeaseJobRequest { worker_id: "w".into(), slot: 0, ..Default::default() };
    let granted = workers.lease_job(request).await.unwrap().into_inner();
    assert!(granted.job.is_some());
    assert_eq!(granted.queued, Some(4096), "4,099 queued, counted up to 4,096");
    server.stop().await;
}

async fn wait_for_state(sweeps: &mut Sweeps, id: i64, want: pb::JobState, attempt: u32) -> pb::Job {
    for _ in 0..100 {
        let j = job(sweeps, id).await.job.unwrap();
        if j.state == want as i32 && j.attempt == attempt {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {id} never reached {want:?} attempt {attempt}");
}

#[tokio::test]
async fn expired_lease_requeues_and_fences_out_the_old_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), fast_config()).await;
    let mut sweeps = server.sweeps().await;
    let mut workers = server.workers().await;
    let mut s = spec("expiry", &["multi_softmax"], &[1], 3);
    s.max_attempts = 2;
    submit(&mut sweeps, s).await.unwrap();
    register(&mut workers, "w").await;

    let first = lease(&mut workers, "w").await.unwrap();
    let old = fence(&first);
    assert_eq!(first.lease_ttl_ms, 300);
    let (acks, err) = report(&mut workers, vec![epoch_report(&old, 1, 0.4)]).await;
    assert!(err.is_none() && acks.len() == 1);

    // No heartbeat: the reaper requeues the job as attempt 2; its stored epoch stays (a checkpoint
    // may continue after it).
    let requeued = wait_for_state(&mut sweeps, old.job_id, pb::JobState::Queued, 2).await;
    assert_eq!(requeued.epochs_done, 1);
    assert!(requeued.last_error.contains("lease expired"), "{}", requeued.last_error);

    // Every write of attempt 1 is rejected and stores nothing.
    let (acks, err) = report(&mut workers, vec![epoch_report(&old, 2, 0.5)]).await;
    assert!(acks.is_empty());
    assert_eq!(err.unwrap().code(), tonic::Code::FailedPrecondition);
    let err = workers.complete_job(pb::CompleteJobRequest { fence: Some(old.clone()) }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let err = workers
        .fail_job(pb::FailJobRequest { fence: Some(old.clone()), error: "late".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let hb = workers
        .heartbeat(pb::HeartbeatRequest { worker_id: "w".into(), leases: vec![old.clone()], idle_slots: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.leases[0].verdict, Verdict::Lost as i32);
    let after = job(&mut sweeps, old.job_id).await;
    assert_eq!(after.job.as_ref().unwrap().state, state(pb::JobState::Queued));
    let attempts: Vec<(u32, u32)> = after.epochs.iter().map(|e| (e.epoch, e.attempt)).collect();
    assert_eq!(attempts, [(1, 1)], "only attempt 1's acknowledged epoch: the rejected one stored nothing");
    assert_eq!(after.job.unwrap().last_error, requeued.last_error, "the late failure changed nothing");

    // Attempt 2: heartbeats keep the lease alive well past the TTL.
    let second = lease(&mut workers, "w").await.unwrap();
    let new = fence(&second);
    assert_eq!((new.attempt, second.epochs_stored), (2, 1));
    assert_ne!(new.lease_token, old.lease_token);
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let hb = workers
            .heartbeat(pb::HeartbeatRequest {
                worker_id: "w".into(),
                leases: vec![new.clone()],
                idle_slots: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(hb.leases[0].verdict, Verdict::Renewed as i32);
    }
    assert_eq!(job(&mut sweeps, new.job_id).await.job.unwrap().state, state(pb::JobState::Running));

    // Then it expires again: attempts are used up, so the job fails for good, error kept.
    let failed = wait_for_state(&mut sweeps, new.job_id, pb::JobState::Failed, 2).await;
    assert!(failed.last_error.contains("lease expired during attempt 2"), "{}", failed.last_error);
    assert!(lease(&mut workers, "w").await.is_none());
    server.stop().await;
}

#[tokio::test]
async fn reported_failure_retries_then_fails_keeping_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let mut workers = server.workers().await;
    let mut s = spec("retry", &["natural_hardmax"], &[3], 2);
    s.max_attempts = 2;
    submit(&mut sweeps, s).await.unwrap();
    register(&mut workers, "w").await;

    let a = lease(&mut workers, "w").await.unwrap();
    let r = workers
        .fail_job(pb::FailJobRequest { fence: a.fence.clone(), error: "CUDA out of memory".into() })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!((r.state, r.attempt), (state(pb::JobState::Queued), 2));
    let b = lease(&mut workers, "w").await.unwrap();
    assert_eq!(fence(&b).attempt, 2);
    let r = workers
        .fail_job(pb::FailJobRequest { fence: b.fence.clone(), error: "NaN loss".into() })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!((r.state, r.attempt, r.last_error.as_str()), (state(pb::JobState::Failed), 2, "NaN loss"));
    assert!(r.finished_at_ms > 0);
    server.stop().await;
}

#[tokio::test]
async fn batched_leases_go_oldest_first_and_skip_unknown_workers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), coordinator::Config::default()).await;
    let mut sweeps = server.sweeps().await;
    let seeds: Vec<u64> = (0..8).collect();
    assert_eq!(
        submit(&mut sweeps, spec("order", &["natural_softmax"], &seeds, 1)).await.unwrap().jobs_created,
        8
    );
    let mut tasks = Vec::new();
    for i in 0..6 {
        let mut w = server.workers().await;
        tasks.push(tokio::spawn(async move {
            let id = format!("o{i}");
            if i % 3 != 0 {
                register(&mut w, &id).await;
            }
            w.lease_job(pb::LeaseJobRequest { worker_id: id, slot: 0, ..Default::default() }).await
        }));
    }
    let mut leased = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(r) => leased.push(r.into_inner().job.unwrap().fence.unwrap().job_id),
            Err(status) => {
                assert_eq!(i % 3, 0, "only unregistered workers fail: {status}");
                assert_eq!(status.code(), tonic::Code::NotFound);
            }
        }
    }
    leased.sort_unstable();
    assert_eq!(leased.len(), 4);
    let s = summary(&mut sweeps, "order").await;
    assert_eq!((s.running, s.queued), (4, 4));
    // The four oldest jobs were handed out (ids are assigned in submission order).
    let first = leased[0];
    assert_eq!(leased, (first..first + 4).collect::<Vec<_>>());
    server.stop().await;
}
