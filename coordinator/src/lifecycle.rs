//! The job state machine, as pure functions (no I/O). The database layer asks [`apply`] for the
//! next state and then writes it with an UPDATE guarded on the state and attempt it read, so the
//! stored jobs only ever move along the transitions defined here:
//!
//! ```text
//! queued ──lease──▶ running ──complete──▶ succeeded
//!   ▲                  │  │
//!   ├─expire/fail──────┤  └─expire/fail (attempt = max_attempts)──▶ failed
//!   └─release──────────┘    (the worker stops and hands the job back: not counted)
//! queued | running ──cancel──▶ cancelled
//! failed | cancelled ──retry (a user asks)──▶ queued
//! ```
//!
//! `attempt` is the 1-based attempt a job is on: leasing keeps it, a retry increments it.

use sweep_proto::JobState;

/// What happened to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker claimed the job.
    Lease,
    /// The worker stored every epoch and finished.
    Complete,
    /// The worker reported a failure.
    Fail { error: String },
    /// The lease ran out without a heartbeat.
    LeaseExpired,
    /// The worker stopped (preemption, a graceful shutdown) and handed the job back.
    Release,
    /// A user cancelled the job (or its sweep).
    Cancel,
    /// A user queues a failed or cancelled job again with a fresh budget of `budget` attempts
    /// (the sweep's `max_attempts`).
    Retry { budget: u32 },
}

/// The part of a job the state machine looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: JobState,
    pub attempt: u32,
    pub max_attempts: u32,
    pub last_error: Option<String>,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {state} job cannot {event}")]
pub struct IllegalTransition {
    pub state: JobState,
    pub event: &'static str,
}

impl Event {
    fn verb(&self) -> &'static str {
        match self {
            Event::Lease => "be leased",
            Event::Complete => "complete",
            Event::Fail { .. } => "fail",
            Event::LeaseExpired => "have its lease expire",
            Event::Release => "be released",
            Event::Cancel => "be cancelled",
            Event::Retry { .. } => "be retried",
        }
    }
}

/// The status a job moves to when `event` happens, or why it cannot.
pub fn apply(status: &Status, event: Event) -> Result<Status, IllegalTransition> {
    use JobState::*;
    let illegal = |event: &Event| IllegalTransition { state: status.state, event: event.verb() };
    let next = |state| Status { state, ..status.clone() };
    match (status.state, event) {
        (Queued, Event::Lease) => Ok(next(Running)),
        (Running, Event::Complete) => Ok(Status { last_error: None, ..next(Succeeded) }),
        (Running, Event::Fail { error }) => Ok(retry_or_fail(status, error)),
        (Running, Event::LeaseExpired) => {
            Ok(retry_or_fail(status, format!("lease expired during attempt {}", status.attempt)))
        }
        // A new attempt (fences must change) that does not use up the job's budget.
        (Running, Event::Release) => Ok(Status {
            state: Queued,
            attempt: status.attempt + 1,
            max_attempts: status.max_attempts + 1,
            last_error: status.last_error.clone(),
        }),
        (Queued | Running, Event::Cancel) => Ok(next(Cancelled)),
        // Like a requeue, the retry is a new attempt (fences from before stay stale and the
        // stored epochs keep the attempt that wrote them); the budget starts afresh after it.
        (Failed | Cancelled, Event::Retry { budget }) => Ok(Status {
            state: Queued,
            attempt: status.attempt + 1,
            max_attempts: status.attempt + budget.max(1),
            last_error: status.last_error.clone(),
        }),
        (_, event) => Err(illegal(&event)),
    }
}

/// After a failed attempt: back to the queue with attempt + 1 while attempts remain, else failed.
fn retry_or_fail(status: &Status, error: String) -> Status {
    if status.attempt < status.max_attempts {
        Status {
            state: JobState::Queued,
            attempt: status.attempt + 1,
            max_attempts: status.max_attempts,
            last_error: Some(error),
        }
    } else {
        Status {
            state: JobState::Failed,
            attempt: status.attempt,
            max_attempts: status.max_attempts,
            last_error: Some(error),
        }
    }
}

