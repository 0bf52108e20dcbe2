//! `coordinator report` and [`fetch_report_input`]: reads a sweep over gRPC into the report
//! crate's input rows (jobs, epochs, provenance) and writes the report directory.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use report::{EpochRow, JobRow, Provenance, ReportFiles, ReportInput};
use sweep_proto::convert::state_from_wire;
use sweep_proto::domain::{CIFAR10_FILES, LossVariant};
use sweep_proto::{SweepSpec, pb};

use super::{ClientArgs, IntoSweepClient};
use crate::error::{Error, Result};

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
}

pub async fn run(args: ReportArgs) -> Result<()> {
    let client = args.client.connect().await?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("reports").join(&args.sweep));
    let files = write_sweep_report(client, &args.sweep, &out).await?;
    println!("report written to {}", files.index_html.display());
    Ok(())
}

/// Fetches the sweep and writes its report into `out_dir`.
pub async fn write_sweep_report(
    client: impl IntoSweepClient,
    sweep: &str,
    out_dir: &Path,
) -> Result<ReportFiles> {
    let input = fetch_report_input(client, sweep).await?;
    Ok(report::write_report(&input, out_dir)?)
}

/// Reads everything the report needs about `sweep` over gRPC: the spec, one row per job, every
/// stored epoch (current attempts), the workers' GPUs and the provenance block. `client` is a
/// connected `Channel` or a `SweepServiceClient` (see [`IntoSweepClient`]).
pub async fn fetch_report_input(client: impl IntoSweepClient, sweep: &str) -> Result<ReportInput> {
    let mut client = client.into_sweep_client();
    let summary = client.get_sweep(pb::GetSweepRequest { sweep: sweep.to_owned() }).await?.into_inner();
    let wire_spec = summary.spec.ok_or_else(|| Error::Internal("the coordinator sent no spec".into()))?;
    let spec_json = crate::client::SpecFile::from_wire(&wire_spec).to_json();
    let spec = SweepSpec::try_from(wire_spec)?;
    let variants: Vec<String> = spec.variants.iter().map(|v| v.name().to_owned()).collect();
    let baseline = LossVariant::NormalLr1e3.name();
    let baseline_variant =
        if variants.iter().any(|v| v == baseline) { baseline.to_owned() } else { variants[0].clone() };

    let listed =
        client.list_jobs(pb::ListJobsRequest { sweep: sweep.to_owned(), ..Default::default() }).await?;
    let mut jobs = Vec::new();
    let mut epochs = Vec::new();
    for job in listed.into_inner().jobs {
        let detail = client.get_job(pb::GetJobRequest { job_id: job.id }).await?.into_inner();
        let job = detail.job.unwrap_or(job);
        let last = detail.epochs.iter().max_by_key(|e| e.epoch);
        let stored = !detail.epochs.is_empty();
        jobs.push(JobRow {
            job_id: job.id,
            variant: job.variant.clone(),
            seed: job.seed,
            state: state_from_wire(job.state).map(|s| s.as_str().to_owned()).unwrap_or_default(),
            epochs: job.epochs,
            epochs_done: job.epochs_done,
            best_val_acc: stored.then_some(job.best_val_acc),
            best_epoch: stored.then_some(job.best_epoch),
            final_train_acc: last.map(|e| e.train_acc),
            final_val_acc: last.map(|e| e.val_acc),
            wall_seconds: detail.epochs.iter().fold(0.0, |sum, e| sum + e.wall_seconds),
            worker: job.worker_id.clone(),
        });
        epochs.extend(detail.epochs.iter().map(|e| EpochRow {
            job_id: job.id,
            variant: job.variant.clone(),
            seed: job.seed,
            epoch: e.epoch,
            train_loss: e.train_loss,
            train_acc: e.train_acc,
            val_loss: e.val_loss,
            val_acc: e.val_acc,
            wall_seconds: e.wall_seconds,
            images_per_sec: e.images_per_sec,
        }));
    }

    let mut devices: Vec<String> = client
        .list_workers(pb::ListWorkersRequest {})
        .await?
        .into_inner()
        .workers
        .into_iter()
        .flat_map(|w| w.gpus)
        .collect();
    devices.sort();
    devices.dedup();

    Ok(ReportInput {
        sweep: sweep.to_owned(),
        variants,
        baseline_variant,
        spec_json,
        jobs,
        epochs,
        provenance: Provenance {
            git_commit: git_commit(),
            crate_versions: crate_versions(),
            devices,
            data_md5: CIFAR10_FILES.iter().map(|(f, md5)| (f.to_string(), md5.to_string())).collect(),
            generated_at: rfc3339(SystemTime::now()),
        },
    })
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn crate_versions() -> Vec<(String, String)> {
    [
        ("coordinator", env!("CARGO_PKG_VERSION")),
        ("sweep-proto", env!("CARGO_PKG_VERSION")),
        ("burn", "0.21.0"),
        ("tonic", "0.14.9"),
        ("sqlx", "0.9.0"),
    ]
    .into_iter()
    .map(|(c, v)| (c.to_owned(), v.to_owned()))
    .collect()
}

/// Formats a time as RFC 3339 in UTC (e.g. `2026-11-26T19:25:03Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_720_003)), "2026-11-26T19:06:43Z");
    }
}
