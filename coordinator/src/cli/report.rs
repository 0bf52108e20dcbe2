//! `coordinator report`: writes a sweep's report directory (see [`crate::client::report_input`]).

use std::path::PathBuf;

use clap::Args;

use super::ClientArgs;
use crate::client::report_groups::Grouping;
use crate::client::report_input::write_sweep_report;
use crate::error::Result;

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Sweep to report on.
    #[arg(long, env = "SWEEP_SWEEP")]
    pub sweep: String,
    /// Output directory, created if needed [default: reports/<sweep>].
    #[arg(long, env = "SWEEP_REPORT_OUT")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub grouping: GroupingArgs,
}

/// How a command sweep's jobs become a report's variants.
#[derive(Debug, Clone, Default, Args)]
pub struct GroupingArgs {
    /// A command sweep's parameter whose values are the report's variants [default: each
    /// parameter point is one].
    #[arg(long, env = "SWEEP_REPORT_GROUP_BY")]
    pub group_by: Option<String>,
    /// The variant a command sweep's others are compared against [default: the first].
    #[arg(long, env = "SWEEP_REPORT_BASELINE")]
    pub baseline: Option<String>,
}

impl GroupingArgs {
    pub fn grouping(&self) -> Grouping {
        Grouping { by: self.group_by.clone(), baseline: self.baseline.clone() }
    }
}

pub async fn run(args: ReportArgs) -> Result<()> {
    let client = args.client.connect().await?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("reports").join(&args.sweep));
    let files = write_sweep_report(client, &args.sweep, &out, &args.grouping.grouping()).await?;
    println!("report written to {}", files.index_html.display());
    Ok(())
}
