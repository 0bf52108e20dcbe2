//! Training checkpoints: everything a job needs to continue exactly where it stopped — the
//! model's weights and BatchNorm statistics, Adam's moments and step counts, the data order and
//! its generator's position, the epoch and the best accuracy so far — in files that carry their
//! own checksum, kept per job in a [`CheckpointStore`].
//!
//! File layout: the magic `SWEEPCKPT1`, a little-endian `u32` header length, the JSON
//! [`Header`], the data order (`u32` each), the model record and the optimizer record (burn's
//! bincode records, full precision), then the MD5 of everything before it. A file whose length,
//! magic or checksum is off is [`CheckpointError::Corrupt`] and the store falls back to an older
//! one (or to the start).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder, RecorderError};
use md5::{Digest, Md5};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use crate::model::Cnn;
use crate::train_ops::TrainBackend;
use crate::train_ops::adam::ModuleAdam;

const MAGIC: &[u8] = b"SWEEPCKPT1";
const CHECKSUM_BYTES: usize = 16;

/// What a checkpoint records besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The last finished epoch (training resumes with the next one).
    pub epoch: u32,
    /// Best validation accuracy up to `epoch` and the epoch that reached it.
    pub best_val_acc: f64,
    pub best_epoch: u32,
    /// The data-order generator's position in its stream (ChaCha words), as text: JSON has no
    /// 128-bit integers.
    pub rng_word_pos: String,
}

/// One job's state after an epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub header: Header,
    /// The training images' order after the epoch's shuffle (the next shuffle starts from it).
    pub order: Vec<u32>,
    /// The model's record (weights and BatchNorm running statistics).
    pub model: Vec<u8>,
    /// The optimizer's record (Adam's moments and update counts).
    pub optimizer: Vec<u8>,
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("checkpoint {path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("checkpoint state: {0}")]
    State(String),
}

impl Checkpoint {
    /// A program's own checkpoint file carried whole (a command job's), as the checkpoint after
    /// `epoch`: the bytes travel as its model record, with no data order or optimizer record.
    pub fn file(epoch: u32, bytes: Vec<u8>) -> Checkpoint {
        let header = Header { epoch, best_val_acc: 0.0, best_epoch: 0, rng_word_pos: String::new() };
        Checkpoint { header, order: Vec::new(), model: bytes, optimizer: Vec::new() }
    }

    /// The file bytes, checksum included.
    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).expect("a header always serialises");
        let mut out = Vec::with_capacity(
            MAGIC.len()
                + 4
                + header.len()
                + 16
                + 4 * self.order.len()
                + self.model.len()
                + self.optimizer.len(),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        for len in [self.order.len(), self.model.len(), self.optimizer.len()] {
            out.extend_from_slice(&(len as u32).to_le_bytes());
        }
        for index in &self.order {
            out.extend_from_slice(&index.to_le_bytes());
        }
        out.extend_from_slice(&self.model);
        out.extend_from_slice(&self.optimizer);
        let checksum = Md5::digest(&out);
        out.extend_from_slice(&checksum);
        out
    }

    /// Reads [`Checkpoint::encode`]'s bytes back, checking length, magic and checksum.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Checkpoint, CheckpointError> {
        let corrupt = |why: &str| CheckpointError::Corrupt { path: path.to_owned(), why: why.to_owned() };
        if bytes.len() < MAGIC.len() + 4 + CHECKSUM_BYTES || !bytes.starts_with(MAGIC) {
            return Err(corrupt("not a checkpoint file (magic or length)"));
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
        if Md5::digest(body).as_slice() != checksum {
            return Err(corrupt("checksum mismatch (truncated or altered)"));
        }
        let mut at = MAGIC.len();
        let mut take = |n: usize| -> Result<&[u8], CheckpointError> {
            let part = body.get(at..at + n).ok_or_else(|| corrupt("sections run past the end"))?;
            at += n;
            Ok(part)
        };
        let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
        let header_len = u32_at(take(4)?);
        let header: Header =
            serde_json::from_slice(take(header_len)?).map_err(|e| corrupt(&format!("header: {e}")))?;
        let [order_len, model_len, optimizer_len] = [take(4)?, take(4)?, take(4)?].map(u32_at);
        let order = take(4 * order_len)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4")))
            .collect();
        let model = take(model_len)?.to_vec();
        let optimizer = take(optimizer_len)?.to_vec();
        if at != body.len() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(Checkpoint { header, order, model, optimizer })
    }
}

pub mod directory;
pub mod remote;
pub mod saver;

pub use directory::DirectoryStore;
pub use remote::CoordinatorStore;
pub use saver::Saver;

/// A checkpoint's file name in a job's directory, `epoch-00042.ckpt`: the store's own and a
/// command job's (the Python client's `JobContext.checkpoint` writes the same).
pub fn file_name(epoch: u32) -> String {
    format!("epoch-{epoch:05}.ckpt")
}

/// Where a job's checkpoints live, keyed by a job key (e.g. `sweep/job-17`).
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    /// Keeps `checkpoint` as the job's newest, pruning old ones.
    fn save(&self, key: &str, checkpoint: &Checkpoint) -> Result<(), CheckpointError>;
    /// The job's newest readable checkpoint taken after an epoch no later than `max_epoch`;
    /// corrupt ones are skipped with a warning.
    fn latest(&self, key: &str, max_epoch: u32) -> Option<Checkpoint>;
    /// A directory of the job's own, for a program that checkpoints itself (a command job), or
    /// `None` where the store keeps no files on this machine.
    fn directory(&self, key: &str) -> Option<PathBuf> {
        let _ = key;
        None
    }
    /// Drops everything kept for the job (it succeeded: nothing will resume from it).
    fn forget(&self, key: &str) {
        let _ = key;
    }
}

