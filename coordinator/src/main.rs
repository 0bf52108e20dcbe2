//! The `coordinator` binary: parses the command line, sets up logging and hands over to the
//! library ([`coordinator::cli::execute`]).

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = coordinator::cli::Cli::parse();
    coordinator::cli::execute(cli).await?;
    Ok(())
}
