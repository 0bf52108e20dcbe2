//! Reading a sweep over gRPC into the report crate's input rows ([`fetch_report_input`]: jobs
//! with their attempts and failure reasons, epochs with the attempt that stored them, learning
//! rates, provenance from the build) and writing its report ([`write_sweep_report`]).

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use report::{EpochRow, JobRow, Provenance, ReportFiles, ReportInput};
use sweep_proto::convert::state_from_wire;
use sweep_proto::domain::{Direction, LossVariant, point_label};
use sweep_proto::text::printable;
use sweep_proto::{SweepSpec, pb};

use sweep_proto::connect::AuthChannel;
use sweep_proto::pb::sweep_service_client::SweepServiceClient;

use super::IntoSweepClient;
use super::report_groups::{Grouping, grouped};
use crate::error::{Error, Result};

/// Fetches the sweep and writes its report into `out_dir`; a command sweep's jobs are grouped
/// as `grouping` says (see [`super::report_groups`]).
pub async fn write_sweep_report(
    client: impl IntoSweepClient,
    sweep: &str,
    out_dir: &Path,
    grouping: &Grouping,
) -> Result<ReportFiles> {
    let input = fetch_report_input(client, sweep).await?;
    let spec: crate::client::SpecFile = serde_json::from_str(&input.spec_json)?;
    let input = match &spec.command {
        Some(_) => grouped(input, grouping)?,
        None => input,
    };
    Ok(report::write_report(&input, out_dir)?)
}

/// Reads everything the report needs about `sweep` over gRPC: the spec and its learning rates,
/// one row per job, every stored epoch, the workers' GPUs and the provenance block. `client` is
/// a connected `Channel` or a `SweepServiceClient` (see [`IntoSweepClient`]).
pub async fn fetch_report_input(client: impl IntoSweepClient, sweep: &str) -> Result<ReportInput> {
    let mut client = client.into_sweep_client();
    let summary = client.get_sweep(pb::GetSweepRequest { sweep: sweep.to_owned() }).await?.into_inner();
    read_report_input(&mut client, sweep, summary).await
}

/// [`fetch_report_input`] for a sweep whose summary the caller has already read.
pub async fn read_report_input(
    client: &mut SweepServiceClient<AuthChannel>,
    sweep: &str,
    summary: pb::SweepSummary,
) -> Result<ReportInput> {
    let wire_spec = summary.spec.ok_or_else(|| Error::Internal("the coordinator sent no spec".into()))?;
    let details = super::connection::sweep_details(client, sweep).await?;
    let workers = client.list_workers(pb::ListWorkersRequest {}).await?.into_inner().workers;
    report_input(sweep, wire_spec, details, &workers)
}

/// The report's input from the wire's view of a sweep: its spec, each job with its stored
/// epochs (`GetJob` answers) and the registered workers.
pub fn report_input(
    sweep: &str,
    wire_spec: pb::SweepSpec,
    details: Vec<pb::JobDetail>,
    workers: &[pb::Worker],
) -> Result<ReportInput> {
    let spec_json = crate::client::SpecFile::from_wire(&wire_spec).to_json();
    let spec = SweepSpec::try_from(wire_spec)?;
    // A command sweep's groups are its parameter points (its rows then hold its objective).
    let mut variants: Vec<String> = spec.variants.iter().map(|v| v.name().to_owned()).collect();
    if let Some(command) = &spec.command {
        for label in command.points(&spec.name).iter().map(point_label) {
            // Random samples may draw one point twice.
            if !variants.contains(&label) {
                variants.push(label);
            }
        }
    }
    let learning_rates =
        spec.variants.iter().map(|v| (v.name().to_owned(), spec.learning_rate(*v))).collect();
    let baseline = LossVariant::NormalLr1e3.name();
    let baseline_variant =
        if variants.iter().any(|v| v == baseline) { baseline.to_owned() } else { variants[0].clone() };

    let objective = &spec.objective;
    let measure = report::Measure::of(&objective.metric, objective.direction == Direction::Max);
    let mut jobs = Vec::new();
    let mut epochs = Vec::new();
    for detail in details {
        let Some(job) = detail.job else { continue };
        let last = detail.epochs.iter().max_by_key(|e| e.epoch);
        let stored = !detail.epochs.is_empty();
        jobs.push(JobRow {
            job_id: job.id,
            variant: job.variant.clone(),
            seed: job.seed,
            state: state_from_wire(job.state).map(|s| s.as_str().to_owned()).unwrap_or_default(),
            epochs: job.epochs,
            epochs_done: job.epochs_done,
            best_value: stored.then_some(job.best_value),
            best_epoch: stored.then_some(job.best_epoch),
            final_train_acc: last.and_then(|e| e.train_acc),
            final_val_acc: last.and_then(|e| e.val_acc),
            wall_seconds: detail.epochs.iter().fold(0.0, |sum, e| sum + e.wall_seconds),
            worker: job.worker_id.clone(),
            attempts: job.attempt,
            error: failure_reason(&job.last_error),
        });
        epochs.extend(detail.epochs.iter().map(|e| {
            EpochRow {
                job_id: job.id,
                variant: job.variant.clone(),
                seed: job.seed,
                epoch: e.epoch,
                // The built-in CNN reports every one of these; a command job's missing ones are NaN.
                train_loss: e.train_loss.unwrap_or(f64::NAN),
                train_acc: e.train_acc.unwrap_or(f64::NAN),
                val_loss: e.val_loss.unwrap_or(f64::NAN),
                val_acc: e.val_acc.unwrap_or(f64::NAN),
                wall_seconds: e.wall_seconds,
                images_per_sec: e.images_per_sec.unwrap_or(f64::NAN),
                attempt: e.attempt,
                // NaN where the epoch lacks the measure: it must not fall back to val_acc.
                value: (measure.metric != "val_acc").then(|| {
                    let metrics = sweep_proto::EpochMetrics::try_from(e.clone()).ok();
                    metrics.and_then(|m| m.get(&measure.metric)).unwrap_or(f64::NAN)
                }),
            }
        }));
    }

    let (devices, data_md5) = workers_provenance(workers, &jobs);

    Ok(ReportInput {
        sweep: sweep.to_owned(),
        variants,
        baseline_variant,
        spec_json,
        jobs,
        epochs,
        learning_rates,
        provenance: Provenance {
            git_commit: env!("SWEEP_GIT_COMMIT").to_owned(),
            rustc_version: env!("SWEEP_RUSTC_VERSION").to_owned(),
            crate_versions: crate_versions(),
            devices,
            data_md5,
            generated_at: rfc3339(SystemTime::now()),
        },
        measure,
    })
}

