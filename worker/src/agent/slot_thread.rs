//! A slot's own OS thread for everything its runner does on the device ([`SlotThread`]). CubeCL
//! issues a thread's work to a stream chosen by that thread (the 129th thread to touch the GPU
//! shares the first one's), and a step recorded as a CUDA graph is recorded from, and replayed
//! on, one stream: on tokio's blocking pool any job could land on any thread, so two slots could
//! end up on one stream, one slot's work captured into the other's graph.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::mpsc;

use tokio::sync::oneshot;

type Task = Box<dyn FnOnce() + Send>;

/// One long-lived thread that runs a slot's tasks one after another; it ends when the value is
/// dropped.
#[derive(Debug)]
pub struct SlotThread {
    tasks: mpsc::Sender<Task>,
}

impl SlotThread {
    /// Starts the thread, named `name` (what a debugger or `top -H` shows), inside the calling
    /// tokio runtime's context where there is one, as its blocking pool's threads are (a
    /// checkpoint store blocks on the runtime's timers and network from there).
    pub fn spawn(name: String) -> std::io::Result<Self> {
        let (tasks, queue) = mpsc::channel::<Task>();
        let runtime = tokio::runtime::Handle::try_current().ok();
        std::thread::Builder::new().name(name).spawn(move || {
            let _entered = runtime.as_ref().map(|r| r.enter());
            for task in queue {
                task();
            }
        })?;
        Ok(SlotThread { tasks })
    }

    /// Runs `work` on the slot's thread once the tasks before it have run, without blocking the
    /// caller's executor; a panic in `work` resumes in the caller, and the thread goes on.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, answer) = oneshot::channel();
        let task: Task = Box::new(move || {
            let _ = done.send(catch_unwind(AssertUnwindSafe(work)));
        });
        self.tasks.send(task).expect("a slot's thread lives as long as its SlotThread");
        match answer.await {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => resume_unwind(panic),
            Err(_) => panic!("a slot's thread dropped a task"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[tokio::test]
    async fn every_task_runs_in_order_on_the_one_named_thread() {
        let slot = SlotThread::spawn("slot-test".into()).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let (first, second) = (order.clone(), order.clone());
        // The first task is queued first and takes longer; the second still runs after it.
        let (a, b) = tokio::join!(
            slot.run(move || {
                std::thread::sleep(Duration::from_millis(50));
                first.lock().unwrap().push(1);
                std::thread::current().id()
            }),
            slot.run(move || {
                second.lock().unwrap().push(2);
                (std::thread::current().id(), std::thread::current().name().map(str::to_owned))
            })
        );
        assert_eq!(*order.lock().unwrap(), [1, 2]);
        assert_eq!(a, b.0, "both tasks ran on the slot's one thread");
        assert_ne!(a, std::thread::current().id());
        assert_eq!(b.1.as_deref(), Some("slot-test"));
        let later = slot.run(|| std::thread::current().id()).await;
        assert_eq!(later, a, "a later task runs on the same thread");
    }

    #[tokio::test]
    async fn a_panicking_task_panics_its_caller_and_the_thread_goes_on() {
        let slot = Arc::new(SlotThread::spawn("slot-panics".into()).unwrap());
        let panicking = slot.clone();
        let failed = tokio::spawn(async move { panicking.run(|| -> u32 { panic!("boom") }).await }).await;
        assert!(failed.unwrap_err().is_panic());
        assert_eq!(slot.run(|| 7).await, 7);
    }

    #[tokio::test]
    async fn a_task_blocks_on_the_runtime_it_was_started_from() {
        let slot = SlotThread::spawn("slot-runtime".into()).unwrap();
        let runtime = tokio::runtime::Handle::current();
        // A timer created on the slot's thread needs the runtime's context there.
        let waited = slot
            .run(move || runtime.block_on(tokio::time::timeout(Duration::from_secs(5), async { 3 })))
            .await;
        assert_eq!(waited.unwrap(), 3);
    }
}
