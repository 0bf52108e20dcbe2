//! The job queue as the services see it: a typed façade over the database ([`Queue`]) whose
//! methods take and return domain values (`sweep_proto` types such as `JobId` and `Job`) and
//! [`crate::Error`].
//! Each method is one durable step (submit, lease, heartbeat, record an epoch, complete, fail,
//! cancel, reap) or one read (summary, listings); the gRPC handlers only decode, call it and
//! encode. Every change it commits is published on its [`Events`] afterwards. Each write takes
//! the [`Principal`] making it and checks ownership (a sweep's owner, the credential a worker id is
//! bound to) inside the same write, so a refused call changes nothing.
//!
//! - `sweeps`: what users do (submit, cancel, read summaries, jobs and workers).
//! - `work`: what workers do (register, lease, heartbeat, record epochs, finish) and the lease
//!   expiry the reaper drives.

mod relay;
mod sweeps;
mod work;

pub use crate::db::workers::Registration;

use std::time::Duration;

use crate::auth::Principal;
use crate::config::{Config, Limits};
use crate::db::Database;
use crate::events::Events;
use crate::metrics::QueueCounters;

/// The coordinator's job queue; cheap to clone (a database handle and an event channel).
#[derive(Debug, Clone)]
pub struct Queue {
    db: Database,
    events: Events,
    lease_ttl: Duration,
    limits: Limits,
    counters: QueueCounters,
}

/// The outcome of a submission: how many of the spec's jobs are new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub created: u32,
    /// Jobs of the spec the sweep already had (a resubmission adds only the missing ones).
    pub existing: u32,
}

/// What became of one streamed epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Stored,
    /// This attempt had already stored the epoch; nothing changed.
    Duplicate,
}

impl Queue {
    /// A queue over `db` with the lease TTL, event buffer and limits of `config`.
    pub fn new(db: Database, config: &Config) -> Queue {
        let events = Events::new(config.event_capacity);
        // Several coordinators may share a PostgreSQL database: their changes reach our watchers.
        relay::spawn(&db, &events);
        Queue {
            db,
            events,
            lease_ttl: config.lease_ttl,
            limits: config.limits,
            counters: QueueCounters::default(),
        }
    }

    /// The channel the queue publishes job changes and stored epochs on.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// What the queue counts (leases granted and expired, epochs stored), for `/metrics`.
    pub fn counters(&self) -> &QueueCounters {
        &self.counters
    }

    /// The database the queue keeps.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Each worker's training throughput: the images/s of the last stored epoch of each of its
    /// running jobs, summed.
    pub async fn running_throughput(&self) -> crate::Result<Vec<(String, f64)>> {
        self.db.running_throughput().await
    }

    /// How long a lease lives from its grant or last heartbeat.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// Checks that `by` may act as worker `id` (see [`Principal::check_worker`]); an unknown id
    /// passes, so the write itself reports it as not found.
    async fn check_worker(&self, id: &str, by: &Principal) -> crate::Result<()> {
        if by.is_local() {
            return Ok(());
        }
        match self.db.worker_owner(id).await? {
            Some(owner) => by.check_worker(id, &owner),
            None => Ok(()),
        }
    }

    fn ttl_ms(&self) -> i64 {
        self.lease_ttl.as_millis().min(i64::MAX as u128) as i64
    }
}
