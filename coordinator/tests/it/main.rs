//! Integration tests: each starts the real coordinator on 127.0.0.1:0 with a real SQLite file in
//! a temp dir and talks to it through the generated tonic clients (`queue` drives the job queue
//! directly, without gRPC). The security tests (`roles`, `tls`, `limits`, `legacy`, `hygiene`)
//! serve with TLS certificates generated at run time and in-memory tokens (`secure`).

mod bad_input;
mod cancel;
mod checkpoints;
mod cli;
mod commands;
mod common;
mod dashboard;
mod defects;
mod durability;
mod export;
mod flow;
mod hygiene;
mod ingest;
mod leasing;
mod legacy;
mod limits;
mod metrics;
mod migrate;
mod queue;
mod recovery;
mod resubmit;
mod roles;
mod secure;
mod shared_postgres;
mod signals;
mod tls;
