//! In-process fan-out of job changes and stored epochs to `WatchSweep` streams, through a tokio
//! broadcast channel. Events carry domain values (the watch stream encodes them) and are
//! published only after the write that caused them committed.

use std::sync::Arc;

use sweep_proto::domain::{EpochRecord, Job};
use tokio::sync::broadcast;

/// Something that happened in a sweep.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    JobChanged(Job),
    EpochRecorded(EpochRecord),
}

impl Event {
    /// The sweep the event belongs to.
    pub fn sweep(&self) -> &str {
        match self {
            Event::JobChanged(job) => &job.sweep,
            Event::EpochRecorded(record) => &record.sweep,
        }
    }
}

/// Publisher side of the event channel; clone freely.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Events {
    pub fn new(capacity: usize) -> Events {
        Events { tx: broadcast::channel(capacity.max(1)).0 }
    }

    /// Sends an event to every current subscriber (none is fine).
    pub fn publish(&self, event: Event) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(event));
        }
    }

    /// Publishes a `JobChanged` for each job (cloning nothing while nobody watches).
    pub fn jobs_changed<'a>(&self, jobs: impl IntoIterator<Item = &'a Job>) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        for job in jobs {
            self.publish(Event::JobChanged(job.clone()));
        }
    }

    /// Whether anyone subscribes now.
    pub fn watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
