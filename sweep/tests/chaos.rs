//! The chaos suite: a real sweep served by a `coordinator serve` process and trained by three
//! worker processes (the real agent on CPU, tiny data, checkpoints in a shared folder or on the
//! coordinator), while workers are SIGKILLed or stopped with SIGTERM and the coordinator is
//! SIGKILLed and restarted at pseudo-random moments. Afterwards the database must hold every job succeeded exactly once with
//! epochs 1..=E each stored once, nothing queued or running, pass `PRAGMA integrity_check`, and
//! the report must build. The figures (kills, requeues, resumed jobs, wall time) are printed.
//!
//! This file is its own test harness: the same executable is the coordinator or a worker when
//! `CHAOS_ROLE` says so, which keeps the suite free of any other binary. `CHAOS_SOAK=1` runs the
//! long variant; `CHAOS_SEED=n` replays a schedule.

mod chaos_support;

use std::time::{Duration, Instant};

use chaos_support::{Cluster, Rng, Scenario};

fn main() {
    match std::env::var("CHAOS_ROLE").as_deref() {
        Ok("coordinator") => chaos_support::roles::coordinator(),
        Ok("worker") => chaos_support::roles::worker(),
        _ => {
            // `cargo test -- --list` and filters: this harness has one test, named `chaos`.
            let args: Vec<String> = std::env::args().skip(1).collect();
            if args.iter().any(|a| a == "--list") {
                println!("chaos: test");
                return;
            }
            let skipped = args.windows(2).any(|w| w[0] == "--skip" && "chaos".contains(w[1].as_str()));
            let filtered = args.iter().any(|a| !a.starts_with('-') && !"chaos".contains(a.as_str()));
            if skipped || filtered {
                return;
            }
            let soak = std::env::var("CHAOS_SOAK").is_ok_and(|v| v == "1");
            run(if soak { Scenario::soak() } else { Scenario::standard() });
        }
    }
}

fn run(scenario: Scenario) {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED_C4A0_u64);
    println!("chaos: {scenario:?}, seed {seed}");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut cluster = Cluster::start(&scenario);
    cluster.submit(&scenario);

    let (mut worker_kills, mut worker_stops, mut coordinator_kills) = (0u32, 0u32, 0u32);
    let deadline = started + scenario.deadline;
    while worker_kills < scenario.worker_kills || coordinator_kills < scenario.coordinator_kills {
        assert!(Instant::now() < deadline, "chaos phase ran past its deadline; logs in {}", cluster.logs());
        std::thread::sleep(Duration::from_millis(rng.between(300, 1200)));
        if cluster.finished() {
            // More work so the faults keep landing on running jobs.
            cluster.submit_more(&scenario);
        }
        let roll = rng.between(0, 100);
        if roll < 15 && coordinator_kills < scenario.coordinator_kills {
            cluster.kill_coordinator();
            coordinator_kills += 1;
            std::thread::sleep(Duration::from_millis(rng.between(100, 1500)));
            cluster.start_coordinator();
        } else if roll < 25 {
            let w = rng.between(0, scenario.workers as u64) as usize;
            cluster.stop_worker(w);
            worker_stops += 1;
            cluster.start_worker(w);
        } else if worker_kills < scenario.worker_kills {
            let w = rng.between(0, scenario.workers as u64) as usize;
            cluster.kill_worker(w);
            worker_kills += 1;
            std::thread::sleep(Duration::from_millis(rng.between(0, 500)));
            cluster.start_worker(w);
        }
    }
    let chaos_done = started.elapsed();
    while !cluster.finished() {
        assert!(Instant::now() < deadline, "the sweeps did not finish; logs in {}", cluster.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let figures = cluster.check_and_report();
    println!(
        "chaos: {worker_kills} worker SIGKILLs, {worker_stops} worker SIGTERMs, {coordinator_kills} coordinator \
         SIGKILLs in {:.1} s; all {} jobs ({} epochs) done after {:.1} s; {} requeues (attempts beyond the \
         first), {} jobs continued after an earlier attempt's epochs",
        chaos_done.as_secs_f64(),
        figures.jobs,
        figures.epochs,
        started.elapsed().as_secs_f64(),
        figures.requeues,
        figures.resumed,
    );
    assert!(figures.requeues > 0, "the kills landed on no running job");
}
