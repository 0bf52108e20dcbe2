//! `coordinator migrate`: copies a whole sweep history from one database into a new one, e.g.
//! from the embedded SQLite file to the PostgreSQL server several coordinators will share.

use clap::Args;

use crate::db::{Database, redacted};
use crate::error::Result;

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// The database to copy (left unchanged, apart from pending schema migrations).
    #[arg(long, env = "SWEEP_MIGRATE_FROM")]
    pub from: String,
    /// The database to copy into: it must hold no sweeps, jobs, epochs or workers (a PostgreSQL
    /// database is created if the server has none).
    #[arg(long, env = "SWEEP_MIGRATE_TO")]
    pub to: String,
}

/// Copies `--from` into `--to` and prints what was copied. Stop the coordinators serving
/// `--from` first: writes made during the copy would be left behind.
pub async fn run(args: MigrateArgs) -> Result<()> {
    let from = Database::open(&args.from).await?;
    let to = Database::open(&args.to).await?;
    let copied = from.copy_into(&to).await;
    from.close().await;
    to.close().await;
    let copied = copied?;
    println!(
        "copied {} sweeps, {} jobs, {} epochs and {} workers from {} to {}",
        copied.sweeps,
        copied.jobs,
        copied.epochs,
        copied.workers,
        redacted(&args.from),
        redacted(&args.to)
    );
    Ok(())
}
