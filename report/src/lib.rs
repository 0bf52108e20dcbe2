//! Turns one sweep's jobs and epochs into the experiment's report directory: box plots of best
//! validation accuracy, learning curves, per-variant statistics with tests against the baseline,
//! CSV files and one self-contained `index.html`.
//!
//! The crate knows nothing of gRPC or databases: callers fill a [`ReportInput`].

pub mod input;

pub use input::{EpochRow, JobRow, Provenance, ReportInput};
