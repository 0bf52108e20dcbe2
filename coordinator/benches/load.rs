//! Load generator for the coordinator (run with `cargo bench -p coordinator --bench load`).
//!
//! Starts the real coordinator in-process on 127.0.0.1 over a real SQLite file in a temp dir (or a
//! new database on the PostgreSQL server `LOAD_POSTGRES_URL`) and
//! drives it through the generated tonic clients, then prints RPC latency percentiles and stored
//! epoch rows per second. Two phases, each bounded in time:
//!
//! - `fleet`: N simulated workers (default 1,000) register, lease jobs, heartbeat once a second
//!   and stream one epoch every `LOAD_EPOCH_INTERVAL_MS` per worker over a `ReportEpochs` stream,
//!   completing each job after its last epoch and leasing the next.
//! - `ingest`: pure epoch ingestion: many streams each send the next epoch as soon as an ack
//!   comes back, keeping `LOAD_INGEST_WINDOW` reports in flight (1 = strictly one at a time).
//! - `export` (only when asked for): reading a whole sweep of `LOAD_EXPORT_JOBS` jobs ×
//!   `LOAD_EXPORT_EPOCHS` epochs, one ExportSweep stream against a GetJob per job.
//!
//! The workers share a handful of multiplexed HTTP/2 connections (tonic `Channel`s) instead of
//! one TCP connection each; client and server share the machine's cores.
//!
//! Settings (env vars): LOAD_MODE (fleet | ingest | both), LOAD_WORKERS, LOAD_SECS, LOAD_WARMUP_SECS,
//! LOAD_CHANNELS, LOAD_EPOCH_INTERVAL_MS, LOAD_EPOCHS_PER_JOB, LOAD_INGEST_STREAMS, LOAD_INGEST_WINDOW,
//! LOAD_INGEST_SECS, LOAD_EXPORT_JOBS, LOAD_EXPORT_EPOCHS, LOAD_EXPORT_ROUNDS, LOAD_POSTGRES_URL.

#[path = "load/export.rs"]
mod export;
#[path = "load/fleet.rs"]
mod fleet;
#[path = "load/ingest.rs"]
mod ingest;

use std::str::FromStr;
use std::time::{Duration, Instant};

use coordinator::{Config, Database};
use sweep_proto::pb;
use sweep_proto::pb::sweep_service_client::SweepServiceClient;
use tokio::sync::oneshot;
use tonic::transport::Channel;

fn env<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Debug, Clone)]
struct Opts {
    mode: String,
    workers: usize,
    secs: u64,
    warmup_secs: u64,
    channels: usize,
    epoch_interval: Duration,
    epochs_per_job: u32,
    ingest_streams: usize,
    ingest_window: usize,
    ingest_secs: u64,
    export_jobs: usize,
    export_epochs: u32,
    export_rounds: usize,
}

impl Opts {
    fn from_env() -> Opts {
        Opts {
            mode: env("LOAD_MODE", "both".to_owned()),
            workers: env("LOAD_WORKERS", 1000),
            secs: env("LOAD_SECS", 20),
            warmup_secs: env("LOAD_WARMUP_SECS", 3),
            channels: env("LOAD_CHANNELS", 16),
            epoch_interval: Duration::from_millis(env("LOAD_EPOCH_INTERVAL_MS", 50)),
            epochs_per_job: env("LOAD_EPOCHS_PER_JOB", 100),
            ingest_streams: env("LOAD_INGEST_STREAMS", 256),
            ingest_window: env("LOAD_INGEST_WINDOW", 1),
            ingest_secs: env("LOAD_INGEST_SECS", 10),
            export_jobs: env("LOAD_EXPORT_JOBS", 1000),
            export_epochs: env("LOAD_EXPORT_EPOCHS", 20),
            export_rounds: env("LOAD_EXPORT_ROUNDS", 5).max(1),
        }
    }
}

/// Latencies in microseconds per RPC kind, and stored (non-duplicate) epochs.
#[derive(Debug, Default)]
struct Samples {
    register: Vec<u32>,
    lease: Vec<u32>,
    heartbeat: Vec<u32>,
    epoch: Vec<u32>,
    complete: Vec<u32>,
    stored: u64,
    errors: u64,
}

impl Samples {
    fn merge(&mut self, o: Samples) {
        self.register.extend(o.register);
        self.lease.extend(o.lease);
        self.heartbeat.extend(o.heartbeat);
        self.epoch.extend(o.epoch);
        self.complete.extend(o.complete);
        self.stored += o.stored;
        self.errors += o.errors;
    }
}

