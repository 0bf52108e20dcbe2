//! `coordinator watch` and [`watch_progress`]: live indicatif progress bars of a sweep (one
//! overall bar plus one per running job, each with an ETA), fed by the `WatchSweep` stream.
//! Names from the coordinator are shown through [`printable`].

use std::collections::HashMap;

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sweep_proto::pb;
use sweep_proto::pb::sweep_event::Event;
use sweep_proto::text::printable;

use super::status::format_summary;
use super::{ClientArgs, IntoSweepClient};
use crate::error::{Error, Result};

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Sweep to follow.
    #[arg(long, env = "SWEEP_SWEEP")]
    pub sweep: String,
}

pub async fn run(args: WatchArgs) -> Result<()> {
    let client = args.client.connect().await?;
    let summary = watch_progress(client, &args.sweep, true).await?;
    println!("{}", format_summary(&summary));
    Ok(())
}

/// Follows `sweep` until it has no queued or running job and returns the final summary. With
/// `show`, progress bars (overall + one per running job, with ETAs) are drawn on stderr.
///
/// `client` is a connected `Channel` or a `SweepServiceClient` (see [`IntoSweepClient`]).
pub async fn watch_progress(
    client: impl IntoSweepClient,
    sweep: &str,
    show: bool,
) -> Result<pb::SweepSummary> {
    let target = if show { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    watch_progress_to(client, sweep, target).await
}

/// [`watch_progress`] drawing to `target` (e.g. `ProgressDrawTarget::hidden()` in tests).
pub async fn watch_progress_to(
    client: impl IntoSweepClient,
    sweep: &str,
    target: ProgressDrawTarget,
) -> Result<pb::SweepSummary> {
    let mut client = client.into_sweep_client();
    let mut stream =
        client.watch_sweep(pb::WatchSweepRequest { sweep: sweep.to_owned() }).await?.into_inner();
    let mut bars = Bars::new(target);
    let mut summary = None;
    while let Some(event) = stream.message().await? {
        match event.event {
            Some(Event::Snapshot(s)) => {
                let running = client
                    .list_jobs(pb::ListJobsRequest {
                        sweep: sweep.to_owned(),
                        state: Some(pb::JobState::Running as i32),
                        variant: None,
                    })
                    .await?
                    .into_inner()
                    .jobs;
                bars.reset_jobs(&running);
                bars.overall(&s);
                summary = Some(s);
            }
            Some(Event::JobChanged(job)) => {
                bars.job(&job);
                let s = client.get_sweep(pb::GetSweepRequest { sweep: sweep.to_owned() }).await?.into_inner();
                bars.overall(&s);
                summary = Some(s);
            }
            Some(Event::EpochRecorded(e)) => bars.epoch(&e),
            None => {}
        }
        if let Some(s) = &summary
            && s.queued == 0
            && s.running == 0
        {
            bars.finish(s);
            return Ok(s.clone());
        }
    }
    Err(Error::Unavailable(format!("the coordinator ended the watch of sweep {sweep:?}")))
}

/// The bars of one watch.
struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    jobs: HashMap<i64, ProgressBar>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Bars {
    fn new(target: ProgressDrawTarget) -> Bars {
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(style("{prefix:.bold} [{bar:40.green}] {pos}/{len} epochs {percent}% eta {msg}"));
        Bars { multi, overall, jobs: HashMap::new() }
    }

    fn overall(&self, s: &pb::SweepSummary) {
        self.overall.set_prefix(printable(s.spec.as_ref().map_or("", |s| s.name.as_str())).into_owned());
        self.overall.set_length(s.epochs_total);
        self.overall.set_position(s.epochs_done);
        let eta = if s.eta_seconds < 0.0 { "?".to_owned() } else { format!("{:.0}s", s.eta_seconds) };
        self.overall.set_message(format!(
            "{eta} | queued {} running {} done {} failed {} cancelled {}",
            s.queued, s.running, s.succeeded, s.failed, s.cancelled
        ));
    }

    fn reset_jobs(&mut self, running: &[pb::Job]) {
        for (_, bar) in self.jobs.drain() {
            bar.finish_and_clear();
        }
        for job in running {
            self.job(job);
        }
    }

    fn job(&mut self, job: &pb::Job) {
        let running = job.state == pb::JobState::Running as i32;
        match (running, self.jobs.remove(&job.id)) {
            (true, existing) => {
                let bar = existing.unwrap_or_else(|| {
                    let bar = self.multi.add(ProgressBar::new(u64::from(job.epochs)));
                    bar.set_style(style("  {prefix:<32} [{bar:30.cyan}] {pos}/{len} eta {eta}"));
                    bar
                });
                bar.set_prefix(format!(
                    "#{} {} seed {} (attempt {})",
                    job.id,
                    printable(&job.variant),
                    job.seed,
                    job.attempt
                ));
                bar.set_length(u64::from(job.epochs));
                bar.set_position(u64::from(job.epochs_done));
                self.jobs.insert(job.id, bar);
            }
            (false, Some(bar)) => {
                let state = sweep_proto::convert::state_from_wire(job.state)
                    .map_or_else(|_| format!("state {}", job.state), |s| s.to_string());
                let variant = printable(&job.variant);
                let _ = self.multi.println(format!("job #{} {variant} seed {}: {state}", job.id, job.seed));
                bar.finish_and_clear();
            }
            (false, None) => {}
        }
    }

    fn epoch(&self, e: &pb::EpochRecorded) {
        self.overall.inc(1);
        if let (Some(bar), Some(m)) = (self.jobs.get(&e.job_id), &e.metrics) {
            bar.set_position(bar.position().max(u64::from(m.epoch)));
        }
    }

    fn finish(&mut self, s: &pb::SweepSummary) {
        self.reset_jobs(&[]);
        self.overall(s);
        self.overall.finish();
    }
}
