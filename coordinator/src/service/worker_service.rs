//! `WorkerService`: what GPU workers call to register, lease jobs, heartbeat, stream epoch
//! metrics and finish. Every write after the lease is fenced (job id, attempt, lease token).

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use sweep_proto::convert::required_fence;
use sweep_proto::pb::lease_status::Verdict;
use sweep_proto::pb::worker_service_server::WorkerService;
use sweep_proto::{DataOptions, EpochMetrics, Fence, InvalidInput, JobAssignment, LossVariant, pb};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::db::epochs::{self, EpochWrite};
use crate::db::ingest::{HeartbeatWrite, LeaseVerdict, LeaseWrite};
use crate::db::{self, jobs, workers};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::lifecycle;

/// Longest worker id, host name or GPU name accepted.
const MAX_ID_LEN: usize = 256;
/// Epoch reports of one stream being stored at the same time.
const MAX_EPOCHS_IN_FLIGHT: usize = 32;
/// Longest failure message kept (longer ones are truncated).
const MAX_ERROR_LEN: usize = 8192;

/// Implementation of `sweep.v1.WorkerService`.
#[derive(Debug, Clone)]
pub struct WorkerApi {
    shared: Shared,
}

impl WorkerApi {
    pub fn new(shared: Shared) -> WorkerApi {
        WorkerApi { shared }
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

fn checked_id(field: &'static str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(InvalidInput::new(field, format!("must hold 1..={MAX_ID_LEN} bytes")).into());
    }
    Ok(())
}

fn millis(d: std::time::Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn truncated(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn register_worker(
        &self,
        request: Request<pb::RegisterWorkerRequest>,
    ) -> RpcResult<pb::RegisterWorkerResponse> {
        let req = request.into_inner();
        checked_id("worker_id", &req.worker_id)?;
        checked_id("hostname", &req.hostname)?;
        for gpu in &req.gpus {
            checked_id("gpus", gpu)?;
        }
        let slots = req.slots.max(1);
        self.shared
            .db
            .write_single(move |conn| {
                Box::pin(async move {
                    workers::register(conn, &req.worker_id, &req.hostname, &req.gpus, slots, db::now_ms())
                        .await
                })
            })
            .await?;
        let config = &self.shared.config;
        Ok(Response::new(pb::RegisterWorkerResponse {
            lease_ttl_ms: millis(config.lease_ttl) as u32,
            heartbeat_interval_ms: millis(config.heartbeat_interval) as u32,
        }))
    }

    async fn lease_job(&self, request: Request<pb::LeaseJobRequest>) -> RpcResult<pb::LeaseJobResponse> {
        let req = request.into_inner();
        checked_id("worker_id", &req.worker_id)?;
        let ttl = self.shared.config.lease_ttl;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let lease = LeaseWrite {
            worker_id: req.worker_id,
            lease_token: token,
            expires_at_ms: db::now_ms() + millis(ttl),
        };
        let claimed = self.shared.db.lease(lease).await?;
        let Some((job, data)) = claimed else {
            let retry_after_ms = millis(self.shared.config.idle_retry_after) as u32;
            return Ok(Response::new(pb::LeaseJobResponse { job: None, retry_after_ms }));
        };
        tracing::debug!(job = job.id, attempt = job.attempt, worker = ?job.worker_id, "job leased");
        self.shared.events.jobs_changed([&job]);
        let assignment = assignment(&job, data, ttl)?;
        Ok(Response::new(pb::LeaseJobResponse { job: Some(assignment.into()), retry_after_ms: 0 }))
    }

    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> RpcResult<pb::HeartbeatResponse> {
        let req = request.into_inner();
        checked_id("worker_id", &req.worker_id)?;
        let fences = req.leases.into_iter().map(Fence::try_from).collect::<Result<Vec<_>, _>>()?;
        let job_ids: Vec<i64> = fences.iter().map(|f| f.job_id).collect();
        let beat = HeartbeatWrite {
            worker_id: req.worker_id,
            idle_slots: req.idle_slots,
            fences,
            lease_ttl_ms: millis(self.shared.config.lease_ttl),
        };
        let verdicts = self.shared.db.heartbeat(beat).await?;
        let leases = job_ids
            .into_iter()
            .zip(verdicts)
            .map(|(job_id, verdict)| {
                let verdict = match verdict {
                    LeaseVerdict::Renewed => Verdict::Renewed,
                    LeaseVerdict::Cancelled => Verdict::Cancelled,
                    LeaseVerdict::Lost => Verdict::Lost,
                };
                pb::LeaseStatus { job_id, verdict: verdict as i32 }
            })
            .collect();
        Ok(Response::new(pb::HeartbeatResponse { leases }))
    }

    type ReportEpochsStream = ReceiverStream<Result<pb::EpochAck, Status>>;

    async fn report_epochs(
        &self,
        request: Request<Streaming<pb::EpochReport>>,
    ) -> RpcResult<Self::ReportEpochsStream> {
        let reports = request.into_inner();
        let (tx, rx) = mpsc::channel(MAX_EPOCHS_IN_FLIGHT * 2);
        tokio::spawn(pump_epochs(Arc::new(self.shared.clone()), reports, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn complete_job(
        &self,
        request: Request<pb::CompleteJobRequest>,
    ) -> RpcResult<pb::CompleteJobResponse> {
        let fence = required_fence(request.into_inner().fence)?;
        let job = self
            .shared
            .db
            .write_single(move |conn| {
                Box::pin(async move {
                    let now = db::now_ms();
                    if let Some(job) = jobs::complete_fenced(&mut *conn, &fence, now).await? {
                        return Ok(job);
                    }
                    // Not completable: find out why (the checks below only read).
                    let job = jobs::fenced(&mut *conn, &fence, now).await?;
                    if job.epochs_done < job.epochs {
                        let stored: Vec<i64> =
                            epochs::for_job(&mut *conn, job.id).await?.iter().map(|e| e.epoch).collect();
                        let missing: Vec<String> =
                            (1..=job.epochs).filter(|e| !stored.contains(e)).map(|e| e.to_string()).collect();
                        return Err(Error::Precondition(format!(
                            "missing epochs: job {} stored {} of {} epochs (missing {})",
                            job.id,
                            job.epochs_done,
                            job.epochs,
                            abbreviated(&missing)
                        )));
                    }
                    jobs::transition(conn, &job, lifecycle::Event::Complete, now).await
                })
            })
            .await?;
        tracing::info!(job = job.id, best_val_acc = job.best_val_acc, "job succeeded");
        self.shared.events.jobs_changed([&job]);
        Ok(Response::new(pb::CompleteJobResponse { job: Some(job.to_pb()) }))
    }

    async fn fail_job(&self, request: Request<pb::FailJobRequest>) -> RpcResult<pb::FailJobResponse> {
        let req = request.into_inner();
        let fence = required_fence(req.fence)?;
        let error = if req.error.trim().is_empty() {
            "the worker reported a failure without a message".to_owned()
        } else {
            truncated(req.error, MAX_ERROR_LEN)
        };
        let job = self
            .shared
            .db
            .write_single(move |conn| {
                Box::pin(async move {
                    let now = db::now_ms();
                    let job = jobs::fenced(&mut *conn, &fence, now).await?;
                    jobs::transition(conn, &job, lifecycle::Event::Fail { error }, now).await
                })
            })
            .await?;
        tracing::warn!(job = job.id, state = %job.state, error = ?job.last_error, "job attempt failed");
        self.shared.events.jobs_changed([&job]);
        Ok(Response::new(pb::FailJobResponse { job: Some(job.to_pb()) }))
    }
}

/// Reads a worker's epoch reports and stores up to [`MAX_EPOCHS_IN_FLIGHT`] of them at once
/// (they share the writer's group commits), answering with one ack per report, in order. The
/// first rejected report ends the stream with its status; reports already in flight behind it may
/// have been stored, and re-sending them is acknowledged as a duplicate.
async fn pump_epochs(
    shared: Arc<Shared>,
    mut reports: Streaming<pb::EpochReport>,
    tx: mpsc::Sender<Result<pb::EpochAck, Status>>,
) {
    let mut stop = shared.stop.clone();
    let mut pending: FuturesOrdered<BoxFuture<'static, Result<pb::EpochAck>>> = FuturesOrdered::new();
    let mut open = true;
    while open || !pending.is_empty() {
        tokio::select! {
            () = stopped(&mut stop) => return,
            Some(reply) = pending.next(), if !pending.is_empty() => {
                let reply = reply.map_err(Status::from);
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
            next = reports.message(), if open && pending.len() < MAX_EPOCHS_IN_FLIGHT => match next {
                Ok(Some(report)) => pending.push_back(submit_epoch(&shared, report).await),
                Ok(None) => open = false,
                Err(status) => {
                    tracing::debug!(%status, "epoch stream broke");
                    return;
                }
            },
        }
    }
}

/// Resolves once the server stops (the watch guard is dropped at once: it is not `Send`).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn abbreviated(items: &[String]) -> String {
    if items.len() <= 10 {
        items.join(", ")
    } else {
        format!("{}, … ({} in all)", items[..10].join(", "), items.len())
    }
}

fn assignment(job: &jobs::JobRow, data: DataOptions, ttl: std::time::Duration) -> Result<JobAssignment> {
    let variant: LossVariant =
        job.variant.parse().map_err(|e| Error::Internal(format!("job {} has a bad variant: {e}", job.id)))?;
    Ok(JobAssignment {
        fence: Fence {
            job_id: job.id,
            attempt: job.attempt as u32,
            lease_token: job.lease_token.clone().unwrap_or_default(),
        },
        sweep: job.sweep.clone(),
        variant,
        seed: job.seed(),
        epochs: job.epochs as u32,
        batch_size: job.batch_size as u32,
        learning_rate: job.learning_rate,
        data,
        lease_ttl: ttl,
    })
}

/// Validates one streamed epoch and queues it for storage, in stream order; the returned future
/// resolves to its ack (`duplicate` when this attempt had already stored it) or its rejection.
async fn submit_epoch(
    shared: &Arc<Shared>,
    report: pb::EpochReport,
) -> BoxFuture<'static, Result<pb::EpochAck>> {
    let parsed = required_fence(report.fence).and_then(|fence| {
        let metrics = report.metrics.ok_or_else(|| InvalidInput::new("metrics", "is required"))?;
        Ok(EpochWrite { fence, metrics: EpochMetrics::try_from(metrics)? })
    });
    let write = match parsed {
        Ok(write) => write,
        Err(e) => return Box::pin(futures::future::ready(Err(e.into()))),
    };
    let (job_id, metrics) = (write.fence.job_id, write.metrics);
    let outcome = match shared.db.enqueue_epoch(write).await {
        Ok(outcome) => outcome,
        Err(e) => return Box::pin(futures::future::ready(Err(e))),
    };
    let events = shared.events.clone();
    Box::pin(async move {
        let stored = outcome.await?;
        if let Some(job) = &stored {
            events.publish(Event::EpochRecorded {
                sweep: job.sweep.clone(),
                recorded: pb::EpochRecorded {
                    job_id,
                    variant: job.variant.clone(),
                    seed: job.seed as u64,
                    metrics: Some(metrics.into()),
                },
            });
        }
        Ok(pb::EpochAck { job_id, epoch: metrics.epoch, duplicate: stored.is_none() })
    })
}
