//! Wire ↔ domain conversion, in one place. Every check on client input that does not need the
//! database happens here; a failed check is an [`InvalidInput`] naming the field, which becomes
//! `Status::invalid_argument`.

use crate::domain::{JobState, LossVariant, MAX_NAME_LEN};
use crate::pb;
use crate::text::echo;

/// Client input that breaks a rule; `field` names the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct InvalidInput {
    pub field: &'static str,
    pub message: String,
}

impl InvalidInput {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        InvalidInput { field, message: message.into() }
    }
}

impl From<InvalidInput> for tonic::Status {
    fn from(e: InvalidInput) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

fn ensure(ok: bool, field: &'static str, message: impl FnOnce() -> String) -> Result<(), InvalidInput> {
    if ok { Ok(()) } else { Err(InvalidInput::new(field, message())) }
}

/// Checks a sweep name: 1..=128 characters of `[A-Za-z0-9._-]`.
pub fn validate_sweep_name(name: &str) -> Result<(), InvalidInput> {
    ensure(!name.is_empty(), "name", || "must not be empty".into())?;
    ensure(name.len() <= MAX_NAME_LEN, "name", || format!("longer than {MAX_NAME_LEN} bytes"))?;
    ensure(name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')), "name", || {
        format!("{} may only hold letters, digits, '.', '_' and '-'", echo(name))
    })
}

/// Parses a loss variant name.
pub fn parse_variant(name: &str) -> Result<LossVariant, InvalidInput> {
    name.parse().map_err(|e: crate::domain::UnknownVariant| InvalidInput::new("variant", e.to_string()))
}

/// Converts a wire state; UNSPECIFIED and unknown numbers are invalid.
pub fn state_from_wire(value: i32) -> Result<JobState, InvalidInput> {
    match pb::JobState::try_from(value) {
        Ok(pb::JobState::Queued) => Ok(JobState::Queued),
        Ok(pb::JobState::Running) => Ok(JobState::Running),
        Ok(pb::JobState::Succeeded) => Ok(JobState::Succeeded),
        Ok(pb::JobState::Failed) => Ok(JobState::Failed),
        Ok(pb::JobState::Cancelled) => Ok(JobState::Cancelled),
        _ => Err(InvalidInput::new("state", format!("{value} is not a job state"))),
    }
}

/// Converts a domain state to its wire number.
pub fn state_to_wire(state: JobState) -> pb::JobState {
    match state {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

mod command;
#[cfg(test)]
mod command_tests;
mod jobs;
mod spec;
#[cfg(test)]
mod tests;
mod workers;

pub use command::objective_from_wire;
pub use jobs::required_fence;
pub use spec::check_bn_group;
pub use workers::data_files_from_wire;
