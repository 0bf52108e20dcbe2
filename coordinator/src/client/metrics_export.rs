//! The export of a command sweep: its jobs with their parameters and best objective value, and
//! every stored epoch with every metric it reported, whatever their names (the built-in CNN's
//! sweeps export the report's fixed tables instead).

use std::collections::{BTreeMap, BTreeSet};

use report::tables::csv_text;
use serde::Serialize;
use sweep_proto::convert::state_from_wire;
use sweep_proto::domain::label_point;
use sweep_proto::pb;

use sweep_proto::connect::AuthChannel;
use sweep_proto::pb::sweep_service_client::SweepServiceClient;

use super::IntoSweepClient;
use crate::error::{Error, Result};

/// One job of a command sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobExport {
    pub job_id: i64,
    /// The parameter point's label, `a=1,b=x`.
    pub variant: String,
    pub params: BTreeMap<String, String>,
    pub seed: u64,
    pub state: String,
    pub attempt: u32,
    pub epochs_done: u32,
    /// The best value of the sweep's objective and its epoch; `None` before one was reported.
    pub best_value: Option<f64>,
    pub best_epoch: Option<u32>,
    pub worker: String,
    pub error: String,
}

/// One stored epoch and every metric it carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochExport {
    pub job_id: i64,
    pub epoch: u32,
    pub attempt: u32,
    pub wall_seconds: f64,
    pub metrics: BTreeMap<String, f64>,
}

/// A command sweep's export.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsExport {
    pub sweep: String,
    /// The metric that ranks epochs and jobs, and whether higher is better.
    pub objective: String,
    pub maximize: bool,
    pub jobs: Vec<JobExport>,
    pub epochs: Vec<EpochExport>,
}

fn metrics(e: &pb::EpochMetrics) -> BTreeMap<String, f64> {
    let named = [
        ("train_loss", e.train_loss),
        ("train_acc", e.train_acc),
        ("val_loss", e.val_loss),
        ("val_acc", e.val_acc),
        ("images_per_sec", e.images_per_sec),
    ];
    let mut out: BTreeMap<String, f64> =
        named.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v))).collect();
    out.extend(e.values.iter().map(|(k, v)| (k.clone(), *v)));
    out
}

/// Reads a command sweep's jobs and epochs over gRPC.
pub async fn fetch_metrics_export(client: impl IntoSweepClient, sweep: &str) -> Result<MetricsExport> {
    let mut client = client.into_sweep_client();
    let summary = client.get_sweep(pb::GetSweepRequest { sweep: sweep.to_owned() }).await?.into_inner();
    read_metrics_export(&mut client, sweep, summary).await
}

/// [`fetch_metrics_export`] for a sweep whose summary the caller has already read.
pub async fn read_metrics_export(
    client: &mut SweepServiceClient<AuthChannel>,
    sweep: &str,
    summary: pb::SweepSummary,
) -> Result<MetricsExport> {
    let spec = summary.spec.ok_or_else(|| Error::Internal("the coordinator sent no spec".into()))?;
    let objective = spec.objective.unwrap_or_default();
    let details = super::connection::sweep_details(client, sweep).await?;
    let mut export = MetricsExport {
        sweep: sweep.to_owned(),
        objective: if objective.metric.is_empty() { "val_acc".into() } else { objective.metric },
        maximize: objective.mode != pb::objective::Mode::Min as i32,
        jobs: Vec::new(),
        epochs: Vec::new(),
    };
    for detail in details {
        let Some(job) = detail.job else { continue };
        let reached = job.best_epoch > 0;
        export.jobs.push(JobExport {
            job_id: job.id,
            params: label_point(&job.variant),
            variant: job.variant.clone(),
            seed: job.seed,
            state: state_from_wire(job.state).map(|s| s.as_str().to_owned()).unwrap_or_default(),
            attempt: job.attempt,
            epochs_done: job.epochs_done,
            best_value: reached.then_some(job.best_value),
            best_epoch: reached.then_some(job.best_epoch),
            worker: job.worker_id.clone(),
            error: job.last_error.clone(),
        });
        export.epochs.extend(detail.epochs.iter().map(|e| EpochExport {
            job_id: job.id,
            epoch: e.epoch,
            attempt: e.attempt,
            wall_seconds: e.wall_seconds,
            metrics: metrics(e),
        }));
    }
    Ok(export)
}

