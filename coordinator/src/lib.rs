//! The sweep coordinator: a gRPC service keeping a durable queue (SQLite or PostgreSQL) of (loss variant, seed)
//! training jobs. Users submit sweeps and watch them ([`service::sweep_service`]); GPU workers
//! lease jobs, heartbeat, stream per-epoch metrics and finish them
//! ([`service::worker_service`]). Every worker write is fenced by its lease.
//!
//! - [`run`] / [`run_listeners`] / [`serve`]: the server seam (listeners with their security,
//!   database, config, shutdown future).
//! - [`auth`]: tokens, roles, principals, TLS settings and per-credential rate limits.
//! - [`Queue`]: the typed job queue the services call (domain values in and out).
//! - [`Database`]: the database behind the queue, SQLite or PostgreSQL by its URL (migrations,
//!   `coordinator migrate` between them).
//! - [`testing`]: the database a test uses (SQLite, or PostgreSQL when a server is configured).
//! - [`lifecycle`]: the pure job state machine.
//! - [`client`]: sweep specs on the client side (spec files, shared flags, presets).
//! - [`cli`]: the client subcommands, including [`client::watch::follow`] (progress bars or plain lines)
//!   and [`client::report_input::fetch_report_input`] (report rows over gRPC).

pub mod auth;
pub mod checkpoints;
pub mod cli;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod error;
pub mod events;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod queue;
pub mod reaper;
pub mod server;
pub mod service;
pub mod testing;

pub use auth::{Principal, Role, Security};
pub use config::{Config, Limits};
pub use db::{DEFAULT_DATABASE_URL, Database};
pub use error::{Error, Result};
pub use queue::Queue;
pub use server::{Listener, run, run_listeners, run_with_http, serve};
