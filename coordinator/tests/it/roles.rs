//! The README's role table, one test per row: every RPC called by every kind of caller (no
//! token, a forged token, the worker, another worker, the owning user, another user, an admin)
//! over TLS with client certificates. A refused call gets the row's code and changes nothing in
//! the database; an allowed one succeeds.

use sweep_proto::connect::AuthChannel;
use sweep_proto::pb;
use sweep_proto::pb::sweep_service_client::SweepServiceClient;
use sweep_proto::pb::worker_service_client::WorkerServiceClient;
use tokio_stream::StreamExt;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

use crate::common::{metrics, spec};
use crate::secure::{SecureServer, Who};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    SubmitSweep,
    ListSweeps,
    GetSweep,
    ListJobs,
    GetJob,
    ListWorkers,
    WatchSweep,
    CancelJob,
    CancelSweep,
    RetryJobs,
    RegisterWorker,
    LeaseJob,
    Heartbeat,
    ReportEpochs,
    CompleteJob,
    FailJob,
    ReleaseJob,
    PutCheckpoint,
    GetCheckpoint,
    Reflection,
    Health,
}

/// What the role table says `who` gets from `rpc`: `None` for success, else the refusal.
fn expected(rpc: Rpc, who: Who) -> Option<Code> {
    use Rpc::*;
    use Who::*;
    let worker_rpc = matches!(
        rpc,
        RegisterWorker
            | LeaseJob
            | Heartbeat
            | ReportEpochs
            | CompleteJob
            | FailJob
            | ReleaseJob
            | PutCheckpoint
            | GetCheckpoint
    );
    match (rpc, who) {
        (Health, _) => None,
        (_, Anonymous | Forged) => Some(Code::Unauthenticated),
        (Reflection, _) => None,
        // The worker id and the lease belong to `Worker`'s credential.
        (_, OtherWorker) if worker_rpc => Some(Code::PermissionDenied),
        (_, Worker) if worker_rpc => None,
        (_, User | OtherUser | Admin) if worker_rpc => Some(Code::PermissionDenied),
        (_, Worker | OtherWorker) => Some(Code::PermissionDenied),
        // The sweep belongs to `User`.
        (CancelJob | CancelSweep | RetryJobs, OtherUser) => Some(Code::PermissionDenied),
        _ => None,
    }
}

/// A secured server where `User` submitted sweep `owned` (8 one-epoch jobs) and `Worker`
/// registered worker `wa`, leased the oldest job and stored its epoch.
struct Env {
    server: SecureServer,
    jobs: Vec<i64>,
    fence: pb::Fence,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = Some(coordinator::checkpoints::CheckpointSettings::in_dir(dir.path().join("ckpt")));
    let config = coordinator::Config { checkpoints, ..Default::default() };
    let server = SecureServer::start(dir.path(), config, true, true).await;
    let mut owner = server.sweeps(Who::User).await;
    let request = pb::SubmitSweepRequest {
        spec: Some(spec("owned", &["natural_softmax"], &[0, 1, 2, 3, 4, 5, 6, 7], 1)),
    };
    owner.submit_sweep(request).await.unwrap();
    let listed = owner.list_jobs(pb::ListJobsRequest { sweep: "owned".into(), ..Default::default() }).await;
    let jobs = listed.unwrap().into_inner().jobs.iter().map(|j| j.id).collect();
    let mut gpu = server.workers(Who::Worker).await;
    gpu.register_worker(register_request("host-a")).await.unwrap();
    let lease = gpu
        .lease_job(pb::LeaseJobRequest { worker_id: "wa".into(), slot: 0, ..Default::default() })
        .await
        .unwrap();
    let fence = lease.into_inner().job.unwrap().fence.unwrap();
    report(&mut gpu, &fence).await.unwrap();
    put_checkpoint(&mut gpu, &fence).await.unwrap();
    Env { server, jobs, fence, _dir: dir }
}

fn register_request(host: &str) -> pb::RegisterWorkerRequest {
    pb::RegisterWorkerRequest {
        worker_id: "wa".into(),
        hostname: host.into(),
        gpus: vec!["H200".into()],
        slots: 1,
        data_files: vec![],
    }
}

/// Uploads a checkpoint after epoch 1 of `fence`'s job.
async fn put_checkpoint(w: &mut WorkerServiceClient<AuthChannel>, fence: &pb::Fence) -> Result<(), Status> {
    use pb::checkpoint_chunk::Part;
    let bytes = b"weights".to_vec();
    let header = pb::CheckpointHeader {
        fence: Some(fence.clone()),
        epoch: 1,
        size: bytes.len() as u64,
        sha256: coordinator::checkpoints::sha256_hex(&bytes),
    };
    let messages = [Part::Header(header), Part::Data(bytes)].map(|p| pb::CheckpointChunk { part: Some(p) });
    w.put_checkpoint(tokio_stream::iter(messages)).await.map(|_| ())
}

