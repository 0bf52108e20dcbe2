//! Runs a command job: the sweep's own program in a child process (its GPU pinned, the job's
//! identity, parameters and resume state in its environment), its JSON-line metrics turned into
//! epochs, and its end: killed on cancellation, a lost lease or its time limit, asked to stop
//! (SIGTERM, then killed after a grace period) at shutdown, failed with the tail of its stderr
//! when it exits badly.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sweep_proto::domain::{
    CommandJob, EpochMetrics, JobAssignment, MAX_METRICS, NAMED_METRICS, is_metric_name,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::device::DeviceChoice;
use crate::training::JobOutcome;

/// Bytes of the child's stderr kept for the failure reason.
const STDERR_TAIL: usize = 4096;
/// Longest stdout line read (a longer one is cut).
const MAX_LINE: usize = 64 * 1024;
/// How often the child is checked for a stop request.
const POLL: Duration = Duration::from_millis(100);
/// How long a child asked to stop (SIGTERM) may take to exit before it is killed; shorter than
/// the uploader's drain, so the epochs it reports meanwhile are still delivered.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Whether, and how, a running command must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRequest {
    /// Keep running.
    No,
    /// The job is not this worker's any more (cancelled, lease lost): kill it at once.
    Now,
    /// The worker is stopping: SIGTERM, then a kill after [`STOP_GRACE`].
    Gracefully,
}

/// What the child has reported: epochs 1..=`covered` are stored or on their way (counting
/// from the epochs the coordinator already had), or why its reports broke the protocol.
#[derive(Debug, Default)]
struct Progress {
    covered: u32,
    broken: Option<String>,
}

/// Runs `command` for `job` until it exits or must stop; each metrics line becomes an epoch sent
/// to `epochs`. A `checkpoint_dir` is handed to the child to save and resume from.
pub async fn run_command(
    job: &JobAssignment,
    command: &CommandJob,
    device: &DeviceChoice,
    checkpoint_dir: Option<&Path>,
    epochs: mpsc::UnboundedSender<EpochMetrics>,
    stop: &(dyn Fn() -> StopRequest + Sync),
) -> Result<JobOutcome, String> {
    if let Some(dir) = checkpoint_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("could not create the checkpoint directory {}: {e}", dir.display()))?;
    }
    let mut child = spawn(job, command, device, checkpoint_dir)
        .map_err(|e| format!("could not start {:?}: {e}", command.argv[0]))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let progress = Arc::new(Mutex::new(Progress { covered: job.epochs_stored, broken: None }));
    let reader = tokio::spawn(read_metrics(job.fence.job_id, stdout, epochs, progress.clone()));
    let tail = tokio::spawn(stderr_tail(stderr));
    let deadline = command.timeout_seconds.map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
    let mut stopping_since: Option<Instant> = None;
    let broken = || progress.lock().unwrap_or_else(|e| e.into_inner()).broken.clone();
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = tokio::time::sleep(POLL) => {
                let request = stop();
                let graceful_over = stopping_since.is_some_and(|t| t.elapsed() >= STOP_GRACE);
                if request == StopRequest::Now || graceful_over {
                    kill(&mut child).await;
                    let _ = reader.await;
                    return Ok(JobOutcome::Stopped { epochs_done: covered(&progress) });
                }
                if request == StopRequest::Gracefully && stopping_since.is_none() {
                    info!(job = job.fence.job_id, grace = ?STOP_GRACE, "asking the command to stop (SIGTERM)");
                    terminate(&child);
                    stopping_since = Some(Instant::now());
                }
                let why = if let Some(why) = broken() {
                    why
                } else if deadline.is_some_and(|d| Instant::now() >= d) {
                    format!("timed out after {} s (the sweep's timeout_seconds)", command.timeout_seconds.unwrap_or(0))
                } else {
                    continue;
                };
                kill(&mut child).await;
                let _ = reader.await;
                return Err(format!("{why}{}", tail_text(tail.await.unwrap_or_default())));
            }
        }
    };
    // Every line the child wrote is read before the end is judged.
    let _ = reader.await;
    let stderr = tail.await.unwrap_or_default();
    let done = covered(&progress);
    if let Some(why) = broken() {
        return Err(format!("{why}{}", tail_text(stderr)));
    }
    match status {
        Err(e) => Err(format!("could not wait for the command: {e}")),
        Ok(s) if s.success() && done >= job.epochs => {
            Ok(JobOutcome::Completed { best_val_acc: 0.0, best_epoch: 0, epochs: done })
        }
        // Asked to stop, it stopped: the job goes back to the queue, whatever its exit status.
        Ok(_) if stopping_since.is_some() => Ok(JobOutcome::Stopped { epochs_done: done }),
        Ok(s) if !s.success() => Err(format!("the command {}{}", exit_text(s), tail_text(stderr))),
        Ok(_) => Err(format!(
            "the command exited after reporting {done} of {} epochs (print one JSON line per epoch){}",
            job.epochs,
            tail_text(stderr)
        )),
    }
}

fn covered(progress: &Mutex<Progress>) -> u32 {
    progress.lock().unwrap_or_else(|e| e.into_inner()).covered
}

