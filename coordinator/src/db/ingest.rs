//! Group-commit handling of the hot write paths. The writer hands every run of queued epoch
//! reports to [`ingest`], every run of queued heartbeats to [`heartbeats`] and every run of lease
//! requests to [`leases`]; each run is done with a few multi-row statements (fence checks
//! included) instead of several per request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use sqlx::SqliteConnection;
use sweep_proto::InvalidInput;
use sweep_proto::domain::{Fence, JobKind, JobState, LeaseVerdict, SweepSpec};

use super::epochs::{self, EpochWrite};
use super::job_batches;
pub use super::job_batches::{JobKey, LeaseWrite};
use super::jobs::{self, StoredJob};
use super::{sweeps, workers};
use crate::error::{Error, Result};

/// What happened to one epoch write: `Some(job)` when stored, `None` when it was a duplicate of
/// this attempt, or the reason it was rejected (stale fence, unknown job, epoch out of range).
pub type Ingested = Result<Option<JobKey>>;

/// Stores a run of epoch writes (in order) and returns one outcome per write. An `Err` of the
/// outer result is a database failure that affects the whole run.
pub async fn ingest(
    conn: &mut SqliteConnection,
    writes: &[EpochWrite],
    now_ms: i64,
) -> Result<Vec<Ingested>> {
    let stored = epochs::insert_batch(conn, writes, now_ms).await?;
    let progressed: BTreeSet<i64> =
        writes.iter().zip(&stored).filter_map(|(w, s)| s.then_some(w.fence.job_id)).collect();
    let progressed: Vec<i64> = progressed.into_iter().collect();
    let keys: HashMap<i64, JobKey> =
        job_batches::record_progress(conn, &progressed).await?.into_iter().map(|k| (k.id.0, k)).collect();
    let mut outcomes = Vec::with_capacity(writes.len());
    for (w, stored) in writes.iter().zip(stored) {
        outcomes.push(if stored {
            Ok(keys.get(&w.fence.job_id).cloned())
        } else {
            rejected_or_duplicate(conn, w, now_ms).await
        });
    }
    Ok(outcomes)
}

/// Why a write was not stored: an error for a bad fence or epoch, `None` for a duplicate.
async fn rejected_or_duplicate(conn: &mut SqliteConnection, w: &EpochWrite, now_ms: i64) -> Ingested {
    let job = jobs::fenced(&mut *conn, &w.fence, now_ms).await?;
    if w.metrics.epoch > job.job.epochs {
        return Err(InvalidInput::new(
            "metrics.epoch",
            format!("epoch {} is beyond the job's {} epochs", w.metrics.epoch, job.job.epochs),
        )
        .into());
    }
    Ok(None)
}

/// One heartbeat: the worker, its free slots and the leases it holds.
#[derive(Debug, Clone)]
pub struct HeartbeatWrite {
    pub worker_id: String,
    pub idle_slots: u32,
    pub fences: Vec<Fence>,
    /// How long a renewed lease lives from now.
    pub lease_ttl_ms: i64,
}

/// The outcome of one heartbeat: a verdict per fence, in order, or NOT_FOUND for a worker that
/// never registered (nothing renewed then).
pub type Beat = Result<Vec<LeaseVerdict>>;

/// Records a run of heartbeats: marks the workers seen and renews every lease that is still the
/// job's running, unexpired one.
pub async fn heartbeats(
    conn: &mut SqliteConnection,
    beats: &[HeartbeatWrite],
    now_ms: i64,
) -> Result<Vec<Beat>> {
    let seen: Vec<(&str, u32)> = beats.iter().map(|b| (b.worker_id.as_str(), b.idle_slots)).collect();
    let known = workers::touch_many(conn, &seen, now_ms).await?;
    let leases: Vec<(&Fence, i64)> = beats
        .iter()
        .filter(|b| known.contains(&b.worker_id))
        .flat_map(|b| b.fences.iter().map(move |f| (f, now_ms + b.lease_ttl_ms)))
        .collect();
    let renewed = job_batches::renew_many(conn, &leases, now_ms).await?;
    let mut outcomes = Vec::with_capacity(beats.len());
    for beat in beats {
        if !known.contains(&beat.worker_id) {
            outcomes.push(Err(Error::NotFound(format!("worker {:?} (register it first)", beat.worker_id))));
            continue;
        }
        let mut verdicts = Vec::with_capacity(beat.fences.len());
        for f in &beat.fences {
            let key = (f.job_id, i64::from(f.attempt), f.lease_token.clone());
            verdicts.push(if renewed.contains(&key) {
                LeaseVerdict::Renewed
            } else {
                not_renewed(conn, f).await?
            });
        }
        outcomes.push(Ok(verdicts));
    }
    Ok(outcomes)
}

