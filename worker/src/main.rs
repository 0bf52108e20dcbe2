//! `worker` binary: parses the command line and dispatches to the library (`worker::cli`).
//! Without a subcommand it attaches to a coordinator (`worker --coordinator URL --gpus all`);
//! `train` runs one job locally and `bench` measures throughput.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use worker::agent::attach::{AttachArgs, attach};
use worker::cli::{BenchArgs, TrainArgs, run_bench, run_train};

#[derive(Debug, Parser)]
#[command(name = "worker", version, about = "Trains the experiment's CNN on CIFAR-10 (burn, CUDA or CPU)")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    attach: AttachArgs,
    /// Directory for burn's GPU kernel caches (autotune results and compiled kernels), kept
    /// between runs [default: ~/.cache/sweep/cubecl].
    #[arg(long, global = true, env = "SWEEP_KERNEL_CACHE")]
    kernel_cache: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train one job locally (no coordinator) and print the epoch table.
    Train(TrainArgs),
    /// Time the training step on random data (and optionally one real epoch).
    Bench(BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let process_start = Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    worker::kernel_cache::install(cli.kernel_cache.as_deref());
    let mut stdout = std::io::stdout();
    match cli.command {
        None => tokio::runtime::Runtime::new()?.block_on(attach(cli.attach))?,
        Some(Command::Train(args)) => {
            run_train(&args, &mut stdout, process_start)?;
        }
        Some(Command::Bench(args)) => run_bench(&args, &mut stdout)?,
    }
    Ok(())
}
