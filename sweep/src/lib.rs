//! The whole experiment in one command: an embedded coordinator on a local SQLite file, local
//! worker slots (every GPU found, else the CPU), live progress, and the report at the end.
//!
//! - [`run`]: `sweep run` (the sweep named by the flags of `coordinator submit`, the smoke
//!   preset by default), resumable: the same command after Ctrl-C or a crash continues the sweep.
//! - [`plan`]: what a run says it will keep, train and leave out, and how it ends.

pub mod plan;
pub mod run;
