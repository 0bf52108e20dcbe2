//! [`Saver`]: a job's checkpoint writes off its training thread, one at a time and in order.
//!
//! Capturing a checkpoint reads the tensors to the host and must happen between steps; encoding
//! it and writing it (a file, or an upload to the coordinator) need not, so the next epoch trains
//! meanwhile. A newer save waits for the one before it, and the job waits for its last save
//! before it reports its end, so a stop's checkpoint is in place when the stop is reported.

use std::sync::Arc;
use std::thread::JoinHandle;

use super::{Checkpoint, CheckpointStore};

/// One job's checkpoint writer: at most one save in flight.
#[derive(Debug, Default)]
pub struct Saver {
    in_flight: Option<JoinHandle<()>>,
}

impl Saver {
    /// Starts writing `checkpoint` to `store` under `key` once the previous save has ended; a
    /// failed write is logged and the job goes on (it resumes from an older checkpoint, if any).
    pub fn save(&mut self, store: Arc<dyn CheckpointStore>, key: String, checkpoint: Checkpoint) {
        self.wait();
        let span = tracing::Span::current();
        let spawned = std::thread::Builder::new().name("checkpoint".into()).spawn(move || {
            let _entered = span.enter();
            write(&*store, &key, &checkpoint);
        });
        match spawned {
            Ok(handle) => self.in_flight = Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "checkpoint not saved: no thread to write it; the job goes on")
            }
        }
    }

    /// Blocks until the save in flight, if any, has ended.
    pub fn wait(&mut self) {
        if let Some(handle) = self.in_flight.take()
            && handle.join().is_err()
        {
            tracing::warn!("a checkpoint save panicked; the job goes on");
        }
    }
}

impl Drop for Saver {
    /// A job that ends by an error still leaves its last checkpoint whole.
    fn drop(&mut self) {
        self.wait();
    }
}

fn write(store: &dyn CheckpointStore, key: &str, checkpoint: &Checkpoint) {
    let epoch = checkpoint.header.epoch;
    match store.save(key, checkpoint) {
        Ok(()) => tracing::debug!(epoch, "checkpoint saved"),
        Err(e) => tracing::warn!(error = %e, epoch, "checkpoint not saved; the job goes on"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::time::Duration;

    use super::*;
    use crate::checkpoint::CheckpointError;
    use crate::checkpoint::tests::sample;

    /// A store whose saves each wait for a go-ahead, recording the epochs they wrote.
    #[derive(Debug)]
    struct Gated {
        go: Mutex<Receiver<()>>,
        saved: Mutex<Vec<u32>>,
    }

    impl CheckpointStore for Gated {
        fn save(&self, _key: &str, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
            self.go.lock().unwrap().recv().map_err(|_| CheckpointError::Io {
                path: PathBuf::from("gated"),
                source: std::io::Error::other("gate closed"),
            })?;
            self.saved.lock().unwrap().push(checkpoint.header.epoch);
            Ok(())
        }
        fn latest(&self, _key: &str, _max_epoch: u32) -> Option<Checkpoint> {
            None
        }
    }

    fn gated() -> (Arc<Gated>, Sender<()>) {
        let (go, gate) = channel();
        (Arc::new(Gated { go: Mutex::new(gate), saved: Mutex::new(Vec::new()) }), go)
    }

    #[test]
    fn a_save_returns_before_the_write_and_waiting_sees_it_written() {
        let (store, go) = gated();
        let mut saver = Saver::default();
        saver.save(store.clone(), "job".into(), sample(5));
        std::thread::sleep(Duration::from_millis(50));
        assert!(store.saved.lock().unwrap().is_empty(), "the write waits for its gate, the caller does not");
        go.send(()).unwrap();
        saver.wait();
        assert_eq!(*store.saved.lock().unwrap(), vec![5]);
    }

    #[test]
    fn saves_land_in_order_and_dropping_the_saver_finishes_the_last() {
        let (store, go) = gated();
        let releaser = std::thread::spawn(move || {
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(20));
                go.send(()).unwrap();
            }
        });
        {
            let mut saver = Saver::default();
            for epoch in [5, 10, 15] {
                saver.save(store.clone(), "job".into(), sample(epoch));
            }
        }
        assert_eq!(*store.saved.lock().unwrap(), vec![5, 10, 15], "the drop waited for epoch 15");
        releaser.join().unwrap();
    }
}
