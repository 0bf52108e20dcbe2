//! What the chaos executable runs as a child process: the coordinator (`coordinator serve` with a
//! short lease TTL, keeping uploaded checkpoints) or a worker (the real agent on CPU, tiny data,
//! checkpoints every epoch to a shared folder or to the coordinator).

use std::sync::Arc;

use sweep_proto::connect::ClientSecurity;
use tokio::sync::watch;
use worker::Cifar10;
use worker::agent::{AgentConfig, Cadence, CheckpointSettings, CheckpointTarget, SlotChoice, run_agent_with};
use worker::device::DeviceChoice;
use worker::training::FuseChoice;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set for chaos child processes"))
}

fn runtime() -> tokio::runtime::Runtime {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub fn coordinator() {
    let args = [
        "coordinator",
        "serve",
        "--listen",
        &env("CHAOS_ADDR"),
        "--database-url",
        &format!("sqlite://{}?mode=rwc", env("CHAOS_DB")),
        "--lease-ttl-secs",
        "2",
        "--reaper-interval-ms",
        "200",
        "--checkpoint-store",
        &env("CHAOS_CHECKPOINT_STORE"),
    ];
    let cli = <coordinator::cli::Cli as clap::Parser>::parse_from(args);
    if let Err(e) = runtime().block_on(coordinator::cli::execute(cli)) {
        eprintln!("coordinator: {e}");
        std::process::exit(1);
    }
}

/// 256 training and 64 test images of fixed pseudo-random pixels.
fn tiny_data() -> Arc<Cifar10> {
    let image = 3 * 32 * 32;
    let pixels = |n: usize, salt: usize| (0..n * image).map(|i| ((i * 31 + salt) % 251) as u8).collect();
    let labels = |n: usize| (0..n).map(|i| (i % 10) as u8).collect();
    Arc::new(Cifar10::from_parts(pixels(256, 7), labels(256), pixels(64, 3), labels(64)))
}

pub fn worker() {
    // Odd-numbered workers checkpoint to the coordinator, the others to the shared folder: a job
    // may move between the two kinds of worker and then starts over, as a run mixing them would.
    let id = env("CHAOS_WORKER_ID");
    let target = if id.ends_with(['1', '3', '5', '7', '9']) {
        CheckpointTarget::Coordinator
    } else {
        CheckpointTarget::Directory(env("CHAOS_CHECKPOINTS").into())
    };
    let config = AgentConfig {
        commands: Default::default(),
        coordinator: env("CHAOS_URL"),
        worker_id: id,
        hostname: "chaos".into(),
        devices: vec![DeviceChoice::Cpu],
        slots: SlotChoice::Fixed(1),
        fuse: FuseChoice::Fixed(1),
        kernels: Default::default(),
        checkpoints: Some(CheckpointSettings { target, cadence: Cadence::every(1) }),
    };
    let outcome = runtime().block_on(async move {
        let (stop_tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            term.recv().await;
            let _ = stop_tx.send(true);
        });
        run_agent_with(config, ClientSecurity::default(), tiny_data(), stop).await
    });
    if let Err(e) = outcome {
        eprintln!("worker: {e}");
        std::process::exit(1);
    }
}
