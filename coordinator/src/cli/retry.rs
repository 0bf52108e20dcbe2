//! `coordinator retry`: queues failed or cancelled jobs again — one job, or a sweep's failed
//! jobs (the default), its cancelled ones, or both — each as a new attempt with a fresh budget.

use clap::{ArgGroup, Args};
use sweep_proto::pb;

use super::ClientArgs;
use crate::error::Result;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["job", "sweep"])))]
pub struct RetryArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Retry this job (failed or cancelled).
    #[arg(long, env = "SWEEP_JOB")]
    pub job: Option<i64>,
    /// Retry this sweep's failed jobs (add --cancelled for its cancelled ones).
    #[arg(long, env = "SWEEP_SWEEP")]
    pub sweep: Option<String>,
    /// With --sweep: retry its cancelled jobs.
    #[arg(long, conflicts_with = "job")]
    pub cancelled: bool,
    /// With --sweep: retry its failed jobs too when --cancelled is given (failed jobs are retried
    /// by default).
    #[arg(long, conflicts_with = "job")]
    pub failed: bool,
}

/// The request `args` ask for: a sweep's failed jobs unless only `--cancelled` is given.
pub fn request(args: &RetryArgs) -> pb::RetryJobsRequest {
    match (&args.job, &args.sweep) {
        (Some(job_id), _) => pb::RetryJobsRequest { job_id: *job_id, ..Default::default() },
        (None, sweep) => pb::RetryJobsRequest {
            job_id: 0,
            sweep: sweep.clone().unwrap_or_default(),
            failed: args.failed || !args.cancelled,
            cancelled: args.cancelled,
        },
    }
}

pub async fn run(args: RetryArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let retried = client.retry_jobs(request(&args)).await?.into_inner().retried;
    println!("{retried} job(s) queued again");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        retry: RetryArgs,
    }

    fn parse(args: &[&str]) -> Result<pb::RetryJobsRequest, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("retry").chain(args.iter().copied()))?;
        Ok(request(&cli.retry))
    }

    #[test]
    fn a_sweep_retries_its_failed_jobs_unless_told_otherwise() {
        let r = parse(&["--sweep", "s"]).unwrap();
        assert_eq!((r.sweep.as_str(), r.failed, r.cancelled), ("s", true, false));
        let r = parse(&["--sweep", "s", "--cancelled"]).unwrap();
        assert_eq!((r.failed, r.cancelled), (false, true));
        let r = parse(&["--sweep", "s", "--cancelled", "--failed"]).unwrap();
        assert_eq!((r.failed, r.cancelled), (true, true));
        assert_eq!(parse(&["--job", "7"]).unwrap().job_id, 7);
        assert!(parse(&[]).is_err(), "a job or a sweep is required");
        assert!(parse(&["--job", "7", "--cancelled"]).is_err(), "--cancelled needs --sweep");
    }
}
