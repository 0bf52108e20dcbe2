//! In-process fan-out of job changes and stored epochs to `WatchSweep` streams, through a tokio
//! broadcast channel. Events are published only after the write that caused them committed.

use std::sync::Arc;

use sweep_proto::pb;
use tokio::sync::broadcast;

use crate::db::jobs::JobRow;

/// Something that happened in a sweep.
#[derive(Debug, Clone)]
pub enum Event {
    JobChanged(pb::Job),
    EpochRecorded { sweep: String, recorded: pb::EpochRecorded },
}

impl Event {
    /// The sweep the event belongs to.
    pub fn sweep(&self) -> &str {
        match self {
            Event::JobChanged(job) => &job.sweep,
            Event::EpochRecorded { sweep, .. } => sweep,
        }
    }

    pub fn to_pb(&self) -> pb::SweepEvent {
        let event = match self {
            Event::JobChanged(job) => pb::sweep_event::Event::JobChanged(job.clone()),
            Event::EpochRecorded { recorded, .. } => pb::sweep_event::Event::EpochRecorded(recorded.clone()),
        };
        pb::SweepEvent { event: Some(event) }
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

    /// Publishes a `JobChanged` for each row.
    pub fn jobs_changed<'a>(&self, rows: impl IntoIterator<Item = &'a JobRow>) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        for row in rows {
            self.publish(Event::JobChanged(row.to_pb()));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