/// True when workers may write (epochs, completion) for a job in `state`.
pub fn accepts_worker_writes(state: JobState) -> bool {
    state == JobState::Running
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    fn status(state: JobState, attempt: u32, max_attempts: u32) -> Status {
        Status { state, attempt, max_attempts, last_error: None }
    }

    #[test]
    fn release_requeues_without_using_an_attempt() {
        let s = apply(&status(Running, 2, 3), Event::Release).unwrap();
        assert_eq!((s.state, s.attempt, s.max_attempts), (Queued, 3, 4), "one attempt left, as before");
        assert!(apply(&status(Queued, 1, 3), Event::Release).is_err());
        assert!(apply(&status(Succeeded, 1, 3), Event::Release).is_err());
    }

    #[test]
    fn retry_queues_an_ended_job_as_a_new_attempt_with_a_fresh_budget() {
        let failed = Status { last_error: Some("oom".into()), ..status(Failed, 3, 3) };
        let s = apply(&failed, Event::Retry { budget: 3 }).unwrap();
        assert_eq!((s.state, s.attempt, s.max_attempts), (Queued, 4, 6), "three attempts left");
        assert_eq!(s.last_error.as_deref(), Some("oom"), "the reason stays until the next outcome");
        let s = apply(&status(Cancelled, 1, 3), Event::Retry { budget: 2 }).unwrap();
        assert_eq!((s.state, s.attempt, s.max_attempts), (Queued, 2, 3));
        // Its attempts then run out as any job's do.
        let s = apply(&apply(&s, Event::Lease).unwrap(), Event::Fail { error: "x".into() }).unwrap();
        assert_eq!((s.state, s.attempt), (Queued, 3));
        let s = apply(&apply(&s, Event::Lease).unwrap(), Event::Fail { error: "x".into() }).unwrap();
        assert_eq!((s.state, s.attempt), (Failed, 3));
        for state in [Queued, Running, Succeeded] {
            let err = apply(&status(state, 1, 3), Event::Retry { budget: 3 }).unwrap_err();
            assert_eq!(err.to_string(), format!("a {state} job cannot be retried"));
        }
    }

    #[test]
    fn happy_path_queued_running_succeeded() {
        let s = apply(&status(Queued, 1, 3), Event::Lease).unwrap();
        assert_eq!(s.state, Running);
        assert_eq!(s.attempt, 1, "leasing keeps the attempt");
        let s = apply(&s, Event::Complete).unwrap();
        assert_eq!(s.state, Succeeded);
    }

    #[test]
    fn failure_requeues_with_next_attempt_until_max() {
        let s = apply(&status(Running, 1, 2), Event::Fail { error: "oom".into() }).unwrap();
        assert_eq!((s.state, s.attempt), (Queued, 2));
        assert_eq!(s.last_error.as_deref(), Some("oom"));
        let s = apply(&apply(&s, Event::Lease).unwrap(), Event::Fail { error: "oom again".into() }).unwrap();
        assert_eq!((s.state, s.attempt), (Failed, 2));
        assert_eq!(s.last_error.as_deref(), Some("oom again"), "the last error is kept");
    }

    #[test]
    fn lease_expiry_behaves_like_a_failure() {
        let s = apply(&status(Running, 3, 3), Event::LeaseExpired).unwrap();
        assert_eq!((s.state, s.attempt), (Failed, 3));
        assert!(s.last_error.unwrap().contains("lease expired"));
        let s = apply(&status(Running, 1, 3), Event::LeaseExpired).unwrap();
        assert_eq!((s.state, s.attempt), (Queued, 2));
    }

    #[test]
    fn cancel_only_from_queued_or_running() {
        assert_eq!(apply(&status(Queued, 1, 3), Event::Cancel).unwrap().state, Cancelled);
        assert_eq!(apply(&status(Running, 2, 3), Event::Cancel).unwrap().state, Cancelled);
        for terminal in [Succeeded, Failed, Cancelled] {
            let err = apply(&status(terminal, 1, 3), Event::Cancel).unwrap_err();
            assert_eq!(err.state, terminal);
        }
    }

    #[test]
    fn illegal_transitions_are_rejected() {
        assert!(apply(&status(Queued, 1, 3), Event::Complete).is_err());
        assert!(apply(&status(Queued, 1, 3), Event::LeaseExpired).is_err());
        assert!(apply(&status(Queued, 1, 3), Event::Fail { error: "x".into() }).is_err());
        assert!(apply(&status(Running, 1, 3), Event::Lease).is_err());
        for terminal in [Succeeded, Failed, Cancelled] {
            for event in [Event::Lease, Event::Complete, Event::LeaseExpired] {
                assert!(apply(&status(terminal, 1, 3), event).is_err());
            }
        }
        let msg = apply(&status(Succeeded, 1, 3), Event::Lease).unwrap_err().to_string();
        assert_eq!(msg, "a succeeded job cannot be leased");
    }

    #[test]
    fn only_running_jobs_accept_worker_writes() {
        let accepting: Vec<_> = JobState::ALL.into_iter().filter(|s| accepts_worker_writes(*s)).collect();
        assert_eq!(accepting, vec![Running]);
    }
}