/// The devices and the verified data files (file, MD5) of the workers that ran `jobs`, each
/// sorted and deduplicated: what this sweep's numbers were produced on and from.
fn workers_provenance(workers: &[pb::Worker], jobs: &[JobRow]) -> (Vec<String>, Vec<(String, String)>) {
    let ran: HashSet<&str> = jobs.iter().map(|j| j.worker.as_str()).filter(|w| !w.is_empty()).collect();
    let ran: Vec<&pb::Worker> = workers.iter().filter(|w| ran.contains(w.id.as_str())).collect();
    let devices: BTreeSet<String> = ran.iter().flat_map(|w| w.gpus.iter().cloned()).collect();
    let files: BTreeSet<(String, String)> =
        ran.iter().flat_map(|w| w.data_files.iter().map(|f| (f.name.clone(), f.md5.clone()))).collect();
    (devices.into_iter().collect(), files.into_iter().collect())
}

/// A failure reason as the report's rows carry it: one line, control and bidirectional
/// characters written as visible escapes (`\u{1b}`), so that no file made from the rows (the
/// report's or `coordinator export`'s) carries them.
fn failure_reason(error: &str) -> String {
    printable(&error.split_whitespace().collect::<Vec<_>>().join(" ")).into_owned()
}

/// This crate's version and the locked versions the build script read from Cargo.lock.
fn crate_versions() -> Vec<(String, String)> {
    let mut versions = vec![
        ("coordinator".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("sweep-proto".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
    ];
    versions.extend(locked_versions(env!("SWEEP_LOCKED_VERSIONS")));
    versions
}

/// `burn=0.21.0;tonic=0.14.9` as (crate, version) pairs.
fn locked_versions(text: &str) -> Vec<(String, String)> {
    text.split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(c, v)| (c.trim().to_owned(), v.trim().to_owned()))
        .filter(|(c, v)| !c.is_empty() && !v.is_empty())
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
    fn provenance_comes_from_the_build() {
        let commit = env!("SWEEP_GIT_COMMIT");
        assert!(!commit.is_empty() && !commit.contains(char::is_whitespace), "{commit:?}");
        assert!(env!("SWEEP_RUSTC_VERSION").starts_with("rustc "), "{}", env!("SWEEP_RUSTC_VERSION"));
        let versions = crate_versions();
        assert!(versions.iter().any(|(c, v)| c == "burn" && v == "0.21.0"), "{versions:?}");
        assert_eq!(
            locked_versions("burn=0.21.0;;tonic = 0.14.9;bogus"),
            [("burn".to_owned(), "0.21.0".to_owned()), ("tonic".to_owned(), "0.14.9".to_owned())]
        );
    }

    #[test]
    fn provenance_names_only_the_workers_that_ran_the_sweep() {
        let file = |name: &str, md5: &str| pb::DataFile { name: name.into(), md5: md5.into() };
        let worker = |id: &str, gpu: &str, files: Vec<pb::DataFile>| pb::Worker {
            id: id.into(),
            gpus: vec![gpu.into()],
            data_files: files,
            ..Default::default()
        };
        let workers = [
            worker(
                "a",
                "NVIDIA H200",
                vec![file("test_batch.bin", "803d"), file("data_batch_1.bin", "5dd7")],
            ),
            worker("b", "NVIDIA H200", vec![file("test_batch.bin", "803d")]),
            worker("idle", "cpu", vec![file("test_batch.bin", "ffff")]),
        ];
        let job = |worker: &str| JobRow { worker: worker.into(), ..JobRow::default() };
        let (devices, files) = workers_provenance(&workers, &[job("a"), job("b"), job("")]);
        assert_eq!(devices, ["NVIDIA H200"]);
        let expected = [("data_batch_1.bin", "5dd7"), ("test_batch.bin", "803d")];
        assert_eq!(files, expected.map(|(f, m)| (f.to_owned(), m.to_owned())));
        assert_eq!(workers_provenance(&workers, &[job("")]), (vec![], vec![]));
    }

    #[test]
    fn failure_reasons_are_one_line_without_control_characters() {
        assert_eq!(
            failure_reason("CUDA error:\n  out of memory\u{1b}[2J"),
            "CUDA error: out of memory\\u{1b}[2J"
        );
        assert_eq!(failure_reason(""), "");
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_720_003)), "2026-11-26T19:06:43Z");
    }
}
