//! `sweep` binary: the whole experiment in one command.
//!
//! `sweep run --preset quick` starts an embedded coordinator on a local SQLite file, attaches
//! local worker slots (every GPU found, else the CPU), submits the sweep, shows live progress and
//! writes the report when the sweep ends. Running it again continues the same sweep.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "sweep", version, about = "Run the natural-vs-artificial CIFAR-10 experiment end to end")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Directory for burn's GPU kernel caches (autotune results and compiled kernels), kept
    /// between runs [default: ~/.cache/sweep/cubecl].
    #[arg(long, global = true, env = "SWEEP_KERNEL_CACHE")]
    kernel_cache: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run (or continue) a sweep locally and write its report.
    Run(sweep::run::RunArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    worker::kernel_cache::install(cli.kernel_cache.as_deref());
    match cli.command {
        Command::Run(args) => {
            let summary = sweep::run::run(args).await?;
            sweep::plan::outcome(&summary.sweep, summary.failed)?;
        }
    }
    Ok(())
}
