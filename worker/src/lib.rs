//! Training core of the sweep worker: the experiment's CNN ([`model`]), its five loss variants
//! ([`loss`]), the CIFAR-10 loader and its download ([`data`]), the explicit epoch loop and the
//! [`JobRunner`] API ([`training`]), run-time backend selection ([`backend`]), the step
//! benchmark ([`bench`]) and the `worker train` / `worker bench` subcommands ([`cli`]).
//!
//! # Finding: two of the four auxiliary losses do nothing to training
//!
//! The experiment adds a "natural vs artificial" term to the 10-class cross-entropy. Measured
//! with autodiff (tests in [`loss`]): the gradient w.r.t. the logits of the `natural_hardmax`
//! term (built from `argmax`) and of the `multi_softmax` terms (one-column tensors that Keras
//! renormalises to 1 and clips to `1 − ε`) is exactly zero. Variants 1 and 3 therefore optimise
//! the same objective as `normal_lr1e-3` plus a constant; the hardmax term only changes the
//! reported loss value (`≈16.12` per wrong natural/artificial call), never the update. Only
//! `natural_softmax` trains a genuinely different objective. Any accuracy difference between
//! variants 1, 3 and 4 is seed noise (and backend nondeterminism).

pub mod agent;
pub mod augment;
pub mod auto_count;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod device;
pub mod host_profile;
pub mod keras;
pub mod kernel_cache;
pub mod loss;
pub mod model;
pub mod train_ops;
pub mod training;

pub use backend::open_runner;
pub use data::{Cifar10, DataError};
pub use device::{DeviceChoice, available_devices};
pub use training::{EpochSink, JobOutcome, JobRunner, RunnerConfig, TrainError, TrainJob};
