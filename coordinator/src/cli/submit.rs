//! `coordinator submit`: the sweep described by a preset, a spec file or flags
//! ([`crate::client::SpecArgs`]), submitted one grid after another.

use clap::Args;
use sweep_proto::pb;

use super::ClientArgs;
use crate::client::SpecArgs;
use crate::error::Result;

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
}

pub async fn run(args: SubmitArgs) -> Result<()> {
    let submissions = args.spec.submissions(None)?;
    // Check every grid locally first for a clear message; the server checks again.
    for spec in &submissions {
        sweep_proto::SweepSpec::try_from(spec.clone())?;
    }
    let mut client = args.client.connect().await?;
    for spec in submissions {
        let reply = client.submit_sweep(pb::SubmitSweepRequest { spec: Some(spec) }).await?.into_inner();
        println!(
            "sweep {}: {} job(s) created, {} already existed",
            reply.sweep, reply.jobs_created, reply.jobs_existing
        );
    }
    Ok(())
}
