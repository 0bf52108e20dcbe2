//! A worker process (the real agent, CPU backend) against a real coordinator on 127.0.0.1:
//! completes a 2-job sweep with every epoch stored, survives a coordinator restart mid-sweep
//! without losing a measured epoch, stops a job the user cancels, and when stopped hands its job
//! back so another worker continues it from the checkpoint (in a shared directory or on the
//! coordinator) with an uninterrupted run's metrics; a slot that fuses trains the queued jobs
//! of one shape together and hands back a job of another shape, and slots that fuse share the
//! queued jobs.

mod cluster;

use std::net::SocketAddr;
use std::time::Duration;

use cluster::{
    Agent, agent_config, client, epochs_stored, start_agent, start_agent_with, start_fresh_server,
    start_server, start_server_with, wait_for,
};
use coordinator::Config;
use sweep_proto::pb::{
    CancelSweepRequest, DataOptions, GetJobRequest, ListJobsRequest, ListWorkersRequest, SubmitSweepRequest,
    SweepSpec,
};
use worker::agent::{self, Cadence, CheckpointSettings, CheckpointTarget, Commands, SlotChoice};
use worker::training::FuseChoice;

fn spec(name: &str, seeds: Vec<u64>, epochs: u32) -> SweepSpec {
    SweepSpec {
        name: name.into(),
        variants: vec!["natural_softmax".into()],
        seeds,
        epochs,
        batch_size: 32,
        data: Some(DataOptions {
            train_limit: 320,
            test_limit: 64,
            augment: false,
            width_multiplier: 0.125,
            bn_group: 0,
        }),
        ..Default::default()
    }
}

fn start_worker(addr: SocketAddr) -> Agent {
    start_worker_with(addr, "test-worker", None)
}

