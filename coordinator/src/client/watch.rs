//! Following a sweep through the `WatchSweep` stream until no job is queued or running, shown as
//! live progress bars on a terminal ([`Progress::Bars`]: one overall bar plus one per running job,
//! each with an ETA) or as one plain line per finished epoch and per job state change
//! ([`Progress::Lines`], for logs and pipes). Names from the coordinator are shown through
//! [`printable`].

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sweep_proto::pb;
use sweep_proto::pb::sweep_event::Event;
use sweep_proto::text::printable;

use super::IntoSweepClient;
use crate::error::{Error, Result};

/// How a watch shows progress.
pub enum Progress {
    /// Live bars drawn on `target`.
    Bars(ProgressDrawTarget),
    /// One line per finished epoch and per job state change, without colours.
    Lines(Box<dyn Write + Send>),
    /// Nothing.
    Hidden,
}

impl Progress {
    /// Bars when stderr is a terminal, plain lines on stdout otherwise or when `plain`.
    pub fn auto(plain: bool) -> Progress {
        if !plain && std::io::stderr().is_terminal() {
            Progress::Bars(ProgressDrawTarget::stderr())
        } else {
            Progress::Lines(Box::new(std::io::stdout()))
        }
    }
}

/// Follows `sweep` until it has no queued or running job and returns the final summary.
///
/// `client` is a connected `Channel` or a `SweepServiceClient` (see [`IntoSweepClient`]).
pub async fn follow(
    client: impl IntoSweepClient,
    sweep: &str,
    progress: Progress,
) -> Result<pb::SweepSummary> {
    let mut client = client.into_sweep_client();
    let mut stream =
        client.watch_sweep(pb::WatchSweepRequest { sweep: sweep.to_owned() }).await?.into_inner();
    let mut view = View::new(progress);
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
                view.reset_jobs(&running);
                view.overall(&s);
                summary = Some(s);
            }
            Some(Event::JobChanged(job)) => {
                view.job(&job);
                let s = client.get_sweep(pb::GetSweepRequest { sweep: sweep.to_owned() }).await?.into_inner();
                view.overall(&s);
                summary = Some(s);
            }
            Some(Event::EpochRecorded(e)) => view.epoch(&e),
            None => {}
        }
        if let Some(s) = &summary
            && s.queued == 0
            && s.running == 0
        {
            view.finish(s);
            return Ok(s.clone());
        }
    }
    Err(Error::Unavailable(format!("the coordinator ended the watch of sweep {sweep:?}")))
}

/// What a watch shows through.
enum View {
    Bars(Bars),
    Lines(Lines),
    Hidden,
}

impl View {
    fn new(progress: Progress) -> View {
        match progress {
            Progress::Bars(target) => View::Bars(Bars::new(target)),
            Progress::Lines(out) => View::Lines(Lines { out, states: HashMap::new() }),
            Progress::Hidden => View::Hidden,
        }
    }

    fn overall(&mut self, s: &pb::SweepSummary) {
        if let View::Bars(b) = self {
            b.overall(s);
        }
    }

    fn reset_jobs(&mut self, running: &[pb::Job]) {
        match self {
            View::Bars(b) => b.reset_jobs(running),
            View::Lines(l) => running.iter().for_each(|j| l.job(j)),
            View::Hidden => {}
        }
    }

    fn job(&mut self, job: &pb::Job) {
        match self {
            View::Bars(b) => b.job(job),
            View::Lines(l) => l.job(job),
            View::Hidden => {}
        }
    }

    fn epoch(&mut self, e: &pb::EpochRecorded) {
        match self {
            View::Bars(b) => b.epoch(e),
            View::Lines(l) => l.epoch(e),
            View::Hidden => {}
        }
    }

