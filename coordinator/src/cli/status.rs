//! `coordinator status` (all sweeps, one sweep's jobs, or one job's epoch table) and
//! `coordinator cancel`. Every string the coordinator sent is shown through
//! [`sweep_proto::text::printable`], so none can drive the terminal.

use clap::{ArgGroup, Args};
use sweep_proto::convert::state_from_wire;
use sweep_proto::pb;
use sweep_proto::text::printable;

use super::ClientArgs;
use crate::error::Result;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Show this sweep's jobs.
    #[arg(long, env = "SWEEP_SWEEP", conflicts_with = "job")]
    pub sweep: Option<String>,
    /// Show this job and its epoch table.
    #[arg(long, env = "SWEEP_JOB")]
    pub job: Option<i64>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["job", "sweep"])))]
pub struct CancelArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Cancel this job.
    #[arg(long, env = "SWEEP_JOB")]
    pub job: Option<i64>,
    /// Cancel every queued or running job of this sweep.
    #[arg(long, env = "SWEEP_SWEEP")]
    pub sweep: Option<String>,
}

fn state_name(state: i32) -> &'static str {
    state_from_wire(state).map(|s| s.as_str()).unwrap_or("?")
}

fn eta(seconds: f64) -> String {
    if seconds < 0.0 {
        return "unknown".into();
    }
    let s = seconds.round() as u64;
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

/// One line per sweep.
pub fn format_summary(s: &pb::SweepSummary) -> String {
    let name = printable(s.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("?"));
    format!(
        "{name:<24} jobs {:>4}  queued {:>4}  running {:>3}  succeeded {:>4}  failed {:>3}  cancelled {:>3}  \
         epochs {}/{} ({:.1}%)  eta {}",
        s.jobs_total,
        s.queued,
        s.running,
        s.succeeded,
        s.failed,
        s.cancelled,
        s.epochs_done,
        s.epochs_total,
        s.progress_percent,
        eta(s.eta_seconds)
    )
}

/// One line per job.
pub fn format_job(j: &pb::Job) -> String {
    let best = if j.best_epoch > 0 { format!("{:.4} @{}", j.best_val_acc, j.best_epoch) } else { "-".into() };
    let mut line = format!(
        "{:>6}  {:<16} {:>6}  {:<9} attempt {}/{}  epochs {:>4}/{:<4} best {:<14} {}",
        j.id,
        printable(&j.variant),
        j.seed,
        state_name(j.state),
        j.attempt,
        j.max_attempts,
        j.epochs_done,
        j.epochs,
        best,
        printable(&j.worker_id)
    );
    if !j.last_error.is_empty() {
        line.push_str(&format!("  error: {}", printable(j.last_error.lines().next().unwrap_or_default())));
    }
    line
}

/// One line per worker (`now_ms`: the time to say "last seen … ago" against).
pub fn format_worker(w: &pb::Worker, now_ms: i64) -> String {
    format!(
        "worker {:<24} host {:<16} gpus [{}] slots {} running {} last seen {} ms ago",
        printable(&w.id),
        printable(&w.hostname),
        printable(&w.gpus.join(", ")),
        w.slots,
        w.running_jobs,
        now_ms - w.last_seen_ms
    )
}

pub async fn run(args: StatusArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    if let Some(job_id) = args.job {
        let detail = client.get_job(pb::GetJobRequest { job_id }).await?.into_inner();
        if let Some(job) = &detail.job {
            println!("{}", format_job(job));
        }
        println!(
            "{:>5}  {:>10}  {:>9}  {:>10}  {:>9}  {:>9}  {:>10}",
            "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "img/s"
        );
        for e in &detail.epochs {
            println!(
                "{:>5}  {:>10.4}  {:>9.4}  {:>10.4}  {:>9.4}  {:>9.2}  {:>10.1}",
                e.epoch, e.train_loss, e.train_acc, e.val_loss, e.val_acc, e.wall_seconds, e.images_per_sec
            );
        }
    } else if let Some(sweep) = args.sweep {
        let summary = client.get_sweep(pb::GetSweepRequest { sweep: sweep.clone() }).await?.into_inner();
        println!("{}", format_summary(&summary));
        let jobs = client.list_jobs(pb::ListJobsRequest { sweep, ..Default::default() }).await?.into_inner();
        for job in &jobs.jobs {
            println!("{}", format_job(job));
        }
    } else {
        let sweeps = client.list_sweeps(pb::ListSweepsRequest {}).await?.into_inner().sweeps;
        if sweeps.is_empty() {
            println!("no sweeps");
        }
        for s in &sweeps {
            println!("{}", format_summary(s));
        }
        let workers = client.list_workers(pb::ListWorkersRequest {}).await?.into_inner().workers;
        for w in &workers {
            println!("{}", format_worker(w, crate::db::now_ms()));
        }
    }
    Ok(())
}

pub async fn cancel(args: CancelArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    let reply = match (args.job, args.sweep) {
        (Some(job_id), _) => client.cancel_job(pb::CancelJobRequest { job_id }).await?,
        (None, Some(sweep)) => client.cancel_sweep(pb::CancelSweepRequest { sweep }).await?,
        (None, None) => unreachable!("clap requires --job or --sweep"),
    };
    println!("{} job(s) cancelled", reply.into_inner().cancelled);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_strings_cannot_drive_the_terminal() {
        let job = pb::Job {
            id: 7,
            variant: "natural_softmax\u{1b}[2J".into(),
            worker_id: "gpu\u{1b}]0;pwned\u{7}".into(),
            last_error: "boom \u{1b}[31mred\u{9b}1A".into(),
            ..Default::default()
        };
        let line = format_job(&job);
        assert!(!line.chars().any(sweep_proto::text::is_unsafe_char), "{line:?}");
        assert!(line.contains("gpu\\u{1b}]0;pwned\\u{7}") && line.contains("\\u{9b}1A"), "{line}");
        let summary = pb::SweepSummary {
            spec: Some(pb::SweepSpec { name: "s\u{202e}exe".into(), ..Default::default() }),
            ..Default::default()
        };
        assert!(!format_summary(&summary).chars().any(sweep_proto::text::is_unsafe_char));
    }
}
