//! The bulk statements of [`super`] against the lifecycle's rules.

use super::*;

#[test]
fn cancel_some_matches_the_state_machine() {
    // The bulk UPDATE cancels exactly the states a Cancel may leave and keeps the attempt and
    // last error, as `transition` does.
    let sql = include_str!("sql/jobs_cancel_some.sql");
    assert!(sql.contains("state IN ('queued', 'running')"), "{sql}");
    for state in JobState::ALL {
        let status = lifecycle::Status { state, attempt: 2, max_attempts: 3, last_error: Some("e".into()) };
        match lifecycle::apply(&status, Event::Cancel) {
            Ok(next) => {
                assert!(matches!(state, JobState::Queued | JobState::Running), "{state}");
                assert_eq!(next, lifecycle::Status { state: JobState::Cancelled, ..status });
            }
            Err(_) => assert!(!matches!(state, JobState::Queued | JobState::Running), "{state}"),
        }
    }
}