fn start_worker_with(addr: SocketAddr, id: &str, checkpoints: Option<CheckpointSettings>) -> Agent {
    start_agent(addr, id, checkpoints, Commands::Refuse)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_completes_a_two_job_sweep_with_every_epoch_stored() {
    let (_dir, server) = start_fresh_server().await;
    let mut c = client(server.addr).await;
    c.submit_sweep(SubmitSweepRequest { spec: Some(spec("two", vec![0, 1], 2)) }).await.unwrap();
    let (stop, agent) = start_worker(server.addr);

    let s = wait_for(server.addr, "two", Duration::from_secs(180), |s| s.succeeded == 2).await;
    assert_eq!((s.epochs_done, s.epochs_total, s.failed), (4, 4, 0));
    assert_eq!(epochs_stored(server.addr, "two").await, vec![vec![1, 2], vec![1, 2]]);

    let workers = sweep_proto::pb::sweep_service_client::SweepServiceClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
    .list_workers(sweep_proto::pb::ListWorkersRequest {})
    .await
    .unwrap()
    .into_inner()
    .workers;
    assert_eq!(workers.len(), 1);
    assert_eq!(
        (workers[0].hostname.as_str(), workers[0].gpus.as_slice()),
        ("test-host", &["cpu".to_string()][..])
    );

    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fusing_slot_trains_the_jobs_of_one_shape_together_and_hands_back_another() {
    let (_dir, server) = start_fresh_server().await;
    let mut c = client(server.addr).await;
    let mut together = spec("together", vec![0, 1], 2);
    together.variants.push("normal_lr1e-3".into());
    c.submit_sweep(SubmitSweepRequest { spec: Some(together) }).await.unwrap();
    // Another batch size: cannot share the others' steps.
    let other = SweepSpec { batch_size: 64, ..spec("other", vec![5], 2) };
    c.submit_sweep(SubmitSweepRequest { spec: Some(other) }).await.unwrap();
    let (stop, agent) = start_agent_with(agent::AgentConfig {
        fuse: FuseChoice::Fixed(5),
        ..agent_config(server.addr, "fusing-worker", None, Commands::Refuse)
    });

    // One slot, four jobs running at once: leased and trained as one group.
    wait_for(server.addr, "together", Duration::from_secs(120), |s| s.running == 4).await;
    let s = wait_for(server.addr, "together", Duration::from_secs(180), |s| s.succeeded == 4).await;
    assert_eq!((s.epochs_done, s.epochs_total, s.failed), (8, 8, 0));
    assert_eq!(epochs_stored(server.addr, "together").await, vec![vec![1, 2]; 4]);
    // The fifth lease found the other shape, handed it back, and it trained on its own after.
    let s = wait_for(server.addr, "other", Duration::from_secs(180), |s| s.succeeded == 1).await;
    assert_eq!((s.epochs_done, s.failed), (2, 0));
    let jobs = c.list_jobs(ListJobsRequest { sweep: "other".into(), ..Default::default() }).await.unwrap();
    let job = c.get_job(GetJobRequest { job_id: jobs.into_inner().jobs[0].id }).await.unwrap().into_inner();
    assert_eq!(job.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), vec![1, 2]);

    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
    server.shutdown().await;
}

/// Two slots that fuse up to four jobs and four queued jobs of one shape: each slot trains two,
/// so neither slot stays idle while the other trains all four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fusing_slots_share_the_queued_jobs() {
    let (_dir, server) = start_fresh_server().await;
    let mut c = client(server.addr).await;
    let mut shared = spec("shared", vec![0, 1], 500);
    shared.variants.push("normal_lr1e-3".into());
    c.submit_sweep(SubmitSweepRequest { spec: Some(shared) }).await.unwrap();
    let (stop, agent) = start_agent_with(agent::AgentConfig {
        fuse: FuseChoice::Fixed(4),
        slots: SlotChoice::Fixed(2),
        ..agent_config(server.addr, "sharing-worker", None, Commands::Refuse)
    });

    wait_for(server.addr, "shared", Duration::from_secs(120), |s| s.running == 4).await;
    let start = std::time::Instant::now();
    let idle = loop {
        let workers = c.list_workers(ListWorkersRequest {}).await.unwrap().into_inner().workers;
        let idle = workers[0].idle_slots;
        if idle == 0 || start.elapsed() > Duration::from_secs(30) {
            break idle;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(idle, 0, "both slots train two jobs each");

    c.cancel_sweep(CancelSweepRequest { sweep: "shared".into() }).await.unwrap();
    wait_for(server.addr, "shared", Duration::from_secs(30), |s| s.cancelled == 4).await;
    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_measured_while_the_coordinator_is_down_are_resent() {
    let dir = tempfile::tempdir().unwrap();
    let url = coordinator::testing::database_url(dir.path());
    let server = start_server(&url, "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    client(addr)
        .await
        .submit_sweep(SubmitSweepRequest { spec: Some(spec("restart", vec![0], 6)) })
        .await
        .unwrap();
    let (stop, agent) = start_worker(addr);

    // Take the coordinator away once the first epoch is stored, while the job keeps training.
    wait_for(addr, "restart", Duration::from_secs(120), |s| s.epochs_done >= 1).await;
    server.shutdown().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server = start_server(&url, addr).await;

    let s = wait_for(addr, "restart", Duration::from_secs(180), |s| s.succeeded == 1).await;
    assert_eq!((s.epochs_done, s.epochs_total), (6, 6));
    assert_eq!(epochs_stored(addr, "restart").await, vec![vec![1, 2, 3, 4, 5, 6]]);

    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_sweep_stops_the_running_job() {
    let (_dir, server) = start_fresh_server().await;
    let mut c = client(server.addr).await;
    c.submit_sweep(SubmitSweepRequest { spec: Some(spec("stop", vec![0], 500)) }).await.unwrap();
    let (stop, agent) = start_worker(server.addr);
    wait_for(server.addr, "stop", Duration::from_secs(120), |s| s.epochs_done >= 1).await;

    c.cancel_sweep(CancelSweepRequest { sweep: "stop".into() }).await.unwrap();
    let s = wait_for(server.addr, "stop", Duration::from_secs(10), |s| s.cancelled == 1).await;
    assert!(s.epochs_done < 500);
    // The worker's only slot is free again only if it stopped the cancelled 500-epoch job (it
    // learns of it at its next heartbeat, ttl/3 ≈ 1.7 s): a new one-epoch job must finish soon.
    c.submit_sweep(SubmitSweepRequest { spec: Some(spec("next", vec![0], 1)) }).await.unwrap();
    wait_for(server.addr, "next", Duration::from_secs(60), |s| s.succeeded == 1).await;
    let stopped = wait_for(server.addr, "stop", Duration::from_secs(1), |_| true).await;
    assert!(stopped.epochs_done <= s.epochs_done + 2, "cancelled job kept training: {stopped:?}");

    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
    server.shutdown().await;
}

/// Every stored epoch of the sweep's only job: (epoch, attempt, metrics without the timing).
async fn epoch_rows(addr: SocketAddr, sweep: &str) -> Vec<(u32, u32, [u64; 4])> {
    let mut c = client(addr).await;
    let jobs = c.list_jobs(ListJobsRequest { sweep: sweep.into(), ..Default::default() }).await.unwrap();
    let job = jobs.into_inner().jobs[0].id;
    let detail = c.get_job(GetJobRequest { job_id: job }).await.unwrap().into_inner();
    let bits = |e: &sweep_proto::pb::EpochMetrics| {
        [e.train_loss, e.train_acc, e.val_loss, e.val_acc].map(|v| v.unwrap_or(f64::NAN).to_bits())
    };
    detail.epochs.iter().map(|e| (e.epoch, e.attempt, bits(e))).collect()
}

/// Runs sweep `name` (the job of [`spec`] with seed 3, 6 epochs) with worker A stopped (as by
/// SIGTERM) after two epochs and worker B finishing it, both checkpointing to `checkpoints`;
/// returns the epochs stored before the hand-back and the sweep's epoch rows.
async fn split_run(
    addr: SocketAddr,
    name: &str,
    checkpoints: CheckpointSettings,
    before_b: impl FnOnce(i64, u32),
) -> (u32, Vec<(u32, u32, [u64; 4])>) {
    let mut c = client(addr).await;
    c.submit_sweep(SubmitSweepRequest { spec: Some(spec(name, vec![3], 6)) }).await.unwrap();
    // A ends its epoch, checkpoints, delivers it and hands the job back, which costs no attempt.
    let (stop, agent) = start_worker_with(addr, "worker-a", Some(checkpoints.clone()));
    wait_for(addr, name, Duration::from_secs(120), |s| s.epochs_done >= 2).await;
    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
    let jobs = c.list_jobs(ListJobsRequest { sweep: name.into(), ..Default::default() }).await.unwrap();
    let job = jobs.into_inner().jobs[0].clone();
    assert_eq!(
        job.state,
        sweep_proto::pb::JobState::Queued as i32,
        "handed back at once, not left to expire"
    );
    assert_eq!((job.attempt, job.max_attempts), (2, 4), "a new attempt that does not use up the budget");
    let handed_back = job.epochs_done;
    assert!((2..6).contains(&handed_back), "{handed_back}");
    before_b(job.id, handed_back);
    let (stop, agent) = start_worker_with(addr, "worker-b", Some(checkpoints));
    wait_for(addr, name, Duration::from_secs(180), |s| s.succeeded == 1).await;
    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
    (handed_back, epoch_rows(addr, name).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_hands_its_job_back_and_another_continues_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let url = coordinator::testing::database_url(dir.path());
    let store = dir.path().join("coordinator-checkpoints");
    let mut config = Config::with_lease_ttl(Duration::from_secs(5));
    config.checkpoints = Some(coordinator::checkpoints::CheckpointSettings::in_dir(&store));
    let server = start_server_with(&url, "127.0.0.1:0".parse().unwrap(), config).await;
    let mut c = client(server.addr).await;

    // The uninterrupted run of the same job (same seed, so same weights and data order).
    c.submit_sweep(SubmitSweepRequest { spec: Some(spec("whole", vec![3], 6)) }).await.unwrap();
    let (stop, agent) = start_worker(server.addr);
    wait_for(server.addr, "whole", Duration::from_secs(180), |s| s.succeeded == 1).await;
    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
    let whole = epoch_rows(server.addr, "whole").await;
    let metrics = |rows: &[(u32, u32, [u64; 4])]| rows.iter().map(|(e, _, m)| (*e, *m)).collect::<Vec<_>>();

    // B continues after the last stored epoch from the checkpoint, in a shared directory or on the
    // coordinator: nothing is trained or sent twice, and the metrics are the uninterrupted run's,
    // bit for bit (CPU).
    let in_dir = CheckpointSettings {
        target: CheckpointTarget::Directory(dir.path().join("checkpoints")),
        cadence: Cadence::every(1),
    };
    let on_coordinator =
        CheckpointSettings { target: CheckpointTarget::Coordinator, cadence: Cadence::every(1) };
    for (name, checkpoints) in [("split", in_dir), ("split-coordinator", on_coordinator)] {
        let remote = checkpoints.target == CheckpointTarget::Coordinator;
        let (handed_back, split) = split_run(server.addr, name, checkpoints, |job, epoch| {
            let kept = store.join(format!("job-{job}")).join(format!("epoch-{epoch:05}.ckpt"));
            assert_eq!(kept.is_file(), remote, "{name}: the stop's checkpoint {}", kept.display());
        })
        .await;
        let attempts: Vec<(u32, u32)> = split.iter().map(|(e, a, _)| (*e, *a)).collect();
        let expected: Vec<(u32, u32)> = (1..=6).map(|e| (e, if e <= handed_back { 1 } else { 2 })).collect();
        assert_eq!(attempts, expected, "{name}");
        assert_eq!(metrics(&split), metrics(&whole), "{name}");
    }
    let left = std::fs::read_dir(&store).unwrap().count();
    assert_eq!(left, 0, "the coordinator removes a succeeded job's checkpoints");
    server.shutdown().await;
}