/// When a job checkpoints: after every `every`-th epoch, but not sooner than `min_interval`
/// after its previous checkpoint (or its start), and always when it is asked to stop. Reading
/// the tensors to the host pauses the job (the write does not: [`Saver`]), and the time floor
/// bounds how much of a run goes to that and to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub every: u32,
    pub min_interval: Duration,
}

impl Cadence {
    /// After every `epochs`-th epoch (at least every one), `min_secs` apart at the least.
    pub fn new(epochs: u32, min_secs: u64) -> Cadence {
        Cadence { every: epochs.max(1), min_interval: Duration::from_secs(min_secs) }
    }

    /// After every `epochs`-th epoch, however soon.
    pub fn every(epochs: u32) -> Cadence {
        Cadence::new(epochs, 0)
    }

    /// Whether a checkpoint is due after `epoch`, `since_last` after the previous one.
    pub fn due(&self, epoch: u32, since_last: Duration) -> bool {
        epoch.is_multiple_of(self.every.max(1)) && since_last >= self.min_interval
    }
}

/// How a run checkpoints: the store, the job's key in it and the cadence.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    pub store: std::sync::Arc<dyn CheckpointStore>,
    pub key: String,
    /// When to save (the run resumes from the newest).
    pub cadence: Cadence,
    /// Resume from no later than this epoch: the last one the coordinator has stored, so that
    /// an epoch reported but lost on its way is trained and reported again.
    pub resume_at_most: u32,
}

/// The model, optimizer and data order of a run as a checkpoint after `epoch`.
pub fn capture<B: TrainBackend>(
    model: &Cnn<B>,
    optim: &ModuleAdam<B>,
    order: &[i64],
    rng: &ChaCha12Rng,
    [epoch, best_epoch]: [u32; 2],
    best_val_acc: f64,
) -> Result<Checkpoint, CheckpointError> {
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let state = |e: RecorderError| CheckpointError::State(e.to_string());
    let model_bytes = Recorder::<B>::record(&recorder, model.clone().into_record(), ()).map_err(state)?;
    let optimizer = Optimizer::<Cnn<B>, B>::to_record(optim);
    let optimizer_bytes = Recorder::<B>::record(&recorder, optimizer, ()).map_err(state)?;
    Ok(Checkpoint {
        header: Header { epoch, best_val_acc, best_epoch, rng_word_pos: rng.get_word_pos().to_string() },
        order: order.iter().map(|&i| i as u32).collect(),
        model: model_bytes,
        optimizer: optimizer_bytes,
    })
}

/// A run's model, optimizer, data order and data-order generator.
pub type RunState<B> = (Cnn<B>, ModuleAdam<B>, Vec<i64>, ChaCha12Rng);

/// A run's state restored from `checkpoint` into a model and optimizer built as the run builds
/// them.
pub fn restore<B: TrainBackend>(
    checkpoint: &Checkpoint,
    model: Cnn<B>,
    optim: ModuleAdam<B>,
    seed: u64,
    device: &B::Device,
) -> Result<RunState<B>, CheckpointError> {
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let state = |e: RecorderError| CheckpointError::State(e.to_string());
    let record = Recorder::<B>::load(&recorder, checkpoint.model.clone(), device).map_err(state)?;
    let model = model.load_record(record);
    let record = Recorder::<B>::load(&recorder, checkpoint.optimizer.clone(), device).map_err(state)?;
    let optim = Optimizer::<Cnn<B>, B>::load_record(optim, record);
    let position: u128 = checkpoint
        .header
        .rng_word_pos
        .parse()
        .map_err(|e| CheckpointError::State(format!("generator position: {e}")))?;
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    rng.set_word_pos(position);
    Ok((model, optim, checkpoint.order.iter().map(|&i| i64::from(i)).collect(), rng))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small checkpoint after `epoch`.
    pub(crate) fn sample(epoch: u32) -> Checkpoint {
        Checkpoint {
            header: Header { epoch, best_val_acc: 0.5, best_epoch: 1, rng_word_pos: u128::MAX.to_string() },
            order: vec![3, 1, 2, 0],
            model: vec![1, 2, 3],
            optimizer: vec![9; 5],
        }
    }

    #[test]
    fn a_cadence_waits_for_its_epoch_and_its_interval() {
        let cadence = Cadence { every: 5, min_interval: Duration::from_secs(30) };
        assert!(!cadence.due(4, Duration::from_secs(60)), "not a fifth epoch");
        assert!(!cadence.due(5, Duration::from_secs(29)), "too soon after the last");
        assert!(cadence.due(10, Duration::from_secs(30)));
        assert!(Cadence::every(1).due(1, Duration::ZERO));
        assert_eq!(Cadence::every(0).every, 1, "every epoch at the least");
    }

    #[test]
    fn checkpoints_round_trip_and_damage_is_detected() {
        let path = Path::new("x.ckpt");
        let bytes = sample(4).encode();
        assert_eq!(Checkpoint::decode(&bytes, path).unwrap(), sample(4));
        let mut flipped = bytes.clone();
        flipped[MAGIC.len() + 6] ^= 1;
        assert!(matches!(Checkpoint::decode(&flipped, path), Err(CheckpointError::Corrupt { .. })));
        for cut in [0, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(Checkpoint::decode(&bytes[..cut], path).is_err(), "{cut} bytes");
        }
    }
}
