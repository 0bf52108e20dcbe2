//! The `coordinator` command line: `serve`, the client subcommands (`submit`, `status`, `watch`,
//! `cancel`, `retry`, `export`, `report`), `token` (the credentials of a token file) and `migrate`
//! (a database into a new one). Every flag can
//! also come from a `SWEEP_*` env var; clients connect through `sweep_proto::connect`.
//! The code lives in the library so the binary stays thin and other crates (the one-shot
//! `sweep run`) can reuse [`crate::client::watch::follow`] and
//! [`crate::client::report_input::fetch_report_input`].

pub mod export;
pub mod migrate;
pub mod report;
pub mod retry;
pub mod serve;
pub mod status;
pub mod submit;
pub mod token;
pub mod watch;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sweep_proto::connect::{AuthChannel, ConnectArgs};
use sweep_proto::pb::sweep_service_client::SweepServiceClient;

use crate::error::Result;

pub use crate::client::IntoSweepClient;
pub use serve::{LimitArgs, ServeArgs, ServerSecurityArgs};

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
    /// Queue failed or cancelled jobs again (one job, or a sweep's failed and/or cancelled jobs).
    Retry(retry::RetryArgs),
    /// Export a sweep's jobs and epochs as CSV or JSON.
    Export(export::ExportArgs),
    /// Write the experiment report of a sweep into a directory.
    Report(report::ReportArgs),
    /// Manage the credentials of a token file (create, list, revoke).
    Token(token::TokenArgs),
    /// Copy every sweep, job, epoch and worker into a new database (e.g. SQLite to PostgreSQL).
    Migrate(migrate::MigrateArgs),
}

/// Where client subcommands find the coordinator and how they authenticate.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

impl ClientArgs {
    pub async fn connect(&self) -> Result<SweepServiceClient<AuthChannel>> {
        Ok(self.connect.connect().await?.into_sweep_client())
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
        Command::Serve(args) => serve::run(args).await,
        Command::Submit(args) => submit::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Watch(args) => watch::run(args).await,
        Command::Cancel(args) => status::cancel(args).await,
        Command::Retry(args) => retry::run(args).await,
        Command::Export(args) => export::run(args).await,
        Command::Report(args) => report::run(args).await,
        Command::Token(args) => token::run(args),
        Command::Migrate(args) => migrate::run(args).await,
    }
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
