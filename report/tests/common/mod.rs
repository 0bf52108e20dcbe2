//! Deterministic synthetic report inputs shared by the integration tests and the example.

#![allow(dead_code)]

use std::collections::BTreeMap;

use report::{EpochRow, JobRow, Provenance, ReportInput};

pub const VARIANTS: [&str; 5] =
    ["natural_hardmax", "natural_softmax", "multi_softmax", "normal_lr1e-3", "normal_lr1e-2"];

/// Final validation accuracy (fraction) and seed-to-seed spread of each synthetic variant.
const LEVELS: [(f64, f64); 5] =
    [(0.880, 0.003), (0.915, 0.003), (0.900, 0.012), (0.900, 0.003), (0.885, 0.003)];

/// SplitMix64: a fixed-seed generator giving the same numbers on every run and platform.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Uniform in [-1, 1).
    pub fn next_signed(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

fn provenance() -> Provenance {
    Provenance {
        git_commit: "0123456789ab-dirty".to_string(),
        rustc_version: "rustc 1.95.0 (0123456789 2026-11-01)".to_string(),
        crate_versions: vec![
            ("burn".to_string(), "0.21.0".to_string()),
            ("report".to_string(), "0.1.0".to_string()),
        ],
        devices: vec!["NVIDIA H100 80GB HBM3".to_string()],
        data_md5: vec![("data_batch_1.bin".to_string(), "c99cafc152244af753f735de768cd75f".to_string())],
        generated_at: "2026-11-26T19:30:00Z".to_string(),
    }
}

/// One job with `epochs_done` of `epochs` stored; returns the job row and its epoch rows.
fn job(
    job_id: i64,
    variant_index: usize,
    seed: u64,
    state: &str,
    epochs: u32,
    epochs_done: u32,
) -> (JobRow, Vec<EpochRow>) {
    let variant = VARIANTS[variant_index].to_string();
    let (level, spread) = LEVELS[variant_index];
    let mut rng = SplitMix::new(job_id as u64 * 7919 + seed);
    let final_level = level + spread * rng.next_signed() * 1.7;
    let rows: Vec<EpochRow> = (1..=epochs_done)
        .map(|epoch| {
            let progress = 1.0 - (-(epoch as f64) / 1.5).exp();
            let val_acc = (final_level * progress + 0.003 * rng.next_signed()).clamp(0.0, 1.0);
            let train_acc = (val_acc + 0.04 * progress + 0.002 * rng.next_signed()).clamp(0.0, 1.0);
            EpochRow {
                job_id,
                variant: variant.clone(),
                seed,
                epoch,
                train_loss: 2.3 * (1.0 - train_acc),
                train_acc,
                val_loss: 2.3 * (1.0 - val_acc),
                val_acc,
                wall_seconds: 12.5,
                images_per_sec: 4000.0,
                attempt: 1,
                value: None,
            }
        })
        .collect();
    let best = rows.iter().max_by(|a, b| a.val_acc.total_cmp(&b.val_acc));
    let job = JobRow {
        job_id,
        variant,
        seed,
        state: state.to_string(),
        epochs,
        epochs_done,
        best_value: best.map(|e| e.val_acc),
        best_epoch: best.map(|e| e.epoch),
        final_train_acc: rows.last().map(|e| e.train_acc),
        final_val_acc: rows.last().map(|e| e.val_acc),
        wall_seconds: rows.iter().map(|e| e.wall_seconds).sum(),
        worker: if epochs_done > 0 { format!("worker-{}", job_id % 3) } else { String::new() },
        attempts: 1,
        error: String::new(),
    };
    (job, rows)
}

fn assemble(sweep: &str, jobs: Vec<(JobRow, Vec<EpochRow>)>) -> ReportInput {
    let mut input = ReportInput {
        sweep: sweep.to_string(),
        variants: VARIANTS.iter().map(|v| v.to_string()).collect(),
        baseline_variant: "normal_lr1e-3".to_string(),
        spec_json: "{\n  \"name\": \"cifar10-natural\",\n  \"epochs\": 10,\n  \"seeds\": [0, 1, 2, 3, 4]\n}"
            .to_string(),
        jobs: Vec::new(),
        epochs: Vec::new(),
        // Unknown by default: the synthetic values do not follow the loss variants' construction.
        learning_rates: BTreeMap::new(),
        provenance: provenance(),
        measure: Default::default(),
    };
    for (row, epochs) in jobs {
        input.jobs.push(row);
        input.epochs.extend(epochs);
    }
    input
}

/// 5 variants × `seeds` seeds × `epochs` epochs, every job succeeded.
pub fn finished_sweep(seeds: u64, epochs: u32) -> ReportInput {
    let mut jobs = Vec::new();
    for (v, _) in VARIANTS.iter().enumerate() {
        for seed in 0..seeds {
            let id = (v as i64) * 100 + seed as i64 + 1;
            jobs.push(job(id, v, seed, "succeeded", epochs, epochs));
        }
    }
    assemble("cifar10-natural", jobs)
}

/// A sweep in progress: no job succeeded, some running with a few epochs, some queued, and the
/// last variant has no jobs at all.
pub fn partial_sweep_none_finished() -> ReportInput {
    let mut jobs = Vec::new();
    for v in 0..4 {
        for seed in 0..3u64 {
            let id = (v as i64) * 100 + seed as i64 + 1;
            let (state, done) = if seed == 0 { ("running", 3 + v as u32) } else { ("queued", 0) };
            jobs.push(job(id, v, seed, state, 10, done));
        }
    }
    assemble("cifar10-partial", jobs)
}

/// Why the failed jobs of [`partial_sweep_mixed`] failed.
pub const FAILURE: &str = "CUDA error: out of memory\nwhile allocating 2.0 GiB";

/// A sweep in progress: two seeds finished per variant, one running, one queued, one failed
/// (after 3 attempts). The first variant's seed 1 succeeded on its second attempt, and its
/// running seed 2 continues after the first attempt's 4 epochs.
pub fn partial_sweep_mixed() -> ReportInput {
    let mut jobs = Vec::new();
    for v in 0..5 {
        for seed in 0..5u64 {
            let id = (v as i64) * 100 + seed as i64 + 1;
            let (state, done) = match seed {
                0 | 1 => ("succeeded", 10),
                2 => ("running", 6),
                3 => ("queued", 0),
                _ => ("failed", 2),
            };
            let (mut row, mut epochs) = job(id, v, seed, state, 10, done);
            if state == "failed" {
                (row.attempts, row.error) = (3, FAILURE.to_string());
                epochs.iter_mut().for_each(|e| e.attempt = 3);
            }
            if v == 0 && seed == 1 {
                row.attempts = 2;
                epochs.iter_mut().for_each(|e| e.attempt = 2);
            }
            if v == 0 && seed == 2 {
                row.attempts = 2;
                epochs.iter_mut().filter(|e| e.epoch > 4).for_each(|e| e.attempt = 2);
            }
            jobs.push((row, epochs));
        }
    }
    assemble("cifar10-mixed", jobs)
}

/// The experiment's learning rates.
fn protocol_learning_rates() -> BTreeMap<String, f64> {
    VARIANTS.iter().map(|v| (v.to_string(), if *v == "normal_lr1e-2" { 1e-2 } else { 1e-3 })).collect()
}

/// A finished sweep whose jobs have exactly the given best validation accuracies (one slice per
/// variant in display order), each with a single stored epoch.
pub fn sweep_with_best_values(best: [&[f64]; 5]) -> ReportInput {
    let mut jobs = Vec::new();
    for (v, values) in best.iter().enumerate() {
        for (seed, &acc) in values.iter().enumerate() {
            let (mut row, mut epochs) = job((v * 100 + seed + 1) as i64, v, seed as u64, "succeeded", 1, 1);
            epochs[0].val_acc = acc;
            row.best_value = Some(acc);
            row.final_val_acc = Some(acc);
            jobs.push((row, epochs));
        }
    }
    assemble("hand-made", jobs)
}

/// The experiment's protocol sweep: every variant at seeds 0–4, natural_softmax and normal_lr1e-3
/// also at seeds 5–14 (45 jobs), all succeeded, at the experiment's learning rates.
/// natural_hardmax and multi_softmax reproduce normal_lr1e-3 bit for bit at equal seeds, as their
/// zero-gradient terms do on one machine.
pub fn protocol_sweep(epochs: u32) -> ReportInput {
    let mut input = protocol_sweep_bit_for_bit(epochs);
    input.learning_rates = protocol_learning_rates();
    input
}

/// [`protocol_sweep`] with natural_hardmax run on another machine: from epoch 3 on its validation
/// accuracies drift from normal_lr1e-3's by up to ±0.3 points, as other kernels make them.
pub fn protocol_sweep_across_machines(epochs: u32) -> ReportInput {
    let mut input = protocol_sweep(epochs);
    let mut rng = SplitMix::new(42);
    for e in input.epochs.iter_mut().filter(|e| e.variant == "natural_hardmax" && e.epoch > 2) {
        e.val_acc += 0.003 * rng.next_signed();
    }
    for job in input.jobs.iter_mut().filter(|j| j.variant == "natural_hardmax") {
        let rows = input.epochs.iter().filter(|e| e.job_id == job.job_id);
        let rows: Vec<&EpochRow> = rows.collect();
        let best = rows.iter().max_by(|a, b| a.val_acc.total_cmp(&b.val_acc)).unwrap();
        (job.best_value, job.best_epoch) = (Some(best.val_acc), Some(best.epoch));
        job.final_val_acc = rows.iter().max_by_key(|e| e.epoch).map(|e| e.val_acc);
    }
    input
}

fn protocol_sweep_bit_for_bit(epochs: u32) -> ReportInput {
    let baseline = 3;
    let mut jobs = Vec::new();
    for (v, _) in VARIANTS.iter().enumerate() {
        let seeds = if v == 1 || v == baseline { 0..15 } else { 0..5 };
        for seed in seeds {
            let id = (v as i64) * 100 + seed as i64 + 1;
            if v == 0 || v == 2 {
                let (mut row, mut rows) = job(
                    (baseline as i64) * 100 + seed as i64 + 1,
                    baseline,
                    seed,
                    "succeeded",
                    epochs,
                    epochs,
                );
                row.job_id = id;
                row.variant = VARIANTS[v].to_string();
                for e in &mut rows {
                    e.job_id = id;
                    e.variant = row.variant.clone();
                }
                jobs.push((row, rows));
            } else {
                jobs.push(job(id, v, seed, "succeeded", epochs, epochs));
            }
        }
    }
    assemble("cifar10-protocol", jobs)
}

/// The synthetic finished sweep ranked by `val_loss` (lower is better): each epoch carries it
/// as the measure and each job its lowest value.
pub fn ranked_by_loss() -> ReportInput {
    let mut input = finished_sweep(5, 4);
    input.measure = report::Measure::of("val_loss", false);
    for e in &mut input.epochs {
        e.value = Some(e.val_loss);
    }
    for job in &mut input.jobs {
        let mine = input.epochs.iter().filter(|e| e.job_id == job.job_id);
        job.best_value = mine.map(|e| e.val_loss).reduce(f64::min);
    }
    input
}

/// A metric of the sweep's own (`top5`, higher is better) with no column of its own in the CSV
/// files and no training counterpart.
pub fn ranked_by_top5() -> ReportInput {
    let mut input = finished_sweep(5, 4);
    input.measure = report::Measure::of("top5", true);
    for e in &mut input.epochs {
        (e.value, e.train_acc, e.val_acc) = (Some(0.5 + e.val_acc / 2.0), f64::NAN, f64::NAN);
    }
    for job in &mut input.jobs {
        let mine = input.epochs.iter().filter(|e| e.job_id == job.job_id);
        job.best_value = mine.filter_map(|e| e.value).reduce(f64::max);
        (job.final_train_acc, job.final_val_acc) = (None, None);
    }
    input
}
