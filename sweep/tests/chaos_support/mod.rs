//! The chaos suite's cluster of child processes (one coordinator, N workers, all this same
//! executable), its schedule's random numbers, and the checks on the database afterwards.

pub mod roles;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, SqliteConnection};
use sweep_proto::pb::sweep_service_client::SweepServiceClient;
use sweep_proto::pb::{self, DataOptions};
use tonic::transport::Channel;

/// How hard one run shakes the cluster.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub workers: usize,
    pub worker_kills: u32,
    pub coordinator_kills: u32,
    /// Seeds per sweep (two variants each) and epochs per job.
    pub seeds: u64,
    pub epochs: u32,
    pub deadline: Duration,
}

impl Scenario {
    pub fn standard() -> Scenario {
        Scenario {
            workers: 3,
            worker_kills: 20,
            coordinator_kills: 5,
            seeds: 3,
            epochs: 6,
            deadline: Duration::from_secs(600),
        }
    }

    pub fn soak() -> Scenario {
        Scenario {
            workers: 4,
            worker_kills: 200,
            coordinator_kills: 40,
            seeds: 8,
            epochs: 12,
            deadline: Duration::from_secs(3600),
        }
    }
}

/// xorshift64*: a replayable schedule without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A number in `lo..hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (hi - lo).max(1)
    }
}

/// What the checks counted.
pub struct Figures {
    pub jobs: i64,
    pub epochs: i64,
    pub requeues: i64,
    pub resumed: i64,
}

pub struct Cluster {
    dir: tempfile::TempDir,
    addr: String,
    coordinator: Option<Child>,
    workers: Vec<Option<Child>>,
    sweeps: Vec<String>,
    runtime: tokio::runtime::Runtime,
}

