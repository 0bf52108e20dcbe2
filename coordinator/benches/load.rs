//! Load generator for the coordinator (run with `cargo bench -p coordinator --bench load`).
//!
//! Starts the real coordinator in-process on 127.0.0.1 over a real SQLite file in a temp dir and
//! drives it through the generated tonic clients, then prints RPC latency percentiles and stored
//! epoch rows per second. Two phases, each bounded in time:
//!
//! - `fleet`: N simulated workers (default 1,000) register, lease jobs, heartbeat once a second
//!   and stream one epoch every `LOAD_EPOCH_INTERVAL_MS` per worker over a `ReportEpochs` stream,
//!   completing each job after its last epoch and leasing the next.
//! - `ingest`: pure epoch ingestion: many streams each send the next epoch as soon as an ack
//!   comes back, keeping `LOAD_INGEST_WINDOW` reports in flight (1 = strictly one at a time).
//!
//! The workers share a handful of multiplexed HTTP/2 connections (tonic `Channel`s) instead of
//! one TCP connection each; client and server share the machine's cores.
//!
//! Settings (env vars): LOAD_MODE (fleet | ingest | both), LOAD_WORKERS, LOAD_SECS, LOAD_WARMUP_SECS,
//! LOAD_CHANNELS, LOAD_EPOCH_INTERVAL_MS, LOAD_EPOCHS_PER_JOB, LOAD_INGEST_STREAMS, LOAD_INGEST_WINDOW,
//! LOAD_INGEST_SECS.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coordinator::{Config, Database};
use rand::Rng;
use sweep_proto::pb;
use sweep_proto::pb::sweep_service_client::SweepServiceClient;
use sweep_proto::pb::worker_service_client::WorkerServiceClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
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
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("load.db").display());
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
        sqlx::query_scalar("SELECT COUNT(*) FROM epochs").fetch_one(self.db.reader()).await.unwrap()
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
        train_loss: 1.0,
        train_acc: 0.5,
        val_loss: 1.1,
        val_acc: 0.4 + f64::from(epoch % 50) / 100.0,
        wall_seconds: 0.05,
        images_per_sec: 1e6,
        attempt: 0,
    }
}

/// One simulated worker of the fleet phase.
async fn fleet_worker(i: usize, ch: Channel, opts: Opts, window: Window) -> Samples {
    let mut s = Samples::default();
    let id = format!("load-worker-{i:04}");
    let mut client = WorkerServiceClient::new(ch);
    let t = Instant::now();
    let req = pb::RegisterWorkerRequest {
        worker_id: id.clone(),
        hostname: format!("host-{}", i / 8),
        gpus: vec!["NVIDIA H100 80GB HBM3".into()],
        slots: 1,
    };
    if client.register_worker(req).await.is_err() {
        s.errors += 1;
        return s;
    }
    s.register.push(micros(t.elapsed()));

    let current: Arc<Mutex<Option<pb::Fence>>> = Arc::default();
    let heartbeat = {
        let (mut client, current, id) = (client.clone(), current.clone(), id.clone());
        tokio::spawn(async move {
            let mut hb = Vec::new();
            let mut errors = 0;
            let phase = Duration::from_millis(rand::rng().random_range(0..1000));
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + phase, Duration::from_secs(1));
            loop {
                let at = tick.tick().await.into_std();
                if at >= window.until {
                    return (hb, errors);
                }
                let leases = current.lock().unwrap().clone().into_iter().collect();
                let req = pb::HeartbeatRequest { worker_id: id.clone(), leases, idle_slots: 0 };
                // Timed from the call, like every RPC (the tick's lateness is the client's).
                let t = Instant::now();
                match client.heartbeat(req).await {
                    Ok(_) if window.contains(at) => hb.push(micros(t.elapsed())),
                    Ok(_) => {}
                    Err(_) => errors += 1,
                }
            }
        })
    };

    'jobs: while Instant::now() < window.until {
        let t = Instant::now();
        let leased = client.lease_job(pb::LeaseJobRequest { worker_id: id.clone(), slot: 0 }).await;
        let assignment = match leased {
            Ok(r) => r.into_inner().job,
            Err(_) => {
                s.errors += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if window.contains(t) {
            s.lease.push(micros(t.elapsed()));
        }
        let Some(a) = assignment else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let fence = a.fence.clone().unwrap();
        *current.lock().unwrap() = Some(fence.clone());
        let (tx, rx) = mpsc::channel(4);
        let mut acks = match client.report_epochs(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(_) => {
                s.errors += 1;
                continue;
            }
        };
        let phase =
            Duration::from_millis(rand::rng().random_range(0..opts.epoch_interval.as_millis().max(1) as u64));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, opts.epoch_interval);
        for epoch in 1..=a.epochs {
            tick.tick().await;
            let t = Instant::now();
            if t >= window.until {
                break 'jobs;
            }
            let report = pb::EpochReport { fence: Some(fence.clone()), metrics: Some(metrics(epoch)) };
            if tx.send(report).await.is_err() {
                s.errors += 1;
                continue 'jobs;
            }
            match acks.message().await {
                Ok(Some(ack)) => {
                    if window.contains(t) {
                        s.epoch.push(micros(t.elapsed()));
                        s.stored += u64::from(!ack.duplicate);
                    }
                }
                _ => {
                    s.errors += 1;
                    continue 'jobs;
                }
            }
        }
        drop(tx);
        let t = Instant::now();
        match client.complete_job(pb::CompleteJobRequest { fence: Some(fence) }).await {
            Ok(_) if window.contains(t) => s.complete.push(micros(t.elapsed())),
            Ok(_) => {}
            Err(_) => s.errors += 1,
        }
        *current.lock().unwrap() = None;
    }
    let (hb, errors) = heartbeat.await.unwrap();
    s.heartbeat = hb;
    s.errors += errors;
    s
}

