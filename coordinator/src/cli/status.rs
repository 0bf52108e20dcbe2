//! `coordinator status` (all sweeps, one sweep's jobs, or one job's epoch table) and
//! `coordinator cancel`. Every string the coordinator sent is shown through
//! [`sweep_proto::text::printable`], so none can drive the terminal.

use clap::{ArgGroup, Args};
use sweep_proto::convert::state_from_wire;
use sweep_proto::pb;
use sweep_proto::text::printable;

use super::ClientArgs;
use crate::client::watch::best_text;
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
    /// Also list workers that are gone (not seen for 10 lease TTLs).
    #[arg(long)]
    pub all_workers: bool,
}

/// A worker unseen for this many lease TTLs is gone: its leases have long expired.
pub const GONE_AFTER_TTLS: i64 = 10;

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
    sweep_proto::text::hms(seconds)
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
    let best = if j.best_epoch > 0 { format!("{} @{}", best_text(j), j.best_epoch) } else { "-".into() };
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

/// Whether a worker last seen at `last_seen_ms` is gone at `now_ms` (see [`GONE_AFTER_TTLS`]).
pub fn is_gone(last_seen_ms: i64, now_ms: i64, lease_ttl_ms: u32) -> bool {
    now_ms - last_seen_ms > GONE_AFTER_TTLS * i64::from(lease_ttl_ms.max(1))
}

/// One line per worker (`now_ms`: the time to say "last seen … ago" against).
pub fn format_worker(w: &pb::Worker, now_ms: i64, lease_ttl_ms: u32) -> String {
    let ago = (now_ms - w.last_seen_ms).max(0);
    let state = if is_gone(w.last_seen_ms, now_ms, lease_ttl_ms) { "gone" } else { "live" };
    format!(
        "worker {:<24} {state}  host {:<16} gpus [{}] slots {} ({} idle) running {} last seen {} ago",
        printable(&w.id),
        printable(&w.hostname),
        printable(&w.gpus.join(", ")),
        w.slots,
        w.idle_slots,
        w.running_jobs,
        ago_text(ago)
    )
}

fn ago_text(ms: i64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        format!("{} s", ms / 1000)
    } else if ms < 7_200_000 {
        format!("{} min", ms / 60_000)
    } else {
        format!("{} h", ms / 3_600_000)
    }
}

pub async fn run(args: StatusArgs) -> Result<()> {
    let mut client = args.client.connect().await?;
    if let Some(job_id) = args.job {
        let detail = client.get_job(pb::GetJobRequest { job_id }).await?.into_inner();
        if let Some(job) = &detail.job {
            println!("{}", format_job(job));
        }
        println!(
            "{:>5}  {:>10}  {:>10}  {:>10}  {:>10}  {:>9}  {:>10}  {:>7}",
            "epoch", "train_loss", "train_acc%", "val_loss", "val_acc%", "seconds", "img/s", "attempt"
        );
        for e in &detail.epochs {
            let cell = |v: Option<f64>, scale: f64, decimals: usize| match v {
                Some(v) => format!("{:>10.*}", decimals, scale * v),
                None => format!("{:>10}", "-"),
            };
            let others: Vec<String> = e.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "{:>5}  {}  {}  {}  {}  {:>9.2}  {}  {:>7}  {}",
                e.epoch,
                cell(e.train_loss, 1.0, 4),
                cell(e.train_acc, 100.0, 2),
                cell(e.val_loss, 1.0, 4),
                cell(e.val_acc, 100.0, 2),
                e.wall_seconds,
                cell(e.images_per_sec, 1.0, 1),
                e.attempt,
                others.join(" ")
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
        let workers = client.list_workers(pb::ListWorkersRequest {}).await?.into_inner();
        let now = crate::db::now_ms();
        let (mut hidden, ttl) = (0, workers.lease_ttl_ms);
        for w in &workers.workers {
            if args.all_workers || !is_gone(w.last_seen_ms, now, ttl) {
                println!("{}", format_worker(w, now, ttl));
            } else {
                hidden += 1;
            }
        }
        if hidden > 0 {
            println!("({hidden} gone worker(s) not shown: --all-workers lists them)");
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

    #[test]
    fn workers_unseen_for_ten_ttls_are_gone() {
        assert!(!is_gone(0, 300_000, 30_000), "exactly ten TTLs: still live");
        assert!(is_gone(0, 300_001, 30_000));
        let w = pb::Worker {
            id: "gpu-1".into(),
            last_seen_ms: 1_000,
            slots: 3,
            idle_slots: 2,
            ..Default::default()
        };
        assert!(format_worker(&w, 1_500, 30_000).contains("slots 3 (2 idle)"));
        assert!(
            format_worker(&w, 1_500, 30_000).contains("live")
                && format_worker(&w, 1_500, 30_000).contains("500 ms ago")
        );
        let line = format_worker(&w, 3_601_000 + 1_000, 30_000);
        assert!(line.contains("gone") && line.contains("60 min ago"), "{line}");
    }

    #[test]
    fn accuracy_is_shown_in_percent_and_a_command_jobs_metric_as_reported() {
        let job = pb::Job {
            id: 1,
            variant: "natural_softmax".into(),
            best_value: 0.89875,
            best_epoch: 78,
            ..Default::default()
        };
        assert!(format_job(&job).contains("89.88% @78"), "{}", format_job(&job));
        let command = pb::Job { variant: "lr=0.1".into(), best_value: 0.0333333333, ..job };
        assert!(format_job(&command).contains("0.0333333 @78"), "{}", format_job(&command));
    }
}
