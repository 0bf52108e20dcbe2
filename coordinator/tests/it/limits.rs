//! Limits on what one client may ask: jobs per submission and per sweep, leases per heartbeat,
//! write rates per credential, bounded error messages. (Heartbeat latency during the largest
//! submissions: `tests/flood.rs`.)

use coordinator::auth::RateLimit;
use coordinator::{Config, Limits};
use sweep_proto::pb;
use tonic::Code;

use crate::common::*;
use crate::secure::{SecureServer, Who};

fn small_limits() -> Config {
    let limits = Limits {
        max_jobs_per_submission: 50,
        max_jobs_per_sweep: 80,
        max_fences_per_heartbeat: 4,
        ..Limits::default()
    };
    Config { limits, ..Config::default() }
}

#[tokio::test]
async fn oversized_requests_are_refused_naming_the_limit_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), small_limits()).await;
    let mut sweeps = server.sweeps().await;
    let seeds = |range: std::ops::Range<u64>| range.collect::<Vec<_>>();

    let err = submit(&mut sweeps, spec("big", &["natural_softmax", "normal_lr1e-3"], &seeds(0..26), 1)).await;
    let err = err.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("52 jobs") && err.message().contains("max_jobs_per_submission limit of 50")
    );
    assert!(sweeps.list_sweeps(pb::ListSweepsRequest {}).await.unwrap().into_inner().sweeps.is_empty());

    submit(&mut sweeps, spec("big", &["natural_softmax"], &seeds(0..50), 1)).await.unwrap();
    let err = submit(&mut sweeps, spec("big", &["natural_softmax"], &seeds(40..90), 1)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("90 jobs") && err.message().contains("max_jobs_per_sweep limit of 80"));
    let s = summary(&mut sweeps, "big").await;
    assert_eq!((s.jobs_total, s.spec.unwrap().seeds.len()), (50, 50), "the refused growth stored nothing");

    let mut workers = server.workers().await;
    register(&mut workers, "w").await;
    let fence = pb::Fence { job_id: 1, attempt: 1, lease_token: "t".into() };
    let beat = pb::HeartbeatRequest { worker_id: "w".into(), leases: vec![fence; 5], idle_slots: 0 };
    let err = workers.heartbeat(beat).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("max_fences_per_heartbeat limit of 4"), "{err:?}");

    // A megabyte of variant name: INVALID_ARGUMENT with a short message, not a broken header.
    let huge = "x".repeat(1 << 20);
    let err = submit(&mut sweeps, spec("huge", &[huge.as_str()], &[0], 1)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().len() < 400 && err.message().contains('…'), "{}", err.message().len());
    server.stop().await;
}

#[tokio::test]
async fn each_credential_has_its_own_write_budget() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        user_writes: RateLimit::new(0.5, 3.0),
        worker_writes: RateLimit::new(0.5, 6.0),
        ..Limits::default()
    };
    let server = SecureServer::start(dir.path(), Config { limits, ..Config::default() }, false, false).await;
    let mut alice = server.sweeps(Who::User).await;
    for i in 0..3 {
        let request =
            pb::SubmitSweepRequest { spec: Some(spec(&format!("s{i}"), &["natural_softmax"], &[0], 1)) };
        alice.submit_sweep(request).await.unwrap();
    }
    let before = server.snapshot().await;
    let request = pb::SubmitSweepRequest { spec: Some(spec("s3", &["natural_softmax"], &[0], 1)) };
    let err = alice.submit_sweep(request.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("--user-write-rate"), "{err:?}");
    assert_eq!(server.snapshot().await, before);
    // Reads are not limited; another credential has its own budget; workers have theirs.
    alice.list_sweeps(pb::ListSweepsRequest {}).await.unwrap();
    server.sweeps(Who::OtherUser).await.submit_sweep(request).await.unwrap();
    let mut gpu = server.workers(Who::Worker).await;
    let register = pb::RegisterWorkerRequest {
        worker_id: "w".into(),
        hostname: "h".into(),
        slots: 1,
        ..Default::default()
    };
    gpu.register_worker(register).await.unwrap();
    for _ in 0..5 {
        gpu.lease_job(pb::LeaseJobRequest { worker_id: "w".into(), slot: 0, ..Default::default() })
            .await
            .unwrap();
    }
    let err = gpu
        .lease_job(pb::LeaseJobRequest { worker_id: "w".into(), slot: 0, ..Default::default() })
        .await
        .unwrap_err();
    assert!(err.code() == Code::ResourceExhausted && err.message().contains("--worker-write-rate"));
    server.stop().await;
}
