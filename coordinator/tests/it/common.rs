//! Test harness: a coordinator on an ephemeral port over a temp-dir database, plus helpers.

use std::path::Path;
use std::time::Duration;

use coordinator::{Config, Database};
use sweep_proto::pb;
use sweep_proto::pb::sweep_service_client::SweepServiceClient;
use sweep_proto::pb::worker_service_client::WorkerServiceClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub type Sweeps = SweepServiceClient<Channel>;
pub type Workers = WorkerServiceClient<Channel>;

pub struct TestServer {
    pub url: String,
    pub db: Database,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<coordinator::Result<()>>>,
}

// Not every test binary that includes this file uses both.
#[allow(unused_imports)]
pub use coordinator::testing::{database_url as db_url, sqlite_url};

impl TestServer {
    pub async fn start(dir: &Path, config: Config) -> TestServer {
        let db = Database::open(&db_url(dir)).await.expect("open database");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(coordinator::run(listener, db.clone(), config, async {
            let _ = stopped.await;
        }));
        TestServer { url, db, stop: Some(stop), task: Some(task) }
    }

    pub async fn sweeps(&self) -> Sweeps {
        SweepServiceClient::connect(self.url.clone()).await.unwrap()
    }

    pub async fn workers(&self) -> Workers {
        WorkerServiceClient::connect(self.url.clone()).await.unwrap()
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone()).unwrap().connect().await.unwrap()
    }

    /// Graceful shutdown, then the database is closed.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("server stops").unwrap().unwrap();
        self.db.clone().close().await;
    }
}

/// Short leases for expiry tests.
pub fn fast_config() -> Config {
    let mut c = Config::with_lease_ttl(Duration::from_millis(300));
    c.reaper_interval = Duration::from_millis(50);
    c
}

pub fn spec(name: &str, variants: &[&str], seeds: &[u64], epochs: u32) -> pb::SweepSpec {
    pb::SweepSpec {
        name: name.into(),
        variants: variants.iter().map(|v| v.to_string()).collect(),
        seeds: seeds.to_vec(),
        epochs,
        batch_size: 128,
        ..Default::default()
    }
}

pub async fn submit(
    client: &mut Sweeps,
    spec: pb::SweepSpec,
) -> Result<pb::SubmitSweepResponse, tonic::Status> {
    client.submit_sweep(pb::SubmitSweepRequest { spec: Some(spec) }).await.map(|r| r.into_inner())
}

pub fn metrics(epoch: u32, val_acc: f64) -> pb::EpochMetrics {
    pb::EpochMetrics {
        epoch,
        train_loss: Some(1.0 / f64::from(epoch)),
        train_acc: Some(0.5),
        val_loss: Some(1.2),
        val_acc: Some(val_acc),
        wall_seconds: 2.0,
        images_per_sec: Some(1000.0),
        attempt: 0,
        values: Default::default(),
    }
}

pub async fn register(w: &mut Workers, id: &str) {
    w.register_worker(pb::RegisterWorkerRequest {
        worker_id: id.into(),
        hostname: "test-host".into(),
        gpus: vec!["NVIDIA H100 80GB HBM3".into()],
        slots: 1,
        data_files: DATA_FILES
            .iter()
            .map(|(name, md5)| pb::DataFile { name: (*name).into(), md5: (*md5).into() })
            .collect(),
    })
    .await
    .unwrap();
}

/// The data files [`register`] reports as verified.
pub const DATA_FILES: [(&str, &str); 2] = [
    ("data_batch_1.bin", "5dd7e06a14cb22eb9f671a540d1b7c25"),
    ("test_batch.bin", "803d5f7f4d78ea53de84dbe85f74fb6d"),
];

pub async fn lease(w: &mut Workers, id: &str) -> Option<pb::JobAssignment> {
    w.lease_job(pb::LeaseJobRequest { worker_id: id.into(), slot: 0, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .job
}

/// Registers worker `w{i}` on each client and has all of them lease concurrently until nothing is
/// queued; returns every leased job id.
pub async fn lease_until_empty(clients: Vec<Workers>) -> Vec<i64> {
    let mut tasks = Vec::new();
    for (i, mut w) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let id = format!("w{i}");
            register(&mut w, &id).await;
            let mut got = Vec::new();
            while let Some(a) = lease(&mut w, &id).await {
                got.push(a.fence.unwrap().job_id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

pub fn fence(a: &pb::JobAssignment) -> pb::Fence {
    a.fence.clone().unwrap()
}

/// Streams `reports` and collects the acks until the server ends the stream or sends an error.
pub async fn report(
    w: &mut Workers,
    reports: Vec<pb::EpochReport>,
) -> (Vec<pb::EpochAck>, Option<tonic::Status>) {
    let mut acks = Vec::new();
    let mut stream = match w.report_epochs(tokio_stream::iter(reports)).await {
        Ok(r) => r.into_inner(),
        Err(status) => return (acks, Some(status)),
    };
    loop {
        match stream.message().await {
            Ok(Some(ack)) => acks.push(ack),
            Ok(None) => return (acks, None),
            Err(status) => return (acks, Some(status)),
        }
    }
}

pub fn epoch_report(f: &pb::Fence, epoch: u32, val_acc: f64) -> pb::EpochReport {
    pb::EpochReport { fence: Some(f.clone()), metrics: Some(metrics(epoch, val_acc)) }
}

pub async fn job(client: &mut Sweeps, id: i64) -> pb::JobDetail {
    client.get_job(pb::GetJobRequest { job_id: id }).await.unwrap().into_inner()
}

pub async fn summary(client: &mut Sweeps, sweep: &str) -> pb::SweepSummary {
    client.get_sweep(pb::GetSweepRequest { sweep: sweep.into() }).await.unwrap().into_inner()
}

pub fn state(s: pb::JobState) -> i32 {
    s as i32
}
