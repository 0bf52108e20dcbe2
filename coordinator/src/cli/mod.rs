//! The `coordinator` command line: `serve` plus the client subcommands (`submit`, `status`,
//! `watch`, `cancel`, `export`, `report`). Every flag can also come from a `SWEEP_*` env var.
//! The code lives in the library so the binary stays thin and other crates (the one-shot
//! `sweep run`) can reuse [`watch::watch_progress`] and [`report::fetch_report_input`].

pub mod export;
pub mod report;
pub mod status;
pub mod submit;
pub mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sweep_proto::pb::sweep_service_client::SweepServiceClient;
use tonic::transport::Channel;

use crate::config::{Config, DEFAULT_MAX_MESSAGE_BYTES};
use crate::db::DEFAULT_DATABASE_URL;
use crate::error::Result;

/// Largest reply a client subcommand accepts (job lists and epoch tables of big sweeps).
const CLIENT_MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "coordinator",
    version,
    about = "Sweep coordinator: durable job queue for training sweeps over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator server.
    Serve(ServeArgs),
    /// Submit a sweep (or add missing variants/seeds to an existing one).
    Submit(submit::SubmitArgs),
    /// Show all sweeps, one sweep's jobs, or one job's epochs.
    Status(status::StatusArgs),
    /// Follow a sweep with live progress bars until no job is queued or running.
    Watch(watch::WatchArgs),
    /// Cancel one job or every unfinished job of a sweep.
    Cancel(status::CancelArgs),
    /// Export a sweep's jobs and epochs as CSV or JSON.
    Export(export::ExportArgs),
    /// Write the experiment report of a sweep into a directory.
    Report(report::ReportArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SWEEP_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Database URL (SQLite; the file is created if missing).
    #[arg(long, env = "SWEEP_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Seconds a lease lives without a heartbeat.
    #[arg(long, env = "SWEEP_LEASE_TTL_SECS", default_value_t = 30)]
    pub lease_ttl_secs: u64,
    /// Milliseconds between reaper passes (default: a quarter of the lease TTL).
    #[arg(long, env = "SWEEP_REAPER_INTERVAL_MS")]
    pub reaper_interval_ms: Option<u64>,
    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "SWEEP_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
}

impl ServeArgs {
    pub fn config(&self) -> Config {
        let mut config = Config::with_lease_ttl(Duration::from_secs(self.lease_ttl_secs.max(1)));
        if let Some(ms) = self.reaper_interval_ms {
            config.reaper_interval = Duration::from_millis(ms.max(1));
        }
        config.max_message_bytes = self.max_message_bytes;
        config
    }
}

/// Where client subcommands find the coordinator.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Coordinator address.
    #[arg(long, env = "SWEEP_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    pub coordinator: String,
}

impl ClientArgs {
    pub async fn connect(&self) -> Result<SweepServiceClient<Channel>> {
        connect(&self.coordinator).await
    }
}

/// A `SweepService` client for `url` that accepts large replies.
pub async fn connect(url: &str) -> Result<SweepServiceClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?.connect().await?;
    Ok(channel.into_sweep_client())
}

/// Anything the library's client functions can talk through: a connected [`Channel`] (cheap to
/// clone) or a `SweepServiceClient` (owned or borrowed).
pub trait IntoSweepClient {
    fn into_sweep_client(self) -> SweepServiceClient<Channel>;
}

impl IntoSweepClient for Channel {
    fn into_sweep_client(self) -> SweepServiceClient<Channel> {
        SweepServiceClient::new(self).max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
    }
}

impl IntoSweepClient for SweepServiceClient<Channel> {
    fn into_sweep_client(self) -> SweepServiceClient<Channel> {
        self.max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
    }
}

impl IntoSweepClient for &mut SweepServiceClient<Channel> {
    fn into_sweep_client(self) -> SweepServiceClient<Channel> {
        self.clone().into_sweep_client()
    }
}

/// Output format of `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

/// Runs one parsed command line.
pub async fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Submit(args) => submit::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Watch(args) => watch::run(args).await,
        Command::Cancel(args) => status::cancel(args).await,
        Command::Export(args) => export::run(args).await,
        Command::Report(args) => report::run(args).await,
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    crate::server::serve(listener, &args.database_url, args.config(), shutdown_signal()).await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
