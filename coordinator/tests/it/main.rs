//! Integration tests: each starts the real coordinator on 127.0.0.1:0 with a real SQLite file in
//! a temp dir and talks to it through the generated tonic clients (`queue` drives the job queue
//! directly, without gRPC).

mod bad_input;
mod cancel;
mod cli;
mod common;
mod durability;
mod flow;
mod ingest;
mod leasing;
mod queue;
mod resubmit;