async fn fleet(opts: &Opts) {
    println!("## Fleet: {} simulated workers", opts.workers);
    let server = start_server().await;
    let channels = server.channels(opts.channels).await;
    let window_secs = opts.warmup_secs + opts.secs + 2;
    let epochs_per_worker = window_secs * 1000 / opts.epoch_interval.as_millis().max(1) as u64;
    let jobs_needed =
        (opts.workers as u64 * (epochs_per_worker / u64::from(opts.epochs_per_job) + 2)).max(10);
    let variants = ["natural_hardmax", "natural_softmax", "multi_softmax", "normal_lr1e-3", "normal_lr1e-2"];
    let seeds = jobs_needed.div_ceil(variants.len() as u64).min(10_000);
    let t = Instant::now();
    submit(channels[0].clone(), "load", &variants, seeds, opts.epochs_per_job).await;
    println!(
        "submitted {} jobs of {} epochs in {:.2} s",
        seeds * variants.len() as u64,
        opts.epochs_per_job,
        t.elapsed().as_secs_f64()
    );
    println!(
        "workers {}, tonic channels (HTTP/2 connections) {}, heartbeat 1/s, one epoch per worker every {} ms \
         (offered {:.0} epochs/s), warm-up {} s, measured {} s",
        opts.workers,
        channels.len(),
        opts.epoch_interval.as_millis(),
        opts.workers as f64 * 1000.0 / opts.epoch_interval.as_millis().max(1) as f64,
        opts.warmup_secs,
        opts.secs
    );
    let start = Instant::now();
    let window = Window {
        from: start + Duration::from_secs(opts.warmup_secs),
        until: start + Duration::from_secs(opts.warmup_secs + opts.secs),
    };
    let rows_before_measure = Arc::new(Mutex::new(0i64));
    let probe = {
        let (db, rows) = (server.db.clone(), rows_before_measure.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(window.from.into()).await;
            let n: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM epochs").fetch_one(db.reader()).await.unwrap();
            *rows.lock().unwrap() = n;
            tokio::time::sleep_until(window.until.into()).await;
            let m: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM epochs").fetch_one(db.reader()).await.unwrap();
            m - n
        })
    };
    let mut tasks = Vec::with_capacity(opts.workers);
    for i in 0..opts.workers {
        tasks.push(tokio::spawn(fleet_worker(i, channels[i % channels.len()].clone(), opts.clone(), window)));
    }
    let mut all = Samples::default();
    for t in tasks {
        all.merge(t.await.unwrap());
    }
    let rows_in_window = probe.await.unwrap();
    let secs = opts.secs as f64;
    print_table(&mut all, secs);
    println!(
        "epoch rows stored in the measured window: {rows_in_window} ({:.0} rows/s by table count; {:.0}/s by acks)",
        rows_in_window as f64 / secs,
        all.stored as f64 / secs
    );
    println!("errors: {}; total epoch rows in the database: {}", all.errors, server.stored_rows().await);
    server.stop().await;
}