/// Measurement window: samples count only when the call started inside it.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.from && t < self.until
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn print_row(name: &str, samples: &mut [u32], secs: f64) {
    samples.sort_unstable();
    println!(
        "| {name:<15} | {:>9} | {:>9.0} | {:>8.2} | {:>8.2} | {:>8.2} | {:>8.2} |",
        samples.len(),
        samples.len() as f64 / secs,
        percentile(samples, 0.50),
        percentile(samples, 0.90),
        percentile(samples, 0.99),
        percentile(samples, 1.0)
    );
}

fn print_table(s: &mut Samples, secs: f64) {
    println!("| RPC             |     calls |   calls/s | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) |");
    println!("|-----------------|----------:|----------:|---------:|---------:|---------:|---------:|");
    print_row("RegisterWorker", &mut s.register, secs);
    print_row("LeaseJob", &mut s.lease, secs);
    print_row("Heartbeat", &mut s.heartbeat, secs);
    print_row("ReportEpochs*", &mut s.epoch, secs);
    print_row("CompleteJob", &mut s.complete, secs);
    println!("(* ReportEpochs: time from sending one EpochReport on the open stream to its EpochAck)");
}

struct Server {
    url: String,
    db: Database,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<coordinator::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    // LOAD_POSTGRES_URL (a server, e.g. postgres://postgres@127.0.0.1:55432): a new database on it.
    let url = match std::env::var("LOAD_POSTGRES_URL") {
        Ok(server) if !server.is_empty() => {
            format!("{}/sweep_load_{}", server.trim_end_matches('/'), uuid::Uuid::new_v4().simple())
        }
        _ => format!("sqlite://{}?mode=rwc", dir.path().join("load.db").display()),
    };
    let db = Database::open(&url).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let config = Config { max_message_bytes: 16 << 20, ..Config::with_lease_ttl(Duration::from_secs(30)) };
    let task = tokio::spawn(coordinator::run(listener, db.clone(), config, async {
        let _ = stopped.await;
    }));
    Server { url: format!("http://{addr}"), db, stop, task, _dir: dir }
}

impl Server {
    async fn channels(&self, n: usize) -> Vec<Channel> {
        let mut out = Vec::new();
        for _ in 0..n.max(1) {
            out.push(Channel::from_shared(self.url.clone()).unwrap().connect().await.unwrap());
        }
        out
    }

    async fn stored_rows(&self) -> i64 {
        self.db.epoch_rows().await.unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        self.db.close().await;
    }
}

async fn submit(ch: Channel, name: &str, variants: &[&str], seeds: u64, epochs: u32) {
    let mut client = SweepServiceClient::new(ch);
    let spec = pb::SweepSpec {
        name: name.into(),
        variants: variants.iter().map(|v| v.to_string()).collect(),
        seeds: (0..seeds).collect(),
        epochs,
        batch_size: 128,
        ..Default::default()
    };
    client.submit_sweep(pb::SubmitSweepRequest { spec: Some(spec) }).await.unwrap();
}

fn metrics(epoch: u32) -> pb::EpochMetrics {
    pb::EpochMetrics {
        epoch,
        train_loss: Some(1.0),
        train_acc: Some(0.5),
        val_loss: Some(1.1),
        val_acc: Some(0.4 + f64::from(epoch % 50) / 100.0),
        wall_seconds: 0.05,
        images_per_sec: Some(1e6),
        attempt: 0,
        values: Default::default(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let opts = Opts::from_env();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let database = match std::env::var("LOAD_POSTGRES_URL") {
        Ok(server) if !server.is_empty() => {
            format!("a new database on {}", coordinator::db::redacted(&server))
        }
        _ => "SQLite file in a temp dir (WAL, synchronous=FULL)".to_owned(),
    };
    println!(
        "# coordinator load benchmark\n\nin-process server on 127.0.0.1, {database}, \
         {} CPU cores shared by the load generator and the server\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    runtime.block_on(async {
        if opts.mode == "fleet" || opts.mode == "both" {
            fleet::run(&opts).await;
            println!();
        }
        if opts.mode == "ingest" || opts.mode == "both" {
            ingest::run(&opts).await;
        }
        if opts.mode == "export" {
            export::run(&opts).await;
        }
    });
}
