//! The sweep system's wire contract and the validated domain types both sides share.
//!
//! - [`pb`]: prost/tonic code generated from `proto/sweep/v1/sweep.proto`.
//! - [`domain`]: loss variants, sweep specs, job assignments and epoch metrics as checked Rust
//!   types.
//! - [`convert`]: the one place where wire messages become domain values; anything invalid is
//!   a [`convert::InvalidInput`], which turns into `Status::invalid_argument`.
//! - [`connect`]: the client side of a connection (flags, TLS, bearer token) every client uses.
//! - [`text`]: network strings made safe to echo in errors or print on a terminal.

pub mod connect;
pub mod convert;
pub mod domain;
pub mod text;

/// Generated protobuf messages and gRPC services (package `sweep.v1`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("sweep.v1");

    /// Encoded `FileDescriptorSet` of the package, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sweep_descriptor.bin"));
}

pub use convert::InvalidInput;
pub use domain::{DataOptions, EpochMetrics, Fence, JobAssignment, JobState, LossVariant, SweepSpec};
