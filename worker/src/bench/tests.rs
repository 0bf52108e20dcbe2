//! The step benchmark on the CPU: its figures, fused models and rejected runs.

use super::*;

/// Three timed steps of one tiny model on four images.
fn tiny(kernels: Kernels) -> StepBenchConfig {
    StepBenchConfig {
        batch_size: 4,
        steps: 2,
        warmup: 1,
        width_multiplier: 0.125,
        bn_group: None,
        kernels,
        variant: LossVariant::NormalLr1e3,
        fuse: 1,
        eval_batch: 8,
        host_profile: None,
    }
}

#[test]
fn step_bench_times_each_kernel_set_and_prints_a_parseable_line() {
    let bf16: Kernels = "wgrad+dgrad+bn+bf16".parse().unwrap();
    for kernels in [Kernels::STOCK, Kernels::FAST, bf16] {
        let bench = bench_train_step(DeviceChoice::Cpu, tiny(kernels)).unwrap();
        assert_eq!(bench.step_times.len(), 2);
        assert_eq!(bench.host_times.len(), 2);
        for ((host, step), phases) in bench.host_times.iter().zip(&bench.step_times).zip(&bench.host_phases) {
            assert!(host <= step, "host time {host:?} is part of the step's {step:?}");
            let phases: Duration = phases.iter().sum();
            assert!(phases <= *host, "phases {phases:?} are part of the host time {host:?}");
        }
        assert!(bench.line().contains(" host_fwd_bwd_opt_ms="), "{}", bench.line());
        assert!(bench.line().contains(" host_ms="), "{}", bench.line());
        assert!(bench.images_per_sec() > 0.0 && bench.pipelined_images_per_sec() > 0.0);
        assert!(bench.eval_images_per_sec() > 0.0);
        let projected = bench.protocol_time().expect("both rates are positive");
        let per_job_epoch =
            50_000.0 / bench.pipelined_images_per_sec() + 10_000.0 / bench.eval_images_per_sec();
        assert!((projected.as_secs_f64() / 4_500.0 - per_job_epoch).abs() < 1e-6 * per_job_epoch);
        let minutes = format!(" protocol_min={:.1}", projected.as_secs_f64() / 60.0);
        assert!(bench.line().contains(&format!("{minutes} ")), "{}", bench.line());
        // The device memory a run took is read from the CUDA driver only.
        let tail = " device_mib=na estimate_mib=na variant=normal_lr1e-3";
        assert!(bench.line().ends_with(tail), "{}", bench.line());
        // Five steps on one batch of four images: the loss falls on every path.
        assert!(bench.learns(), "{kernels}: loss {} → {}", bench.first_loss, bench.last_loss);
        assert!(line_has_losses(&bench.line()), "{}", bench.line());
        let line = bench.line();
        assert!(line.starts_with(&format!("burn device=cpu kernels={kernels} batch=4 img_per_s=")), "{line}");
    }
}

#[test]
fn step_bench_fuses_models_and_counts_all_their_images() {
    let config = StepBenchConfig { fuse: 3, ..tiny(Kernels::FAST) };
    let bench = bench_train_step(DeviceChoice::Cpu, config.clone()).unwrap();
    assert_eq!(bench.fuse, 3);
    let per_step = bench.median_step().as_secs_f64();
    assert!((bench.images_per_sec() - 12.0 / per_step).abs() < 1e-6 * bench.images_per_sec());
    assert!(bench.learns(), "fused: loss {} → {}", bench.first_loss, bench.last_loss);
    assert!(bench.line().contains(" fuse=3 "), "{}", bench.line());
    // Three models' summed loss, each near ln 10 at the start.
    assert!((bench.first_loss - 3.0 * 10f32.ln()).abs() < 1.5, "{}", bench.first_loss);
    let stock = StepBenchConfig { kernels: Kernels::STOCK, ..config };
    let err = bench_train_step(DeviceChoice::Cpu, stock).unwrap_err();
    assert!(matches!(&err, TrainError::InvalidJob(m) if m.contains("fused BatchNorm")), "{err}");
}

fn line_has_losses(line: &str) -> bool {
    line.contains(" loss_first=") && line.contains(" loss_last=")
}

/// A variant's trained loss is what the step differentiates: natural_softmax's node trains too,
/// alone and fused, and the line names the variant.
#[test]
fn step_bench_trains_the_variant_it_is_given() {
    for fuse in [1, 2] {
        let config = StepBenchConfig { variant: LossVariant::NaturalSoftmax, fuse, ..tiny(Kernels::FAST) };
        let bench = bench_train_step(DeviceChoice::Cpu, config).unwrap();
        assert!(bench.learns(), "fuse {fuse}: loss {} → {}", bench.first_loss, bench.last_loss);
        assert!(bench.line().ends_with(" variant=natural_softmax"), "{}", bench.line());
    }
}

#[test]
fn step_bench_rejects_an_empty_run() {
    for config in [
        StepBenchConfig { batch_size: 0, ..tiny(Kernels::FAST) },
        StepBenchConfig { fuse: 0, ..tiny(Kernels::FAST) },
    ] {
        assert!(matches!(bench_train_step(DeviceChoice::Cpu, config), Err(TrainError::InvalidJob(_))));
    }
}

#[test]
fn concurrent_jobs_are_timed_together_and_an_empty_or_refused_run_is_an_error() {
    let rate = bench_concurrent(DeviceChoice::Cpu, tiny(Kernels::FAST), 2).unwrap();
    assert!(rate.is_finite() && rate > 0.0, "{rate}");
    let fused =
        bench_concurrent(DeviceChoice::Cpu, StepBenchConfig { fuse: 2, ..tiny(Kernels::FAST) }, 2).unwrap();
    assert!(fused.is_finite() && fused > 0.0, "{fused}");
    for (config, jobs) in [(tiny(Kernels::FAST), 0), (StepBenchConfig { fuse: 0, ..tiny(Kernels::FAST) }, 2)]
    {
        let empty = bench_concurrent(DeviceChoice::Cpu, config, jobs);
        assert!(matches!(empty, Err(TrainError::InvalidJob(_))), "{empty:?}");
    }
    // A fused group needs the fused BatchNorm: refused, not run as single jobs.
    let stock = bench_concurrent(DeviceChoice::Cpu, StepBenchConfig { fuse: 2, ..tiny(Kernels::STOCK) }, 2);
    assert!(matches!(stock, Err(TrainError::InvalidJob(_))), "{stock:?}");
    let direct = Kernels { direct_launch: true, ..Kernels::FAST };
    let refused = bench_concurrent(DeviceChoice::Cpu, tiny(direct), 2);
    assert!(matches!(refused, Err(TrainError::Device(_))), "{refused:?}");
}