async fn ingest(opts: &Opts) {
    println!(
        "## Ingest: {} streams, each keeping {} report(s) unacknowledged (the next goes out as an ack comes back)",
        opts.ingest_streams, opts.ingest_window
    );
    let server = start_server().await;
    let channels = server.channels(opts.channels).await;
    submit(channels[0].clone(), "ingest", &["natural_softmax"], opts.ingest_streams as u64, 10_000).await;
    let mut client = WorkerServiceClient::new(channels[0].clone());
    let req = pb::RegisterWorkerRequest {
        worker_id: "ingest".into(),
        hostname: "bench".into(),
        gpus: vec![],
        slots: opts.ingest_streams as u32,
    };
    client.register_worker(req).await.unwrap();
    let mut fences = Vec::new();
    for _ in 0..opts.ingest_streams {
        let req = pb::LeaseJobRequest { worker_id: "ingest".into(), slot: 0 };
        fences.push(client.lease_job(req).await.unwrap().into_inner().job.unwrap().fence.unwrap());
    }
    let start = Instant::now();
    let warmup = Duration::from_secs(2);
    let window =
        Window { from: start + warmup, until: start + warmup + Duration::from_secs(opts.ingest_secs) };
    let mut tasks = Vec::new();
    for (i, fence) in fences.into_iter().enumerate() {
        let mut client = WorkerServiceClient::new(channels[i % channels.len()].clone());
        let window_size = opts.ingest_window.max(1);
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::default();
            let (tx, rx) = mpsc::channel(window_size * 2);
            let mut acks = client.report_epochs(ReceiverStream::new(rx)).await.unwrap().into_inner();
            let mut in_flight = std::collections::VecDeque::new();
            let mut next_epoch = 1;
            loop {
                while in_flight.len() < window_size && next_epoch <= 10_000 && Instant::now() < window.until {
                    let report =
                        pb::EpochReport { fence: Some(fence.clone()), metrics: Some(metrics(next_epoch)) };
                    in_flight.push_back(Instant::now());
                    tx.send(report).await.unwrap();
                    next_epoch += 1;
                }
                let Some(t) = in_flight.pop_front() else { break };
                let ack = acks.message().await.unwrap().unwrap();
                if window.contains(t) {
                    s.epoch.push(micros(t.elapsed()));
                    s.stored += u64::from(!ack.duplicate);
                }
            }
            s
        }));
    }
    let mut all = Samples::default();
    for t in tasks {
        all.merge(t.await.unwrap());
    }
    let secs = opts.ingest_secs as f64;
    print_table(&mut all, secs);
    println!(
        "stored epoch rows: {:.0} rows/s over {} s ({} rows); total in the database: {}",
        all.stored as f64 / secs,
        opts.ingest_secs,
        all.stored,
        server.stored_rows().await
    );
    server.stop().await;
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let opts = Opts::from_env();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!(
        "# coordinator load benchmark\n\nin-process server on 127.0.0.1, SQLite file in a temp dir (WAL, synchronous=FULL), \
         {} CPU cores shared by the load generator and the server\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    runtime.block_on(async {
        if opts.mode == "fleet" || opts.mode == "both" {
            fleet(&opts).await;
            println!();
        }
        if opts.mode == "ingest" || opts.mode == "both" {
            ingest(&opts).await;
        }
    });
}
