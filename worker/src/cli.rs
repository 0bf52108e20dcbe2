//! Arguments and drivers of the local subcommands: `worker train` (one job, no coordinator,
//! prints the epoch table) and `worker bench` (step / epoch throughput). `main.rs` only parses
//! and dispatches; every flag also reads a `SWEEP_…` environment variable.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use sweep_proto::LossVariant;
use sweep_proto::domain::{DataOptions, EpochMetrics};

use crate::backend::open_runner_with;
use crate::bench::protocol::Workload;
use crate::bench::{StepBenchConfig, bench_concurrent, bench_epoch, bench_train_step, short_name};
use crate::data::{Cifar10, DataArgs, DataError};
use crate::device::{DeviceError, available_devices};
use crate::train_ops::KernelChoice;
use crate::training::RunnerConfig;
use crate::training::{EpochSink, JobOutcome, TrainError, TrainJob};

/// `worker train`: run one job locally and print its epoch table.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Loss variant: natural_hardmax, natural_softmax, multi_softmax, normal_lr1e-3, normal_lr1e-2.
    #[arg(long, env = "SWEEP_VARIANT")]
    pub variant: LossVariant,
    /// Seed of initialisation and shuffling.
    #[arg(long, env = "SWEEP_SEED", default_value_t = 0)]
    pub seed: u64,
    #[arg(long, env = "SWEEP_EPOCHS", default_value_t = 100)]
    pub epochs: u32,
    #[arg(long, env = "SWEEP_BATCH_SIZE", default_value_t = 512)]
    pub batch_size: u32,
    /// Learning rate (default: the variant's, 1e-3 or 1e-2).
    #[arg(long, env = "SWEEP_LEARNING_RATE")]
    pub lr: Option<f64>,
    /// Train on the first N training images only.
    #[arg(long, env = "SWEEP_TRAIN_LIMIT")]
    pub train_limit: Option<u32>,
    /// Validate on the first N test images only.
    #[arg(long, env = "SWEEP_TEST_LIMIT")]
    pub test_limit: Option<u32>,
    /// Channel width multiplier of the CNN.
    #[arg(long, alias = "width", env = "SWEEP_WIDTH_MULTIPLIER", default_value_t = 1.0)]
    pub width_multiplier: f32,
    /// Random crop (4 px padding) + horizontal flip.
    #[arg(long, env = "SWEEP_AUGMENT")]
    pub augment: bool,
    /// BatchNorm statistics per group of N images in training (must divide the batch size).
    #[arg(long, env = "SWEEP_BN_GROUP")]
    pub bn_group: Option<u32>,
    #[command(flatten)]
    pub data: DataArgs,
    /// auto (CUDA if present, else CPU), cuda or cpu.
    #[arg(long, env = "SWEEP_DEVICE", default_value = "auto")]
    pub device: String,
    /// GPUs to consider: "all" or "0,1" (the first one is used).
    #[arg(long, env = "SWEEP_GPUS", default_value = "all")]
    pub gpus: String,
    /// Print one JSON object per epoch and a JSON summary instead of the table.
    #[arg(long, env = "SWEEP_JSON")]
    pub json: bool,
    #[arg(long, env = "SWEEP_KERNELS", default_value = "auto", help = crate::train_ops::KERNELS_HELP)]
    pub kernels: KernelChoice,
}

/// `worker bench`: time the training step (and optionally one real epoch).
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[arg(long, env = "SWEEP_BATCH_SIZE", default_value_t = 512)]
    pub batch_size: u32,
    /// Timed steps.
    #[arg(long, env = "SWEEP_BENCH_STEPS", default_value_t = 30)]
    pub steps: usize,
    /// Untimed warm-up steps (kernel autotune happens here).
    #[arg(long, env = "SWEEP_BENCH_WARMUP", default_value_t = 5)]
    pub warmup: usize,
    #[arg(long, alias = "width", env = "SWEEP_WIDTH_MULTIPLIER", default_value_t = 1.0)]
    pub width_multiplier: f32,
    /// BatchNorm statistics per group of N images (must divide the batch size).
    #[arg(long, env = "SWEEP_BN_GROUP")]
    pub bn_group: Option<u32>,
    /// Loss variant whose trained loss the step differentiates (as `worker train --variant`).
    #[arg(long, env = "SWEEP_VARIANT", default_value = "normal_lr1e-3")]
    pub variant: LossVariant,
    #[arg(long, env = "SWEEP_DEVICE", default_value = "auto")]
    pub device: String,
    #[arg(long, env = "SWEEP_GPUS", default_value = "all")]
    pub gpus: String,
    /// Also time one whole epoch with the real data pipeline (needs the data set; implied by
    /// --data-dir).
    #[arg(long, env = "SWEEP_BENCH_EPOCH")]
    pub epoch: bool,
    #[command(flatten)]
    pub data: DataArgs,
    /// Training-node implementations to time, one after another in this process.
    #[arg(
        long,
        env = "SWEEP_BENCH_KERNELS",
        value_delimiter = ',',
        default_value = "auto",
        value_parser = KernelChoice::parse_parts,
        help = crate::train_ops::BENCH_KERNELS_HELP
    )]
    pub kernels: Vec<KernelChoice>,
    /// Models trained as one fused step (different seeds, one batch each; needs kernels with the
    /// fused BatchNorm): the images per second are the aggregate of all of them.
    #[arg(long, env = "SWEEP_BENCH_FUSE", default_value_t = 1)]
    pub fuse: usize,
    /// Also time this many jobs trained at once by threads of this process, each with its own
    /// stream (what as many worker slots on one device do): their aggregate images per second.
    #[arg(long, env = "SWEEP_BENCH_CONCURRENT", default_value_t = 1)]
    pub concurrent: usize,
    /// Sample where the host's CPU time goes during the synced timed steps: writes folded
    /// stacks (flamegraph input) to this file, one per kernel set (`FILE.1`, … after the
    /// first), and prints the most frequent functions.
    #[arg(long, env = "SWEEP_BENCH_HOST_PROFILE")]
    pub host_profile: Option<PathBuf>,
}