impl Cluster {
    pub fn start(scenario: &Scenario) -> Cluster {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::Builder::new().prefix("chaos-").tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("checkpoints")).unwrap();
        let mut cluster = Cluster {
            dir,
            addr: format!("127.0.0.1:{port}"),
            coordinator: None,
            workers: (0..scenario.workers).map(|_| None).collect(),
            sweeps: Vec::new(),
            runtime,
        };
        cluster.start_coordinator();
        for w in 0..scenario.workers {
            cluster.start_worker(w);
        }
        cluster
    }

    /// Where the children's logs are (kept when the suite fails).
    pub fn logs(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn spawn(&self, role: &str, log: &str, envs: &[(&str, String)]) -> Child {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(log)).unwrap();
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.env("CHAOS_ROLE", role).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        for (k, v) in envs {
            command.env(k, v);
        }
        command.spawn().unwrap()
    }

    pub fn start_coordinator(&mut self) {
        let db = self.dir.path().join("sweep.db").display().to_string();
        let child = self.spawn(
            "coordinator",
            "coordinator.log",
            &[
                ("CHAOS_ADDR", self.addr.clone()),
                ("CHAOS_DB", db),
                ("CHAOS_CHECKPOINT_STORE", self.coordinator_store()),
            ],
        );
        self.coordinator = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.client().is_none() {
            assert!(Instant::now() < deadline, "the coordinator did not come back; logs in {}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where the coordinator keeps the checkpoints workers upload.
    fn coordinator_store(&self) -> String {
        self.dir.path().join("coordinator-checkpoints").display().to_string()
    }

    pub fn kill_coordinator(&mut self) {
        if let Some(mut child) = self.coordinator.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn start_worker(&mut self, w: usize) {
        let envs = [
            ("CHAOS_URL", format!("http://{}", self.addr)),
            ("CHAOS_WORKER_ID", format!("chaos-{w}")),
            ("CHAOS_CHECKPOINTS", self.dir.path().join("checkpoints").display().to_string()),
        ];
        self.workers[w] = Some(self.spawn("worker", &format!("worker-{w}.log"), &envs));
    }

    /// SIGKILL: the job's lease expires and it is requeued.
    pub fn kill_worker(&mut self, w: usize) {
        if let Some(mut child) = self.workers[w].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM: the worker ends its epoch, checkpoints, delivers it and hands the job back.
    pub fn stop_worker(&mut self, w: usize) {
        let Some(mut child) = self.workers[w].take() else { return };
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "a worker ignored SIGTERM; logs in {}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A channel to the coordinator if it answers.
    fn client(&self) -> Option<Channel> {
        let url = format!("http://{}", self.addr);
        self.runtime.block_on(async move {
            let channel = Channel::from_shared(url).ok()?.connect().await.ok()?;
            SweepServiceClient::new(channel.clone()).list_sweeps(pb::ListSweepsRequest {}).await.ok()?;
            Some(channel)
        })
    }

    /// Runs `call` against the coordinator, retrying while it is restarting.
    fn with_client<T>(&self, what: &str, call: impl AsyncFn(Channel) -> Result<T, tonic::Status>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(client) = self.client()
                && let Ok(t) = self.runtime.block_on(call(client))
            {
                return t;
            }
            assert!(Instant::now() < deadline, "{what} failed for 30 s; logs in {}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn submit(&mut self, scenario: &Scenario) {
        let name = format!("chaos-{}", self.sweeps.len());
        let spec = pb::SweepSpec {
            name: name.clone(),
            variants: vec!["natural_softmax".into(), "normal_lr1e-3".into()],
            seeds: (0..scenario.seeds).collect(),
            epochs: scenario.epochs,
            batch_size: 32,
            max_attempts: 100,
            data: Some(DataOptions {
                train_limit: 96,
                test_limit: 32,
                width_multiplier: 0.125,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.with_client("submit", async |c| {
            SweepServiceClient::new(c).submit_sweep(pb::SubmitSweepRequest { spec: Some(spec.clone()) }).await
        });
        self.sweeps.push(name);
    }

    pub fn submit_more(&mut self, scenario: &Scenario) {
        self.submit(scenario);
    }

    /// No job of any sweep is queued or running.
    pub fn finished(&self) -> bool {
        let Some(channel) = self.client() else { return false };
        let mut client = SweepServiceClient::new(channel);
        self.runtime.block_on(async {
            let Ok(reply) = client.list_sweeps(pb::ListSweepsRequest {}).await else { return false };
            reply.into_inner().sweeps.iter().all(|s| s.queued == 0 && s.running == 0)
        })
    }

    /// Stops the workers, builds every sweep's report, stops the coordinator and checks the
    /// database's invariants.
    pub fn check_and_report(&mut self) -> Figures {
        for w in 0..self.workers.len() {
            self.kill_worker(w);
        }
        for sweep in self.sweeps.clone() {
            let out = self.dir.path().join("reports").join(&sweep);
            let files = self.with_client("report", async |c| {
                coordinator::client::report_input::write_sweep_report(c, &sweep, &out, &Default::default())
                    .await
                    .map_err(|e| tonic::Status::internal(e.to_string()))
            });
            assert!(files.index_html.is_file(), "{sweep}: no index.html");
        }
        self.kill_coordinator();
        // Every job succeeded, so the coordinator kept none of their checkpoints.
        let left = std::fs::read_dir(self.coordinator_store()).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "checkpoints of finished jobs left on the coordinator; logs in {}", self.logs());
        let db = self.dir.path().join("sweep.db");
        self.runtime.block_on(check_database(&db))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().flatten().chain(self.coordinator.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("chaos: logs and database kept in {}", kept.display());
        }
    }
}

async fn check_database(path: &Path) -> Figures {
    let url = format!("sqlite://{}?mode=ro", path.display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut conn).await.unwrap();
    assert_eq!(integrity, "ok");
    let unfinished: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, state FROM jobs WHERE state != 'succeeded' OR finished_at_ms IS NULL")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert!(unfinished.is_empty(), "jobs not succeeded: {unfinished:?}");
    // Epochs 1..=E of every job, each exactly once ((job_id, epoch) is the key, so count = E and
    // the bounds 1 and E leave no room for a gap).
    // (job, epochs, rows, lowest epoch, highest epoch)
    type Span = (i64, i64, Option<i64>, Option<i64>, Option<i64>);
    let wrong: Vec<Span> = sqlx::query_as(
        "SELECT j.id, j.epochs, e.n, e.lo, e.hi FROM jobs j LEFT JOIN \
         (SELECT job_id, COUNT(*) AS n, MIN(epoch) AS lo, MAX(epoch) AS hi FROM epochs GROUP BY job_id) e \
         ON e.job_id = j.id WHERE e.n IS NULL OR e.n != j.epochs OR e.lo != 1 OR e.hi != j.epochs \
         OR j.epochs_done != j.epochs",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(wrong.is_empty(), "jobs whose epochs are not 1..=E exactly once: {wrong:?}");
    let orphans: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM epochs WHERE job_id NOT IN (SELECT id FROM jobs)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(orphans, 0);
    let (jobs, requeues): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(attempt - 1), 0) FROM jobs")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let epochs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM epochs").fetch_one(&mut conn).await.unwrap();
    let resumed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT job_id FROM epochs GROUP BY job_id HAVING COUNT(DISTINCT attempt) > 1)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    Figures { jobs, epochs, requeues, resumed }
}
