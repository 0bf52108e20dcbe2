//! Changes made by one coordinator, announced to the others on the same database with
//! PostgreSQL's `NOTIFY` on [`CHANNEL`]: inside the write's transaction, so an announcement goes
//! out exactly when the change commits. An announcement names the job (and the epoch, for a
//! stored one) and the coordinator that made it; the others read the rows back and publish them
//! to their own watch streams ([`crate::queue`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use sqlx::postgres::{PgListener, PgPool};
use sweep_proto::domain::JobId;

use crate::error::Result;

/// The notification channel.
pub const CHANNEL: &str = "sweep_changes";

/// One change, as announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The coordinator that made it (a random id per process).
    #[serde(rename = "o")]
    pub origin: String,
    #[serde(rename = "j")]
    pub job: i64,
    /// The epoch stored, for an epoch; `None` when the job's row changed.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
}

impl Change {
    pub fn job(&self) -> JobId {
        JobId(self.job)
    }
}

/// Announces that the rows of `jobs` changed (one statement for all of them).
pub async fn jobs_changed(conn: &mut PgConnection, origin: &Arc<str>, jobs: &[JobId]) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let payloads = jobs
        .iter()
        .map(|j| serde_json::to_string(&Change { origin: origin.to_string(), job: j.0, epoch: None }))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
        .bind(CHANNEL)
        .bind(payloads)
        .execute(conn)
        .await?;
    Ok(())
}

/// Announces that `epoch` of `job` was stored (and the job's progress with it).
pub async fn epoch_stored(conn: &mut PgConnection, origin: &Arc<str>, job: JobId, epoch: u32) -> Result<()> {
    let payload =
        serde_json::to_string(&Change { origin: origin.to_string(), job: job.0, epoch: Some(epoch) })?;
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(conn).await?;
    Ok(())
}

/// Listens on [`CHANNEL`] and hands every change another coordinator than `origin` made to
/// `each`, until the pool closes. A lost connection is re-established (changes announced
/// meanwhile are missed: watchers see the next ones).
pub async fn follow<F, Fut>(pool: PgPool, origin: Arc<str>, mut each: F) -> Result<()>
where
    F: FnMut(Change) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    loop {
        let notification = match listener.recv().await {
            Ok(n) => n,
            Err(sqlx::Error::PoolClosed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match serde_json::from_str::<Change>(notification.payload()) {
            Ok(change) if *change.origin != *origin => each(change).await,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "unreadable change notification"),
        }
    }
}
