//! The client edge shared by the CLI subcommands and the one-shot `sweep run`: sweep specs
//! (the spec-file format, flags and presets).

pub mod presets;
pub mod spec;

pub use presets::Preset;
pub use spec::{SpecArgs, SpecError, SpecFile, parse_seeds};
