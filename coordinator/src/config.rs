//! Run-time settings of the coordinator service (the CLI fills them from flags and env vars).

use std::time::Duration;

use crate::auth::RateLimit;
use crate::checkpoints::CheckpointSettings;

/// Default gRPC message limit (both directions).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// How the service behaves; the database is opened separately with [`crate::db::Database::open`].
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a lease lives without a heartbeat.
    pub lease_ttl: Duration,
    /// How often workers should heartbeat (sent to them at registration).
    pub heartbeat_interval: Duration,
    /// How often the reaper looks for expired leases.
    pub reaper_interval: Duration,
    /// Largest gRPC message accepted or sent. A bigger request message, unary or streamed, gets
    /// OUT_OF_RANGE (tonic's code for a message over its decoding limit).
    pub max_message_bytes: usize,
    /// Wait a worker is told to take before asking again when nothing is queued.
    pub idle_retry_after: Duration,
    /// Capacity of the event broadcast feeding `WatchSweep`; slower watchers get a fresh snapshot.
    pub event_capacity: usize,
    /// Sizes and rates one client may ask for.
    pub limits: Limits,
    /// Where checkpoints uploaded by workers are kept; `None`: uploads are refused.
    pub checkpoints: Option<CheckpointSettings>,
}

/// What one request or credential may ask of the coordinator, so no client can hold the single
/// database writer for long or crowd out the others.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Jobs (variants × seeds) one SubmitSweep may describe (INVALID_ARGUMENT beyond).
    pub max_jobs_per_submission: u32,
    /// Jobs a sweep may hold after a submission (RESOURCE_EXHAUSTED beyond).
    pub max_jobs_per_sweep: u32,
    /// Leases one Heartbeat may carry (INVALID_ARGUMENT beyond).
    pub max_fences_per_heartbeat: u32,
    /// Jobs inserted or cancelled per write transaction: a big submission or cancel becomes
    /// several short transactions, so heartbeats and leases queued behind it wait little.
    pub write_chunk: usize,
    /// Writes of a user or admin credential.
    pub user_writes: RateLimit,
    /// Writes (leases, heartbeats, epochs, outcomes) of a worker credential.
    pub worker_writes: RateLimit,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_jobs_per_submission: 10_000,
            max_jobs_per_sweep: 20_000,
            max_fences_per_heartbeat: 1_024,
            write_chunk: 128,
            user_writes: RateLimit::new(5.0, 20.0),
            worker_writes: RateLimit::new(500.0, 2_000.0),
        }
    }
}

impl Config {
    /// Settings derived from a lease TTL: heartbeats every ttl/3, reaper every ttl/4.
    pub fn with_lease_ttl(lease_ttl: Duration) -> Self {
        Config {
            lease_ttl,
            heartbeat_interval: lease_ttl / 3,
            reaper_interval: (lease_ttl / 4).max(Duration::from_millis(10)),
            ..Config::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let lease_ttl = Duration::from_secs(30);
        Config {
            lease_ttl,
            heartbeat_interval: lease_ttl / 3,
            reaper_interval: lease_ttl / 4,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            idle_retry_after: Duration::from_secs(2),
            event_capacity: 4096,
            limits: Limits::default(),
            checkpoints: None,
        }
    }
}