fn cell(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// `jobs.csv`: one row per job, a column per parameter; `epochs.csv`: one row per epoch, a
/// column per metric any epoch reported (empty where an epoch did not).
pub fn write_csv(export: &MetricsExport) -> std::result::Result<(Vec<u8>, Vec<u8>), csv::Error> {
    let names: BTreeSet<&String> = export.jobs.iter().flat_map(|j| j.params.keys()).collect();
    let mut jobs = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = ["job_id", "variant", "seed"].map(String::from).to_vec();
    header.extend(names.iter().map(|n| csv_text(n).into_owned()));
    header.extend(
        [
            "state",
            "attempt",
            "epochs_done",
            &format!("best_{}", export.objective),
            "best_epoch",
            "worker",
            "error",
        ]
        .map(String::from),
    );
    jobs.write_record(&header)?;
    for j in &export.jobs {
        let mut row = vec![j.job_id.to_string(), csv_text(&j.variant).into_owned(), j.seed.to_string()];
        row.extend(names.iter().map(|n| csv_text(j.params.get(*n).map_or("", String::as_str)).into_owned()));
        row.extend([
            j.state.clone(),
            j.attempt.to_string(),
            j.epochs_done.to_string(),
            cell(j.best_value),
            j.best_epoch.map(|e| e.to_string()).unwrap_or_default(),
            csv_text(&j.worker).into_owned(),
            csv_text(&j.error).into_owned(),
        ]);
        jobs.write_record(&row)?;
    }
    let metrics: BTreeSet<&String> = export.epochs.iter().flat_map(|e| e.metrics.keys()).collect();
    let mut epochs = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = ["job_id", "epoch", "attempt", "wall_seconds"].map(String::from).to_vec();
    header.extend(metrics.iter().map(|m| csv_text(m).into_owned()));
    epochs.write_record(&header)?;
    for e in &export.epochs {
        let mut row = vec![
            e.job_id.to_string(),
            e.epoch.to_string(),
            e.attempt.to_string(),
            format!("{:.3}", e.wall_seconds),
        ];
        row.extend(metrics.iter().map(|m| cell(e.metrics.get(*m).copied())));
        epochs.write_record(&row)?;
    }
    let finish = |w: csv::Writer<Vec<u8>>| w.into_inner().map_err(|e| csv::Error::from(e.into_error()));
    Ok((finish(jobs)?, finish(epochs)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_and_parameter_gets_a_column() {
        let export = MetricsExport {
            sweep: "byo".into(),
            objective: "loss".into(),
            maximize: false,
            jobs: vec![JobExport {
                job_id: 1,
                variant: "lr=0.1,opt=adam".into(),
                params: label_point("lr=0.1,opt=adam"),
                seed: 0,
                state: "succeeded".into(),
                attempt: 1,
                epochs_done: 2,
                best_value: Some(0.25),
                best_epoch: Some(2),
                worker: "w".into(),
                error: "=cmd".into(),
            }],
            epochs: vec![
                EpochExport {
                    job_id: 1,
                    epoch: 1,
                    attempt: 1,
                    wall_seconds: 1.0,
                    metrics: [("loss".into(), 0.5)].into(),
                },
                EpochExport {
                    job_id: 1,
                    epoch: 2,
                    attempt: 1,
                    wall_seconds: 1.0,
                    metrics: [("loss".into(), 0.25), ("val_acc".into(), 0.9)].into(),
                },
            ],
        };
        let (jobs, epochs) = write_csv(&export).unwrap();
        let (jobs, epochs) = (String::from_utf8(jobs).unwrap(), String::from_utf8(epochs).unwrap());
        assert_eq!(
            jobs.lines().collect::<Vec<_>>(),
            [
                "job_id,variant,seed,lr,opt,state,attempt,epochs_done,best_loss,best_epoch,worker,error",
                "1,\"lr=0.1,opt=adam\",0,0.1,adam,succeeded,1,2,0.25,2,w,'=cmd",
            ]
        );
        assert_eq!(
            epochs.lines().collect::<Vec<_>>(),
            ["job_id,epoch,attempt,wall_seconds,loss,val_acc", "1,1,1,1.000,0.5,", "1,2,1,1.000,0.25,0.9"]
        );
    }
}