/// Streams epoch 1 of `fence` and waits for the ack (or the refusal).
async fn report(w: &mut WorkerServiceClient<AuthChannel>, fence: &pb::Fence) -> Result<(), Status> {
    let message = pb::EpochReport { fence: Some(fence.clone()), metrics: Some(metrics(1, 0.5)) };
    let mut acks = w.report_epochs(tokio_stream::iter([message])).await?.into_inner();
    acks.message().await?.ok_or_else(|| Status::internal("no ack"))?;
    Ok(())
}

fn ok<T>(r: Result<tonic::Response<T>, Status>) -> Result<(), Status> {
    r.map(|_| ())
}

async fn call(env: &Env, rpc: Rpc, who: Who) -> Result<(), Status> {
    let channel = env.server.channel(who).await;
    let mut sweeps = SweepServiceClient::new(channel.clone());
    let mut workers = WorkerServiceClient::new(channel.clone());
    let sweep = || "owned".to_owned();
    // A job per caller, so every allowed cancel finds one still queued.
    let job = env.jobs[1 + Who::ALL.iter().position(|w| *w == who).unwrap()];
    let fence = env.fence.clone();
    match rpc {
        Rpc::SubmitSweep => {
            let name = format!("by-{who:?}");
            let request = pb::SubmitSweepRequest { spec: Some(spec(&name, &["natural_softmax"], &[0], 1)) };
            ok(sweeps.submit_sweep(request).await)
        }
        Rpc::ListSweeps => ok(sweeps.list_sweeps(pb::ListSweepsRequest {}).await),
        Rpc::GetSweep => ok(sweeps.get_sweep(pb::GetSweepRequest { sweep: sweep() }).await),
        Rpc::ListJobs => {
            ok(sweeps.list_jobs(pb::ListJobsRequest { sweep: sweep(), ..Default::default() }).await)
        }
        Rpc::GetJob => ok(sweeps.get_job(pb::GetJobRequest { job_id: job }).await),
        Rpc::ListWorkers => ok(sweeps.list_workers(pb::ListWorkersRequest {}).await),
        Rpc::WatchSweep => {
            let mut events = sweeps.watch_sweep(pb::WatchSweepRequest { sweep: sweep() }).await?.into_inner();
            events.message().await?.ok_or_else(|| Status::internal("no snapshot"))?;
            Ok(())
        }
        Rpc::CancelJob => ok(sweeps.cancel_job(pb::CancelJobRequest { job_id: job }).await),
        Rpc::CancelSweep => ok(sweeps.cancel_sweep(pb::CancelSweepRequest { sweep: sweep() }).await),
        Rpc::RetryJobs => {
            ok(sweeps.retry_jobs(pb::RetryJobsRequest { job_id: job, ..Default::default() }).await)
        }
        Rpc::RegisterWorker => ok(workers.register_worker(register_request(&format!("host-{who:?}"))).await),
        Rpc::LeaseJob => ok(workers
            .lease_job(pb::LeaseJobRequest { worker_id: "wa".into(), slot: 0, ..Default::default() })
            .await),
        Rpc::Heartbeat => {
            let request = pb::HeartbeatRequest { worker_id: "wa".into(), leases: vec![fence], idle_slots: 0 };
            let verdicts = workers.heartbeat(request).await?.into_inner().leases;
            assert_eq!(verdicts[0].verdict(), pb::lease_status::Verdict::Renewed);
            Ok(())
        }
        Rpc::ReportEpochs => report(&mut workers, &fence).await,
        Rpc::CompleteJob => ok(workers.complete_job(pb::CompleteJobRequest { fence: Some(fence) }).await),
        Rpc::FailJob => ok(workers
            .fail_job(pb::FailJobRequest { fence: Some(fence), error: "out of memory".into() })
            .await),
        Rpc::ReleaseJob => ok(workers.release_job(pb::ReleaseJobRequest { fence: Some(fence) }).await),
        Rpc::PutCheckpoint => put_checkpoint(&mut workers, &fence).await,
        Rpc::GetCheckpoint => {
            let request = pb::GetCheckpointRequest { fence: Some(fence), max_epoch: 1 };
            let mut chunks = workers.get_checkpoint(request).await?.into_inner();
            chunks.message().await?.ok_or_else(|| Status::internal("no header"))?;
            Ok(())
        }
        Rpc::Reflection => {
            let mut client = ServerReflectionClient::new(channel);
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut replies =
                client.server_reflection_info(tokio_stream::iter([request])).await?.into_inner();
            replies.next().await.ok_or_else(|| Status::internal("no reply"))??;
            Ok(())
        }
        Rpc::Health => {
            let request = HealthCheckRequest { service: "sweep.v1.WorkerService".into() };
            ok(HealthClient::new(channel).check(request).await)
        }
    }
}

