//! The client edge shared by the CLI subcommands and the one-shot `sweep run`: what a client
//! talks through ([`IntoSweepClient`]), sweep specs (the spec-file format, flags and presets),
//! following a sweep ([`watch`]) and reading one into report rows ([`report_input`]).

pub mod connection;
pub mod metrics_export;
pub mod presets;
pub mod report_groups;
pub mod report_input;
pub mod spec;
pub mod spec_command;
pub mod watch;

pub use connection::{CLIENT_MAX_MESSAGE_BYTES, IntoSweepClient};
pub use presets::Preset;
pub use spec::{SpecArgs, SpecError, SpecFile, parse_seeds};