/// Why a local subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Summary of `worker train`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainSummary {
    pub device: String,
    pub outcome: String,
    pub best_val_acc: f64,
    pub best_epoch: u32,
    pub epochs: Vec<EpochMetrics>,
    /// Seconds from process start to the end of the first training step.
    pub seconds_to_first_step: Option<f64>,
}

struct TableSink<'a> {
    out: &'a mut dyn Write,
    json: bool,
    process_start: Instant,
    first_step: Option<Duration>,
    epochs: Vec<EpochMetrics>,
    error: Option<std::io::Error>,
}

impl EpochSink for TableSink<'_> {
    fn on_epoch(&mut self, m: EpochMetrics) {
        let written = if self.json {
            serde_json::to_string(&m).map_err(std::io::Error::other).and_then(|s| writeln!(self.out, "{s}"))
        } else {
            writeln!(
                self.out,
                "{:>5} {:>10.4} {:>9.4} {:>10.4} {:>9.4} {:>9.1} {:>9.1}",
                m.epoch,
                m.train_loss.unwrap_or(f64::NAN),
                m.train_acc.unwrap_or(f64::NAN),
                m.val_loss.unwrap_or(f64::NAN),
                m.val_acc.unwrap_or(f64::NAN),
                m.wall_seconds,
                m.images_per_sec.unwrap_or(f64::NAN)
            )
        };
        if let Err(e) = written.and_then(|_| self.out.flush()) {
            self.error.get_or_insert(e);
        }
        self.epochs.push(m);
    }

    fn should_stop(&self) -> bool {
        false
    }

    fn on_first_step(&mut self) {
        self.first_step = Some(self.process_start.elapsed());
    }
}

/// Runs `worker train`: loads (or downloads) the data, opens the first requested device and
/// trains one job, writing the epoch table (or JSON lines) to `out`.
pub fn run_train(
    args: &TrainArgs,
    out: &mut dyn Write,
    process_start: Instant,
) -> Result<TrainSummary, CliError> {
    let data = Arc::new(Cifar10::open(&args.data.source())?);
    let device = available_devices(&args.device, &args.gpus)?[0];
    let kernels = args.kernels.for_device(device);
    let config = RunnerConfig { kernels, ..RunnerConfig::default() };
    let mut runner = open_runner_with(device, data, config)?;
    let lr = args.lr.unwrap_or(args.variant.default_learning_rate());
    let data = DataOptions {
        train_limit: args.train_limit,
        test_limit: args.test_limit,
        augment: args.augment,
        width_multiplier: args.width_multiplier,
        bn_group: args.bn_group,
    };
    let job = TrainJob {
        variant: args.variant,
        seed: args.seed,
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: lr,
        data,
    };
    if !args.json {
        writeln!(
            out,
            "# {} seed={} lr={lr} batch={} width={} bn_group={} kernels={kernels} on {device}",
            args.variant,
            args.seed,
            args.batch_size,
            args.width_multiplier,
            args.bn_group.map_or("batch".to_owned(), |g| g.to_string())
        )?;
        writeln!(
            out,
            "{:>5} {:>10} {:>9} {:>10} {:>9} {:>9} {:>9}",
            "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "img/s"
        )?;
    }
    let mut sink = TableSink {
        out: &mut *out,
        json: args.json,
        process_start,
        first_step: None,
        epochs: Vec::new(),
        error: None,
    };
    let outcome = runner.run(&job, &mut sink)?;
    if let Some(e) = sink.error.take() {
        return Err(e.into());
    }
    let (outcome, best_val_acc, best_epoch) = match outcome {
        JobOutcome::Completed { best_val_acc, best_epoch, .. } => ("completed", best_val_acc, best_epoch),
        JobOutcome::Stopped { .. } => ("stopped", f64::NAN, 0),
    };
    let summary = TrainSummary {
        device: device.to_string(),
        outcome: outcome.to_owned(),
        best_val_acc,
        best_epoch,
        epochs: sink.epochs,
        seconds_to_first_step: sink.first_step.map(|d| d.as_secs_f64()),
    };
    if args.json {
        let line = serde_json::to_string(&summary).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")?;
    } else {
        let first = summary.seconds_to_first_step.map_or("n/a".to_owned(), |s| format!("{s:.1} s"));
        writeln!(
            out,
            "best val_acc {:.4} at epoch {}; process start to first training step: {first}",
            best_val_acc, best_epoch
        )?;
    }
    Ok(summary)
}