    fn finish(&mut self, s: &pb::SweepSummary) {
        match self {
            View::Bars(b) => b.finish(s),
            View::Lines(l) => l.line(format!(
                "sweep {}: {} succeeded, {} failed, {} cancelled; {}/{} epochs",
                printable(s.spec.as_ref().map_or("", |s| s.name.as_str())),
                s.succeeded,
                s.failed,
                s.cancelled,
                s.epochs_done,
                s.epochs_total
            )),
            View::Hidden => {}
        }
    }
}

/// Plain lines: a job's line is printed when its state or attempt changes.
struct Lines {
    out: Box<dyn Write + Send>,
    states: HashMap<i64, (i32, u32)>,
}

impl Lines {
    fn line(&mut self, line: String) {
        // A closed pipe must not end the watch: the sweep goes on either way.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    fn job(&mut self, job: &pb::Job) {
        if self.states.insert(job.id, (job.state, job.attempt)) == Some((job.state, job.attempt)) {
            return;
        }
        self.line(job_line(job));
    }

    fn epoch(&mut self, e: &pb::EpochRecorded) {
        if let Some(m) = &e.metrics {
            self.line(format!(
                "job #{} {} seed {} epoch {}: {} ({:.1} s)",
                e.job_id,
                printable(&e.variant),
                e.seed,
                m.epoch,
                metrics_text(m),
                m.wall_seconds
            ));
        }
    }
}

/// An epoch's metrics as `train_loss 0.5123 train_acc 81.20% … top5 0.97`: the named ones it
/// has (accuracies in %), then the others by name.
pub fn metrics_text(m: &pb::EpochMetrics) -> String {
    let named = [
        ("train_loss", m.train_loss, false),
        ("train_acc", m.train_acc, true),
        ("val_loss", m.val_loss, false),
        ("val_acc", m.val_acc, true),
    ];
    let mut parts: Vec<String> = named
        .iter()
        .filter_map(|(name, v, percent)| {
            v.map(|v| if *percent { format!("{name} {:.2}%", 100.0 * v) } else { format!("{name} {v:.4}") })
        })
        .collect();
    parts.extend(m.values.iter().map(|(k, v)| format!("{} {v}", printable(k))));
    parts.join(" ")
}

/// A job's best objective value: the built-in CNN's validation accuracy in %, a command job's
/// metric as it reported it (6 significant digits).
pub fn best_text(job: &pb::Job) -> String {
    if job.variant.parse::<sweep_proto::LossVariant>().is_ok() {
        format!("{:.2}%", 100.0 * job.best_value)
    } else {
        let rounded: f64 = format!("{:.5e}", job.best_value).parse().unwrap_or(job.best_value);
        format!("{rounded}")
    }
}

/// A job's state change as one line: `job #3 natural_softmax seed 1: running (attempt 2/3 on gpu-1)`.
pub fn job_line(job: &pb::Job) -> String {
    let state = sweep_proto::convert::state_from_wire(job.state)
        .map_or_else(|_| format!("state {}", job.state), |s| s.to_string());
    let head = format!("job #{} {} seed {}: {state}", job.id, printable(&job.variant), job.seed);
    let detail = match pb::JobState::try_from(job.state) {
        Ok(pb::JobState::Running) => {
            format!(" (attempt {}/{} on {})", job.attempt, job.max_attempts, printable(&job.worker_id))
        }
        Ok(pb::JobState::Succeeded) => {
            format!(" (best {} at epoch {})", best_text(job), job.best_epoch)
        }
        Ok(pb::JobState::Queued) if job.attempt > 1 => {
            format!(" again as attempt {}/{}{}", job.attempt, job.max_attempts, reason(&job.last_error))
        }
        Ok(pb::JobState::Failed) => reason(&job.last_error),
        _ => String::new(),
    };
    head + &detail
}

fn reason(error: &str) -> String {
    match error.lines().next() {
        Some(first) if !first.is_empty() => format!(": {}", printable(first)),
        _ => String::new(),
    }
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
                let _ = self.multi.println(job_line(job));
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
