//! A database written before owners existed (the protocol experiment's `sweep.db` as it stood
//! then, kept under `tests/fixtures/`) is migrated and served, by the library and by the `coordinator serve` binary: its
//! sweep reads as before, and with authentication on its ownerless sweep is left to admins while
//! its worker id goes to the first credential that registers it again.

use std::path::Path;

use sweep_proto::pb;
use tonic::Code;

use crate::secure::{SecureServer, Who};

const LIVE_DB: &str = "tests/fixtures/protocol-before-owners.db";

/// A writable copy of the fixture in `dir`.
pub fn copy_live_db(dir: &Path) -> std::path::PathBuf {
    let copy = dir.join("sweep.db");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join(LIVE_DB), &copy).unwrap();
    let mut permissions = std::fs::metadata(&copy).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&copy, permissions).unwrap();
    copy
}

/// Kills the child process when dropped, so a failed assertion leaves no server behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_serve_command_serves_the_migrated_database() {
    let dir = tempfile::tempdir().unwrap();
    let copy = copy_live_db(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let database = format!("sqlite://{}", copy.display());
    let _server = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_coordinator"))
            .args(["serve", "--listen", &listen, "--database-url", &database])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{listen}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut client = loop {
        match pb::sweep_service_client::SweepServiceClient::connect(url.clone()).await {
            Ok(client) => break client,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("coordinator serve did not come up: {e}"),
        }
    };
    let summary =
        client.get_sweep(pb::GetSweepRequest { sweep: "protocol".into() }).await.unwrap().into_inner();
    assert_eq!((summary.jobs_total, summary.succeeded), (45, 11));
}

#[tokio::test]
async fn the_protocol_experiment_database_migrates_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    copy_live_db(dir.path());

    let server = SecureServer::start(dir.path(), coordinator::Config::default(), true, false).await;
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(server.db.sqlite_reader().expect("a SQLite database"))
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4]);

    let mut alice = server.sweeps(Who::User).await;
    let get = pb::GetSweepRequest { sweep: "protocol".into() };
    let mut summary = alice.get_sweep(get.clone()).await.unwrap().into_inner();
    assert_eq!(summary.jobs_total, 45);
    // The job whose lease ran out while the coordinator was down gets a whole TTL of grace.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    summary = alice.get_sweep(get.clone()).await.unwrap().into_inner();
    assert_eq!((summary.succeeded, summary.running, summary.queued), (11, 1, 33));
    let jobs = alice.list_jobs(pb::ListJobsRequest { sweep: "protocol".into(), ..Default::default() }).await;
    let queued =
        jobs.unwrap().into_inner().jobs.into_iter().find(|j| j.state == pb::JobState::Queued as i32).unwrap();

    // Created without authentication: a user may not change it, an admin may.
    let before = server.snapshot().await;
    let err = alice.cancel_job(pb::CancelJobRequest { job_id: queued.id }).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // Seed 0 of every variant: jobs the sweep has.
    let mut seed0 = summary.spec.clone().unwrap();
    seed0.seeds = vec![0];
    let grow = pb::SubmitSweepRequest { spec: Some(seed0) };
    assert_eq!(alice.submit_sweep(grow.clone()).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(server.snapshot().await, before);
    let mut root = server.sweeps(Who::Admin).await;
    let existing = root.submit_sweep(grow).await.unwrap().into_inner();
    assert_eq!((existing.jobs_created, existing.jobs_existing), (0, 5), "its own spec is accepted");
    root.cancel_job(pb::CancelJobRequest { job_id: queued.id }).await.unwrap();

    // Its worker id is bound to the first credential that registers it.
    let mut gpu = server.workers(Who::Worker).await;
    let lease = gpu
        .lease_job(pb::LeaseJobRequest { worker_id: "h200-vm".into(), slot: 0, ..Default::default() })
        .await;
    assert_eq!(lease.unwrap_err().code(), Code::PermissionDenied, "register first");
    let again = pb::RegisterWorkerRequest {
        worker_id: "h200-vm".into(),
        hostname: "vm".into(),
        slots: 1,
        ..Default::default()
    };
    gpu.register_worker(again.clone()).await.unwrap();
    let mut other = server.workers(Who::OtherWorker).await;
    assert_eq!(other.register_worker(again).await.unwrap_err().code(), Code::PermissionDenied);
    assert!(
        gpu.lease_job(pb::LeaseJobRequest { worker_id: "h200-vm".into(), slot: 0, ..Default::default() })
            .await
            .is_ok()
    );
    server.stop().await;
}
