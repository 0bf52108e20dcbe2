//! How a leased job's end reaches the coordinator: completed or failed once its epochs are
//! uploaded, handed back at a worker's shutdown, or dropped when its lease is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sweep_proto::Fence;
use sweep_proto::pb::{self, CompleteJobRequest, FailJobRequest, ReleaseJobRequest};
use tracing::{error, info, warn};

use super::backoff::Backoff;
use super::slot::{JobStores, SlotContext, sleep_or_shutdown};
use super::uploader::UploadError;
use crate::training::JobOutcome;

/// What follows a leased job outside training: its fence, checkpoint key, stop flag and the
/// task that uploads its epochs.
pub(super) struct Tracked {
    pub fence: Fence,
    pub key: String,
    pub stop: Arc<AtomicBool>,
    pub uploader: tokio::task::JoinHandle<Result<u32, UploadError>>,
}

/// Reports how a job ended once its epochs are uploaded: complete, fail, hand back at
/// shutdown, or drop a job whose lease is gone.
pub(super) async fn conclude(ctx: &SlotContext, tracked: Tracked, outcome: Result<JobOutcome, String>) {
    let Tracked { fence, key, uploader, .. } = tracked;
    let upload = uploader.await.unwrap_or_else(|e| Err(UploadError::Rejected(e.to_string())));
    ctx.leases.remove(fence.job_id);

    match (outcome, upload) {
        (_, Err(UploadError::LeaseLost(why))) => {
            warn!(job = fence.job_id, %why, "lease lost or job cancelled; dropped it")
        }
        (_, Err(UploadError::Shutdown)) => info!(job = fence.job_id, "left to lease expiry at shutdown"),
        (Ok(JobOutcome::Completed { best_val_acc, best_epoch, epochs }), Ok(_)) => {
            // A command job's best is the coordinator's to find (by the sweep's objective).
            if best_epoch > 0 {
                info!(job = fence.job_id, best_val_acc, best_epoch, "job finished");
            } else {
                info!(job = fence.job_id, epochs, "job finished");
            }
            if finish(ctx, &fence, None).await
                && let Some((JobStores::Shared(store), _)) = &ctx.checkpoints
            {
                store.forget(&key);
            }
        }
        (Ok(JobOutcome::Stopped { epochs_done }), Ok(_)) if ctx.shutdown_flag.load(Ordering::Relaxed) => {
            info!(job = fence.job_id, epochs_done, "worker stopping: handing the job back");
            release(ctx, &fence).await;
        }
        (Ok(JobOutcome::Stopped { epochs_done }), Ok(_)) => {
            info!(job = fence.job_id, epochs_done, "job stopped (cancelled or lost)")
        }
        (Err(error), Ok(_)) => {
            error!(job = fence.job_id, %error, "training failed");
            finish(ctx, &fence, Some(error)).await;
        }
        (Ok(JobOutcome::Completed { .. }), Err(e)) => {
            finish(ctx, &fence, Some(format!("epoch upload failed: {e}"))).await;
        }
        (Ok(JobOutcome::Stopped { .. }), Err(e)) | (Err(_), Err(e)) => {
            warn!(job = fence.job_id, error = %e, "epoch upload failed")
        }
    }
}

/// Hands a job back at shutdown (requeued at once without using an attempt), trying for a few
/// seconds; if it cannot, the lease expires and the coordinator requeues the job anyway.
pub(super) async fn release(ctx: &SlotContext, fence: &Fence) {
    let mut backoff = Backoff::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let request = ReleaseJobRequest { fence: Some(pb::Fence::from(fence.clone())) };
        match ctx.client.clone().release_job(request).await {
            Ok(_) => return info!(job = fence.job_id, "job handed back"),
            Err(s) if s.code() != tonic::Code::Unavailable => {
                return warn!(job = fence.job_id, error = %s, "coordinator refused to take the job back");
            }
            Err(s) if tokio::time::Instant::now() >= deadline => {
                return warn!(job = fence.job_id, error = %s, "could not hand the job back; its lease will expire");
            }
            Err(_) => tokio::time::sleep(backoff.next_delay()).await,
        }
    }
}

/// Completes (`error == None`) or fails the job, retrying while the coordinator is away.
/// Returns whether the coordinator took it.
async fn finish(ctx: &SlotContext, fence: &Fence, error: Option<String>) -> bool {
    let mut backoff = Backoff::default();
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let mut client = ctx.client.clone();
        let wire_fence = Some(pb::Fence::from(fence.clone()));
        let result = match &error {
            None => client.complete_job(CompleteJobRequest { fence: wire_fence }).await.map(|_| ()),
            Some(text) => {
                let request = FailJobRequest { fence: wire_fence, error: text.clone() };
                client.fail_job(request).await.map(|_| ())
            }
        };
        match result {
            Ok(()) => return true,
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::FailedPrecondition
                        | tonic::Code::InvalidArgument
                        | tonic::Code::PermissionDenied
                ) =>
            {
                warn!(job = fence.job_id, error = %s, "coordinator refused the job's end");
                return false;
            }
            Err(s) => {
                let wait = backoff.next_delay();
                warn!(job = fence.job_id, error = %s, ?wait, "could not report the job's end; retrying");
                if *shutdown.borrow() {
                    return false;
                }
                sleep_or_shutdown(wait, &mut shutdown).await;
            }
        }
    }
}