fn spawn(
    job: &JobAssignment,
    command: &CommandJob,
    device: &DeviceChoice,
    checkpoint_dir: Option<&Path>,
) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&command.argv[0]);
    cmd.args(&command.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .envs(&command.env)
        .env("SWEEP_JOB_ID", job.fence.job_id.to_string())
        .env("SWEEP_SEED", job.seed.to_string())
        .env("SWEEP_ATTEMPT", job.fence.attempt.to_string())
        .env("SWEEP_EPOCHS", job.epochs.to_string())
        .env("SWEEP_SWEEP", &job.sweep)
        // A checkpoint of a later epoch than this must not be resumed from: the epochs between
        // would never be reported.
        .env("SWEEP_EPOCHS_STORED", job.epochs_stored.to_string())
        // The slot's GPU only; none on a CPU slot.
        .env(
            "CUDA_VISIBLE_DEVICES",
            match device {
                DeviceChoice::Cuda(i) => i.to_string(),
                DeviceChoice::Cpu => String::new(),
            },
        );
    for (name, value) in &command.params {
        cmd.env(format!("SWEEP_PARAM_{}", env_name(name)), value);
    }
    if let Some(dir) = checkpoint_dir {
        cmd.env("SWEEP_JOB_CHECKPOINT_DIR", dir);
    }
    if let Some(dir) = &command.workdir {
        cmd.current_dir(dir);
    }
    // Its own process group, so a kill reaches what it started too (a shell's children, data
    // loader processes) and none of them keeps its stdout open.
    #[cfg(unix)]
    cmd.process_group(0);
    cmd.spawn()
}

/// Kills the child's process group (the child alone where there are none) and reaps the child.
async fn kill(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let _ = child.kill().await;
}

/// Asks the child's process group to stop (SIGTERM), so it can save its state first.
fn terminate(child: &tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
}

/// A parameter name as an environment variable suffix: upper case, `.` and `-` as `_`.
fn env_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

fn exit_text(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return format!("was killed by signal {signal}");
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "ended abnormally".into(),
    }
}

fn tail_text(tail: String) -> String {
    if tail.trim().is_empty() { String::new() } else { format!("; stderr ends with:\n{}", tail.trim_end()) }
}

/// Reads the child's stdout: metrics lines become epochs, every other line goes to the log. An
/// epoch past the next one missing (a resume from a checkpoint the coordinator has no epochs
/// up to) or a malformed metrics line breaks the job: its epochs would be incomplete or wrong.
async fn read_metrics(
    job_id: i64,
    stdout: impl AsyncRead + Unpin,
    epochs: mpsc::UnboundedSender<EpochMetrics>,
    progress: Arc<Mutex<Progress>>,
) {
    let mut lines = BufReader::new(stdout).lines();
    let mut last = Instant::now();
    while let Ok(Some(mut line)) = lines.next_line().await {
        line.truncate(MAX_LINE);
        let mut progress = progress.lock().unwrap_or_else(|e| e.into_inner());
        if progress.broken.is_some() {
            continue;
        }
        match parse_metrics(&line) {
            Some(Ok(mut m)) if m.epoch <= progress.covered + 1 => {
                m.wall_seconds = last.elapsed().as_secs_f64();
                last = Instant::now();
                progress.covered = progress.covered.max(m.epoch);
                // The receiver is gone once the lease is; the epoch is then unwanted.
                let _ = epochs.send(m);
            }
            Some(Ok(m)) => {
                progress.broken = Some(format!(
                    "the command reported epoch {} before epoch {} (resume only from a checkpoint \
                     of an epoch up to SWEEP_EPOCHS_STORED)",
                    m.epoch,
                    progress.covered + 1
                ))
            }
            Some(Err(why)) => {
                warn!(job = job_id, %why, "bad metrics line");
                progress.broken = Some(format!("a metrics line broke the protocol: {why}"));
            }
            None => info!(job = job_id, "{}", sweep_proto::text::printable(&line)),
        }
    }
}

/// A metrics line: a JSON object with an integer `epoch` ≥ 1 and numeric metrics (other values
/// are ignored). `None` for any other line, `Some(Err)` for a metrics line that breaks a rule.
pub fn parse_metrics(line: &str) -> Option<Result<EpochMetrics, String>> {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return None;
    }
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(trimmed) else { return None };
    let epoch = fields.get("epoch")?;
    let Some(epoch) = epoch.as_u64().filter(|e| *e >= 1 && *e <= u64::from(u32::MAX)) else {
        return Some(Err(format!("epoch {epoch} is not a whole number ≥ 1")));
    };
    let mut m = EpochMetrics { epoch: epoch as u32, ..Default::default() };
    for (name, value) in &fields {
        let Some(x) = value.as_f64() else { continue };
        if name == "epoch" || name == "wall_seconds" {
            continue;
        }
        if !x.is_finite() || !is_metric_name(name) {
            return Some(Err(format!("{name} = {value} is not a finite metric with a valid name")));
        }
        match name.as_str() {
            "train_loss" => m.train_loss = Some(x),
            "train_acc" => m.train_acc = Some(x),
            "val_loss" => m.val_loss = Some(x),
            "val_acc" => m.val_acc = Some(x),
            "images_per_sec" => m.images_per_sec = Some(x),
            _ if m.values.len() < MAX_METRICS && !NAMED_METRICS.contains(&name.as_str()) => {
                m.values.insert(name.clone(), x);
            }
            _ => return Some(Err(format!("more than {MAX_METRICS} metrics"))),
        }
    }
    Some(Ok(m))
}

/// The last [`STDERR_TAIL`] bytes the child wrote to stderr (lines, lossily decoded).
async fn stderr_tail(stderr: impl AsyncRead + Unpin) -> String {
    let mut lines = BufReader::new(stderr).lines();
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut size = 0;
    while let Ok(Some(line)) = lines.next_line().await {
        let line = sweep_proto::text::printable(&line).into_owned();
        size += line.len() + 1;
        tail.push_back(line);
        while size > STDERR_TAIL && tail.len() > 1 {
            size -= tail.pop_front().map_or(0, |l| l.len() + 1);
        }
    }
    let text: Vec<String> = tail.into_iter().collect();
    let text = text.join("\n");
    let skip = text.chars().count().saturating_sub(STDERR_TAIL);
    text.chars().skip(skip).collect()
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