/// Why a lease was not renewed: the job was cancelled under it, or the lease is gone.
async fn not_renewed(conn: &mut SqliteConnection, fence: &Fence) -> Result<LeaseVerdict> {
    let cancelled = jobs::get(conn, fence.job())
        .await?
        .is_some_and(|stored| stored.holds(fence) && stored.job.state == JobState::Cancelled);
    Ok(if cancelled { LeaseVerdict::Cancelled } else { LeaseVerdict::Lost })
}

/// The outcome of one lease request: the claimed job and its sweep's spec, `None` when nothing
/// the worker runs is queued, or NOT_FOUND for a worker that never registered.
pub type Leased = Result<Option<(StoredJob, Arc<SweepSpec>)>>;

/// Claims jobs for a run of lease requests: marks the workers seen, then hands the oldest queued
/// jobs of the kinds each request runs out, in request order, with one guarded multi-row UPDATE
/// per set of kinds (see [`job_batches::claim_many`]). The claims run in a savepoint, so an unreadable sweep spec undoes
/// them and fails just this run.
pub async fn leases(conn: &mut SqliteConnection, reqs: &[LeaseWrite], now_ms: i64) -> Result<Vec<Leased>> {
    let ids: Vec<&str> = reqs.iter().map(|r| r.worker_id.as_str()).collect();
    let known = workers::touch_ids(conn, &ids, now_ms).await?;
    let wanted: Vec<&LeaseWrite> = reqs.iter().filter(|r| known.contains(&r.worker_id)).collect();
    let mut claimed = HashMap::new();
    let mut specs: HashMap<String, Arc<SweepSpec>> = HashMap::new();
    let mut by_kinds: BTreeMap<&[JobKind], Vec<&LeaseWrite>> = BTreeMap::new();
    for r in &wanted {
        by_kinds.entry(r.kinds.as_slice()).or_default().push(r);
    }
    if !wanted.is_empty() {
        sqlx::query("SAVEPOINT leases").execute(&mut *conn).await?;
        let specs = async {
            for (kinds, group) in &by_kinds {
                for stored in job_batches::claim_many(conn, group, kinds, now_ms).await? {
                    let sweep = &stored.job.sweep;
                    let spec = match specs.get(sweep) {
                        Some(spec) => spec.clone(),
                        None => {
                            let spec = Arc::new(sweeps::require(&mut *conn, sweep).await?.spec()?);
                            specs.entry(sweep.clone()).or_insert(spec).clone()
                        }
                    };
                    claimed.insert(stored.lease_token.clone().unwrap_or_default(), (stored, spec));
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = specs {
            sqlx::query("ROLLBACK TO leases").execute(&mut *conn).await?;
            sqlx::query("RELEASE leases").execute(&mut *conn).await?;
            return Ok(reqs.iter().map(|_| Err(Error::Internal(format!("leasing failed: {e}")))).collect());
        }
        sqlx::query("RELEASE leases").execute(&mut *conn).await?;
    }
    Ok(reqs
        .iter()
        .map(|r| {
            if !known.contains(&r.worker_id) {
                return Err(Error::NotFound(format!("worker {:?} (register it first)", r.worker_id)));
            }
            Ok(claimed.remove(&r.lease_token))
        })
        .collect())
}
