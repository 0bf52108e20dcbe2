//! `PutCheckpoint` and `GetCheckpoint`: a job's checkpoint moved in chunks between the worker that
//! holds its lease and the coordinator's [`CheckpointFiles`]. Both need the job's current lease;
//! an upload is checked against its header (size, SHA-256) before anything is kept.

use std::pin::Pin;

use sweep_proto::InvalidInput;
use sweep_proto::convert::required_fence;
use sweep_proto::pb::checkpoint_chunk::Part;
use sweep_proto::pb::{self, CheckpointChunk, CheckpointHeader};
use tokio_stream::Stream;
use tonic::{Request, Status, Streaming};

use super::Shared;
use crate::checkpoints::{CHUNK_BYTES, CheckpointFiles, sha256_hex};
use crate::error::{Error, Result};

/// The chunks of a downloaded checkpoint.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<CheckpointChunk, Status>> + Send>>;

fn files(shared: &Shared) -> Result<&CheckpointFiles> {
    shared.checkpoints.as_ref().ok_or_else(|| {
        Error::Precondition(
            "this coordinator keeps no checkpoints (start it with --checkpoint-store DIR)".into(),
        )
    })
}

/// Receives a checkpoint: the header, then data until `size` bytes; stores it once its size and
/// SHA-256 match and the lease is still held.
pub async fn put(shared: &Shared, request: Request<Streaming<CheckpointChunk>>) -> Result<()> {
    let by = shared.writer(&request)?;
    let files = files(shared)?;
    let mut chunks = request.into_inner();
    let header = match chunks.message().await.map_err(Error::inbound)? {
        Some(CheckpointChunk { part: Some(Part::Header(header)) }) => header,
        _ => {
            return Err(InvalidInput::new("header", "the first message must be the checkpoint header").into());
        }
    };
    let CheckpointHeader { fence, epoch, size, sha256 } = header;
    let fence = required_fence(fence)?;
    if sha256.len() != 64 || !sha256.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(InvalidInput::new("sha256", "must be 64 lower-case hex digits").into());
    }
    if size > files.max_bytes() {
        return Err(Error::ResourceExhausted(format!(
            "a checkpoint of {size} bytes is over this coordinator's limit of {} bytes",
            files.max_bytes()
        )));
    }
    // Refuse a stale lease before the upload rather than after it.
    let job = shared.queue.holds_lease(&fence, &by).await?;
    if epoch == 0 || epoch > job.epochs {
        return Err(
            InvalidInput::new("epoch", format!("must be 1..={} for job {}", job.epochs, job.id)).into()
        );
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(64 << 20));
    while let Some(chunk) = chunks.message().await.map_err(Error::inbound)? {
        let Some(Part::Data(data)) = chunk.part else {
            return Err(InvalidInput::new("data", "only data may follow the header").into());
        };
        if (bytes.len() + data.len()) as u64 > size {
            return Err(InvalidInput::new(
                "data",
                format!("more than the {size} bytes the header announced"),
            )
            .into());
        }
        bytes.extend_from_slice(&data);
    }
    if bytes.len() as u64 != size {
        return Err(InvalidInput::new(
            "data",
            format!("{} bytes arrived, the header announced {size}", bytes.len()),
        )
        .into());
    }
    let actual = sha256_hex(&bytes);
    if actual != sha256 {
        return Err(Error::DataLoss(format!(
            "checkpoint of job {} epoch {epoch}: SHA-256 {actual} differs from the header's {sha256}; nothing kept",
            job.id
        )));
    }
    // The lease may have been lost during the upload.
    shared.queue.holds_lease(&fence, &by).await?;
    files.save(job.id, epoch, bytes).await?;
    tracing::debug!(job = job.id.0, epoch, size, "checkpoint stored");
    Ok(())
}

/// Sends the newest checkpoint no later than `max_epoch` of the job the fence leases.
pub async fn get(shared: &Shared, request: Request<pb::GetCheckpointRequest>) -> Result<ChunkStream> {
    let by = crate::auth::principal(&request)?;
    let files = files(shared)?;
    let req = request.into_inner();
    let fence = required_fence(req.fence)?;
    let job = shared.queue.holds_lease(&fence, &by).await?;
    let Some(stored) = files.latest(job.id, req.max_epoch).await? else {
        return Err(Error::NotFound(format!("a checkpoint of job {} up to epoch {}", job.id, req.max_epoch)));
    };
    let header = CheckpointHeader {
        fence: None,
        epoch: stored.epoch,
        size: stored.bytes.len() as u64,
        sha256: sha256_hex(&stored.bytes),
    };
    let mut messages = vec![Ok(CheckpointChunk { part: Some(Part::Header(header)) })];
    messages.extend(
        stored.bytes.chunks(CHUNK_BYTES).map(|c| Ok(CheckpointChunk { part: Some(Part::Data(c.to_vec())) })),
    );
    Ok(Box::pin(tokio_stream::iter(messages)))
}