/// Runs `worker bench` and writes its parseable lines to `out`.
pub fn run_bench(args: &BenchArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let device = available_devices(&args.device, &args.gpus)?[0];
    for (i, kernels) in args.kernels.iter().map(|choice| choice.for_device(device)).enumerate() {
        let host_profile = args.host_profile.as_ref().map(|path| match i {
            0 => path.clone(),
            i => PathBuf::from(format!("{}.{i}", path.display())),
        });
        let config = StepBenchConfig {
            batch_size: args.batch_size as usize,
            steps: args.steps,
            warmup: args.warmup,
            width_multiplier: args.width_multiplier,
            bn_group: args.bn_group.map(|g| g as usize),
            kernels,
            variant: args.variant,
            fuse: args.fuse,
            eval_batch: RunnerConfig::default().eval_batch_size,
            host_profile,
        };
        let step = bench_train_step(device, config.clone())?;
        let warmup = step.warmup_time.as_secs_f64();
        writeln!(out, "# {device} kernels={kernels}: warm-up {warmup:.1} s over {} steps", args.warmup)?;
        writeln!(out, "{}", step.line())?;
        if let Some(time) = step.protocol_time() {
            writeln!(
                out,
                "# kernels={kernels}: the experiment's protocol (4,500 job-epochs, each job at batch {} fused by {}) \
                 takes {:.1} min of this device at {:.0} img/s training and {:.0} img/s validating",
                args.batch_size,
                args.fuse,
                time.as_secs_f64() / 60.0,
                step.pipelined_images_per_sec(),
                step.eval_images_per_sec(),
            )?;
        }
        for line in step.host_profile.iter().flat_map(|summary| summary.lines()) {
            writeln!(out, "# {line}")?;
        }
        if args.concurrent > 1 {
            let img_per_s = bench_concurrent(device, config, args.concurrent)?;
            writeln!(
                out,
                "burn-concurrent device={} kernels={kernels} batch={} jobs={} fuse={} pipelined_img_per_s={img_per_s:.1} variant={}",
                short_name(&device),
                args.batch_size,
                args.concurrent,
                args.fuse,
                args.variant,
            )?;
        }
        if !step.learns() {
            writeln!(
                out,
                "# WARNING kernels={kernels}: the loss did not fall over the run: this path does not train"
            )?;
        }
        out.flush()?;
    }
    if args.epoch || args.data.data_dir.is_some() {
        let data = Arc::new(Cifar10::open(&args.data.source())?);
        let images = data.train_len() as f64;
        let m = bench_epoch(device, data, (args.batch_size, args.width_multiplier), args.variant)?;
        let img_per_s = m.images_per_sec.unwrap_or(f64::NAN);
        writeln!(
            out,
            "burn-epoch device={} batch={} img_per_s={:.1} train_s={:.2} epoch_s={:.2} protocol_min={:.1} \
             variant={}",
            short_name(&device),
            args.batch_size,
            img_per_s,
            images / img_per_s,
            m.wall_seconds,
            Workload::PROTOCOL.at_epoch_time(m.wall_seconds).map_or(f64::NAN, |t| t.as_secs_f64() / 60.0),
            args.variant,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Bench {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn bench_times_normal_lr1e3_unless_told_a_variant() {
        let parse =
            |args: &[&str]| Bench::try_parse_from(std::iter::once("bench").chain(args.iter().copied()));
        assert_eq!(parse(&[]).unwrap().args.variant, LossVariant::NormalLr1e3);
        let natural = parse(&["--variant", "natural_softmax"]).unwrap().args;
        assert_eq!(natural.variant, LossVariant::NaturalSoftmax);
        assert!(parse(&["--variant", "softmax"]).is_err());
    }
}
