//! `coordinator watch`: follows a sweep until no job is queued or running (see
//! [`crate::client::watch`]) and prints its final summary.

use clap::Args;

use super::ClientArgs;
use super::status::format_summary;
use crate::client::watch::{Progress, follow};
use crate::error::Result;

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Sweep to follow.
    #[arg(long, env = "SWEEP_SWEEP")]
    pub sweep: String,
    /// Print one line per finished epoch and per job state change instead of progress bars (the
    /// default when stderr is not a terminal).
    #[arg(long, env = "SWEEP_NO_PROGRESS")]
    pub no_progress: bool,
}

pub async fn run(args: WatchArgs) -> Result<()> {
    let client = args.client.connect().await?;
    let summary = follow(client, &args.sweep, Progress::auto(args.no_progress)).await?;
    println!("{}", format_summary(&summary));
    Ok(())
}
