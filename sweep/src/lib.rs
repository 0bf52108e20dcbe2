//! The whole experiment in one command: an embedded coordinator on a local SQLite file, local
//! worker slots (every GPU found, else the CPU), live progress, and the report at the end.
//!
//! - [`presets`]: the named sweeps (`paper`, `paper15`, `quick`, `smoke`) and spec files.
//! - [`run`]: `sweep run`, resumable: the same command after Ctrl-C or a crash continues the sweep.

pub mod presets;
pub mod run;
