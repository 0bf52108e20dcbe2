//! A coordinator on 127.0.0.1 and worker agents (CPU, tiny synthetic data) in the test
//! process, for the integration tests that run whole sweeps.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coordinator::{Config, Database};
use sweep_proto::pb::sweep_service_client::SweepServiceClient;
use sweep_proto::pb::{GetJobRequest, GetSweepRequest, ListJobsRequest, SweepSummary};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use worker::Cifar10;
use worker::agent::{AgentConfig, CheckpointSettings, Commands, SlotChoice, run_agent};
use worker::device::DeviceChoice;
use worker::training::FuseChoice;

/// 320 training and 64 test images of random pixels (labels cycle through the classes).
pub fn tiny_data() -> Arc<Cifar10> {
    let image = 3 * 32 * 32;
    let pixels = |n: usize, salt: usize| (0..n * image).map(|i| ((i * 31 + salt) % 251) as u8).collect();
    let labels = |n: usize| (0..n).map(|i| (i % 10) as u8).collect();
    Arc::new(Cifar10::from_parts(pixels(320, 7), labels(320), pixels(64, 3), labels(64)))
}

pub struct Server {
    pub addr: SocketAddr,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<coordinator::Result<()>>,
}

/// A coordinator on 127.0.0.1 with a fresh test database, kept as long as the returned folder.
pub async fn start_fresh_server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let url = coordinator::testing::database_url(dir.path());
    (dir, start_server(&url, "127.0.0.1:0".parse().unwrap()).await)
}

pub async fn start_server(db_url: &str, addr: SocketAddr) -> Server {
    start_server_with(db_url, addr, Config::with_lease_ttl(Duration::from_secs(5))).await
}

pub async fn start_server_with(db_url: &str, addr: SocketAddr, config: Config) -> Server {
    let db = Database::open(db_url).await.unwrap();
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let result = coordinator::run(listener, db.clone(), config, async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await;
        db.close().await;
        result
    });
    Server { addr, stop, task }
}

impl Server {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap().unwrap();
    }
}

pub type Agent = (watch::Sender<bool>, JoinHandle<Result<(), worker::agent::AgentError>>);

pub fn start_agent(
    addr: SocketAddr,
    id: &str,
    checkpoints: Option<CheckpointSettings>,
    commands: Commands,
) -> Agent {
    start_agent_with(agent_config(addr, id, checkpoints, commands))
}

/// A one-slot CPU agent's settings.
pub fn agent_config(
    addr: SocketAddr,
    id: &str,
    checkpoints: Option<CheckpointSettings>,
    commands: Commands,
) -> AgentConfig {
    AgentConfig {
        commands,
        coordinator: format!("http://{addr}"),
        worker_id: id.into(),
        hostname: "test-host".into(),
        devices: vec![DeviceChoice::Cpu],
        slots: SlotChoice::Fixed(1),
        fuse: FuseChoice::Fixed(1),
        kernels: Default::default(),
        checkpoints,
    }
}

pub fn start_agent_with(config: AgentConfig) -> Agent {
    let (stop, rx) = watch::channel(false);
    (stop, tokio::spawn(run_agent(config, tiny_data(), rx)))
}

pub async fn client(addr: SocketAddr) -> SweepServiceClient<tonic::transport::Channel> {
    SweepServiceClient::connect(format!("http://{addr}")).await.unwrap()
}

pub async fn wait_for(
    addr: SocketAddr,
    sweep: &str,
    limit: Duration,
    done: impl Fn(&SweepSummary) -> bool,
) -> SweepSummary {
    let start = Instant::now();
    loop {
        if let Ok(mut c) = SweepServiceClient::connect(format!("http://{addr}")).await
            && let Ok(s) = c.get_sweep(GetSweepRequest { sweep: sweep.into() }).await
        {
            let s = s.into_inner();
            if done(&s) {
                return s;
            }
            assert!(start.elapsed() < limit, "sweep {sweep} did not get there in {limit:?}: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn epochs_stored(addr: SocketAddr, sweep: &str) -> Vec<Vec<u32>> {
    let mut c = client(addr).await;
    let jobs = c.list_jobs(ListJobsRequest { sweep: sweep.into(), ..Default::default() }).await.unwrap();
    let mut out = Vec::new();
    for job in jobs.into_inner().jobs {
        let detail = c.get_job(GetJobRequest { job_id: job.id }).await.unwrap().into_inner();
        out.push(detail.epochs.iter().map(|e| e.epoch).collect());
    }
    out
}
