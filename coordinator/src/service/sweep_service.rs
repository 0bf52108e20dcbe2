//! `SweepService`: what users call to submit sweeps, inspect them, watch them and cancel jobs.

use std::sync::Arc;

use sweep_proto::convert::{parse_variant, state_from_wire, validate_sweep_name};
use sweep_proto::pb::sweep_service_server::SweepService;
use sweep_proto::{InvalidInput, SweepSpec, pb};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Shared, sweep_summary};
use crate::db::{self, epochs, jobs, sweeps, workers};
use crate::error::Error;
use crate::events::Event;
use crate::lifecycle;

/// Implementation of `sweep.v1.SweepService`.
#[derive(Debug, Clone)]
pub struct SweepApi {
    shared: Shared,
}

impl SweepApi {
    pub fn new(shared: Shared) -> SweepApi {
        SweepApi { shared }
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

fn checked_name(name: &str) -> Result<(), Error> {
    validate_sweep_name(name).map_err(|e| InvalidInput::new("sweep", e.message).into())
}

#[tonic::async_trait]
impl SweepService for SweepApi {
    async fn submit_sweep(
        &self,
        request: Request<pb::SubmitSweepRequest>,
    ) -> RpcResult<pb::SubmitSweepResponse> {
        let wire = request.into_inner().spec.ok_or_else(|| InvalidInput::new("spec", "is required"))?;
        let spec = SweepSpec::try_from(wire)?;
        let requested = spec.jobs().count() as u32;
        let name = spec.name.clone();
        let created = self
            .shared
            .db
            .write(move |conn| {
                Box::pin(async move {
                    let now = db::now_ms();
                    let merged = match sweeps::get(&mut *conn, &spec.name).await? {
                        Some(row) => sweeps::merge(&row.spec()?, &spec)?,
                        None => spec.clone(),
                    };
                    sweeps::upsert(&mut *conn, &merged, now).await?;
                    jobs::insert_missing(conn, &spec, now).await
                })
            })
            .await?;
        tracing::info!(sweep = %name, created = created.len(), "sweep submitted");
        self.shared.events.jobs_changed(&created);
        let jobs_created = created.len() as u32;
        Ok(Response::new(pb::SubmitSweepResponse {
            sweep: name,
            jobs_created,
            jobs_existing: requested - jobs_created,
        }))
    }

    async fn list_sweeps(&self, _: Request<pb::ListSweepsRequest>) -> RpcResult<pb::ListSweepsResponse> {
        let mut sweeps = Vec::new();
        for row in sweeps::list(self.shared.db.reader()).await.map_err(Status::from)? {
            sweeps.push(sweep_summary(&self.shared.db, &row.name).await?);
        }
        Ok(Response::new(pb::ListSweepsResponse { sweeps }))
    }

    async fn get_sweep(&self, request: Request<pb::GetSweepRequest>) -> RpcResult<pb::SweepSummary> {
        let name = request.into_inner().sweep;
        checked_name(&name)?;
        Ok(Response::new(sweep_summary(&self.shared.db, &name).await?))
    }

    async fn list_jobs(&self, request: Request<pb::ListJobsRequest>) -> RpcResult<pb::ListJobsResponse> {
        let req = request.into_inner();
        checked_name(&req.sweep)?;
        let state = req.state.map(state_from_wire).transpose()?;
        let variant = req.variant.as_deref().map(parse_variant).transpose()?;
        let pool = self.shared.db.reader();
        sweeps::require(pool, &req.sweep).await?;
        let rows = jobs::list(pool, &req.sweep, state, variant.map(|v| v.name())).await?;
        Ok(Response::new(pb::ListJobsResponse { jobs: rows.iter().map(jobs::JobRow::to_pb).collect() }))
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> RpcResult<pb::JobDetail> {
        let id = request.into_inner().job_id;
        let pool = self.shared.db.reader();
        let job = jobs::require(pool, id).await?;
        let epochs = epochs::for_job(pool, id).await?;
        Ok(Response::new(pb::JobDetail {
            job: Some(job.to_pb()),
            epochs: epochs.iter().map(epochs::EpochRow::metrics).collect(),
        }))
    }

    async fn list_workers(&self, _: Request<pb::ListWorkersRequest>) -> RpcResult<pb::ListWorkersResponse> {
        let rows = workers::list(self.shared.db.reader()).await?;
        Ok(Response::new(pb::ListWorkersResponse {
            workers: rows.iter().map(workers::WorkerRow::to_pb).collect(),
        }))
    }

    type WatchSweepStream = ReceiverStream<Result<pb::SweepEvent, Status>>;

    async fn watch_sweep(
        &self,
        request: Request<pb::WatchSweepRequest>,
    ) -> RpcResult<Self::WatchSweepStream> {
        let name = request.into_inner().sweep;
        checked_name(&name)?;
        // Subscribe before the snapshot so nothing between the two is missed.
        let events = self.shared.events.subscribe();
        let snapshot = sweep_summary(&self.shared.db, &name).await?;
        let (tx, rx) = mpsc::channel(256);
        tx.send(Ok(snapshot_event(snapshot))).await.ok();
        tokio::spawn(forward_events(self.shared.clone(), name, events, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn cancel_job(&self, request: Request<pb::CancelJobRequest>) -> RpcResult<pb::CancelResponse> {
        let id = request.into_inner().job_id;
        let job = self
            .shared
            .db
            .write(move |conn| {
                Box::pin(async move {
                    let job = jobs::require(&mut *conn, id).await?;
                    jobs::transition(conn, &job, lifecycle::Event::Cancel, db::now_ms()).await
                })
            })
            .await?;
        tracing::info!(job = id, "job cancelled");
        self.shared.events.jobs_changed([&job]);
        Ok(Response::new(pb::CancelResponse { cancelled: 1 }))
    }

    async fn cancel_sweep(&self, request: Request<pb::CancelSweepRequest>) -> RpcResult<pb::CancelResponse> {
        let name = request.into_inner().sweep;
        checked_name(&name)?;
        let sweep = name.clone();
        let cancelled = self
            .shared
            .db
            .write(move |conn| {
                Box::pin(async move {
                    sweeps::require(&mut *conn, &sweep).await?;
                    let now = db::now_ms();
                    let mut cancelled = Vec::new();
                    for job in jobs::list(&mut *conn, &sweep, None, None).await? {
                        if !job.job_state().is_terminal() {
                            cancelled
                                .push(jobs::transition(conn, &job, lifecycle::Event::Cancel, now).await?);
                        }
                    }
                    Ok(cancelled)
                })
            })
            .await?;
        tracing::info!(sweep = %name, cancelled = cancelled.len(), "sweep cancelled");
        self.shared.events.jobs_changed(&cancelled);
        Ok(Response::new(pb::CancelResponse { cancelled: cancelled.len() as u32 }))
    }
}

fn snapshot_event(summary: pb::SweepSummary) -> pb::SweepEvent {
    pb::SweepEvent { event: Some(pb::sweep_event::Event::Snapshot(summary)) }
}

/// Forwards the sweep's events to one watcher until it hangs up or the server stops. A watcher
/// that falls behind the broadcast buffer gets a fresh snapshot instead of an error.
async fn forward_events(
    shared: Shared,
    sweep: String,
    mut events: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<Result<pb::SweepEvent, Status>>,
) {
    let mut stop = shared.stop.clone();
    loop {
        let received = tokio::select! {
            received = events.recv() => received,
            _ = tx.closed() => return,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let message = match received {
            Ok(event) if event.sweep() == sweep => Ok(event.to_pb()),
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(sweep = %sweep, missed, "watcher lagged; sending a fresh snapshot");
                sweep_summary(&shared.db, &sweep).await.map(snapshot_event).map_err(Status::from)
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(message).await.is_err() {
            return;
        }
    }
}