/// Calls `rpc` as every kind of caller, refused ones first, and checks each against the table.
async fn row(rpc: Rpc) {
    let env = env().await;
    if rpc == Rpc::RetryJobs {
        // Every caller's job is cancelled, so an allowed retry has something to queue again.
        let mut admin = SweepServiceClient::new(env.server.channel(Who::Admin).await);
        for job in &env.jobs[1..] {
            admin.cancel_job(pb::CancelJobRequest { job_id: *job }).await.unwrap();
        }
    }
    let mut callers = Who::ALL.to_vec();
    callers.sort_by_key(|who| expected(rpc, *who).is_none());
    for who in callers {
        let before = env.server.snapshot().await;
        let result = call(&env, rpc, who).await;
        match expected(rpc, who) {
            None => assert!(result.is_ok(), "{rpc:?} as {who:?}: {result:?}"),
            Some(code) => {
                let status = result.expect_err(&format!("{rpc:?} as {who:?} must be refused"));
                assert_eq!(status.code(), code, "{rpc:?} as {who:?}: {status:?}");
                assert_eq!(env.server.snapshot().await, before, "{rpc:?} as {who:?} changed the database");
            }
        }
    }
    env.server.stop().await;
}

macro_rules! rows {
    ($($test:ident => $rpc:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                row(Rpc::$rpc).await;
            }
        )*
    };
}

rows! {
    row_submit_sweep => SubmitSweep,
    row_list_sweeps => ListSweeps,
    row_get_sweep => GetSweep,
    row_list_jobs => ListJobs,
    row_get_job => GetJob,
    row_list_workers => ListWorkers,
    row_watch_sweep => WatchSweep,
    row_cancel_job => CancelJob,
    row_cancel_sweep => CancelSweep,
    row_retry_jobs => RetryJobs,
    row_register_worker => RegisterWorker,
    row_lease_job => LeaseJob,
    row_heartbeat => Heartbeat,
    row_report_epochs => ReportEpochs,
    row_complete_job => CompleteJob,
    row_fail_job => FailJob,
    row_release_job => ReleaseJob,
    row_put_checkpoint => PutCheckpoint,
    row_get_checkpoint => GetCheckpoint,
    row_reflection => Reflection,
    row_health => Health,
}

#[tokio::test]
async fn a_stolen_worker_id_is_refused_everywhere() {
    let env = env().await;
    let before = env.server.snapshot().await;
    let mut thief = env.server.workers(Who::OtherWorker).await;
    let err = thief.register_worker(register_request("evil-host")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("bound to another credential"), "{err:?}");
    let lease =
        thief.lease_job(pb::LeaseJobRequest { worker_id: "wa".into(), slot: 0, ..Default::default() }).await;
    assert_eq!(lease.unwrap_err().code(), Code::PermissionDenied);
    let beat =
        pb::HeartbeatRequest { worker_id: "wa".into(), leases: vec![env.fence.clone()], idle_slots: 0 };
    assert_eq!(thief.heartbeat(beat).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(report(&mut thief, &env.fence).await.unwrap_err().code(), Code::PermissionDenied);
    let complete = thief.complete_job(pb::CompleteJobRequest { fence: Some(env.fence.clone()) }).await;
    assert_eq!(complete.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(env.server.snapshot().await, before);
    let mut admin = env.server.sweeps(Who::Admin).await;
    let workers = admin.list_workers(pb::ListWorkersRequest {}).await.unwrap().into_inner().workers;
    assert_eq!((workers.len(), workers[0].hostname.as_str()), (1, "host-a"));
    // The thief's own ids are its own.
    let mine = pb::RegisterWorkerRequest { worker_id: "wb".into(), ..register_request("host-b") };
    thief.register_worker(mine).await.unwrap();
    env.server.stop().await;
}

#[tokio::test]
async fn only_the_owner_or_an_admin_grows_a_sweep() {
    let env = env().await;
    let grown =
        |seeds: &[u64]| pb::SubmitSweepRequest { spec: Some(spec("owned", &["natural_softmax"], seeds, 1)) };
    let before = env.server.snapshot().await;
    let mut bob = env.server.sweeps(Who::OtherUser).await;
    let err = bob.submit_sweep(grown(&[100, 101])).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(env.server.snapshot().await, before, "bob added nothing");
    let mut alice = env.server.sweeps(Who::User).await;
    assert_eq!(alice.submit_sweep(grown(&[100])).await.unwrap().into_inner().jobs_created, 1);
    let mut root = env.server.sweeps(Who::Admin).await;
    assert_eq!(root.submit_sweep(grown(&[101])).await.unwrap().into_inner().jobs_created, 1);
    let owner = env.server.db.require_sweep("owned").await.unwrap().owner;
    assert_eq!(owner, "alice", "growing a sweep keeps its owner");
    env.server.stop().await;
}
