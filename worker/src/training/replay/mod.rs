//! A job's training step ([`Stepper`]): forward, loss, backward and Adam as recorded op by op,
//! or, with the kernels' `graph` part on a backend that records ([`GraphOps`]), captured once
//! as a graph and replayed for every batch of that size on the same buffers: the host then
//! queues a copy of the batch, Adam's two scalars and one launch instead of ~200 operations.

use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn::tensor::ops::{FloatTensor, FloatTensorOps, IntTensor};
use hashbrown::HashMap;
use sweep_proto::LossVariant;

use super::TrainError;
use crate::loss::trained_loss;
use crate::model::Cnn;
use crate::train_ops::adam::{ModuleAdam, replace_params, scalars_table};
use crate::train_ops::{GraphError, GraphOps, Kernels, StepGraph, TrainBackend, unwrap, wrap};

mod warm_up;
pub use warm_up::WarmUp;

type Inner<B> = <B as burn::tensor::backend::AutodiffBackend>::InnerBackend;

/// Pairs of a tensor and the one whose buffer it goes into.
type CopyPairs<B> = Vec<(FloatTensor<Inner<B>>, FloatTensor<Inner<B>>)>;

/// A step's mean trained loss `[1]` and logits, on the inner backend.
type Outputs<B> = (Tensor<Inner<B>, 1>, Tensor<Inner<B>, 2>);

/// One step's results.
pub struct Stepped<B: TrainBackend> {
    pub model: Cnn<B>,
    /// The batch's mean trained loss `[1]` and its logits.
    pub loss: Tensor<Inner<B>, 1>,
    pub logits: Tensor<Inner<B>, 2>,
    /// Host time of forward and loss, backward, and the update (a replay's all in the first).
    pub phases: [Duration; 3],
}

/// One step as recorded op by op: `variant`'s trained loss on the batch, its gradients, Adam.
pub fn eager_step<B: TrainBackend>(
    model: Cnn<B>,
    optim: &mut ModuleAdam<B>,
    (images, labels): (Tensor<B, 4>, Tensor<B, 1, Int>),
    variant: LossVariant,
    learning_rate: f64,
) -> Stepped<B> {
    let started = Instant::now();
    let logits = model.forward(images);
    let loss = trained_loss(variant, logits.clone(), labels);
    let forward = started.elapsed();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let backward = started.elapsed();
    let model = optim.step(learning_rate, model, grads);
    let phases = [forward, backward - forward, started.elapsed() - backward];
    Stepped { model, loss: loss.inner(), logits: logits.inner(), phases }
}

/// A job's steps: op by op, or replayed once recorded (the kernels' `graph` part).
pub struct Stepper<B: TrainBackend> {
    record: bool,
    warm_up: WarmUp,
    replay: Option<Replay<B>>,
}

impl<B: TrainBackend> Stepper<B> {
    pub fn new(kernels: Kernels) -> Self {
        Stepper { record: kernels.replay_step, warm_up: WarmUp::default(), replay: None }
    }

    /// Whether steps of the recorded batch size now replay a graph.
    pub fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    /// One step of `model` on the batch. A failure to record is logged and the job goes on op
    /// by op; a failed replay is the job's error.
    pub fn step(
        &mut self,
        model: Cnn<B>,
        optim: &mut ModuleAdam<B>,
        batch: (Tensor<B, 4>, Tensor<B, 1, Int>),
        variant: LossVariant,
        learning_rate: f64,
    ) -> Result<Stepped<B>, TrainError> {
        let n = batch.0.dims()[0];
        if let Some(replay) = self.replay.as_ref().filter(|r| r.batch == n) {
            return replay.run(model, optim, batch, learning_rate).map_err(device_error);
        }
        if self.record && self.replay.is_none() && self.warm_up.ready(n) {
            match Replay::record(model.clone(), optim, batch.clone(), variant, learning_rate) {
                Ok((replay, model)) => {
                    tracing::info!(
                        batch = n,
                        buffers = replay.graph.buffers,
                        "training step recorded; replaying it"
                    );
                    let stepped = replay.run(model, optim, batch, learning_rate).map_err(device_error);
                    self.replay = Some(replay);
                    return stepped;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "training step not recorded; it runs op by op");
                    self.record = false;
                }
            }
        }
        self.warm_up.stepped();
        let stepped = eager_step(model, optim, batch, variant, learning_rate);
        match &self.replay {
            // Another batch size (an epoch's last batch): the graph's buffers take its state.
            Some(replay) => {
                Ok(Stepped { model: replay.adopt(stepped.model, optim).map_err(device_error)?, ..stepped })
            }
            None => Ok(stepped),
        }
    }
}

fn device_error(e: GraphError) -> TrainError {
    TrainError::Device(e.to_string())
}

/// What the model and optimizer hold, in the model's order: each parameter and running
/// statistic, then the Adam moments of each parameter that has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateKey {
    Param(ParamId),
    Moment(ParamId, usize),
}

fn state<B: TrainBackend>(model: &Cnn<B>, optim: &ModuleAdam<B>) -> Vec<(StateKey, FloatTensor<Inner<B>>)> {
    let mut params = Collect::<B> { found: Vec::new() };
    model.visit(&mut params);
    let moments: Vec<_> = params
        .found
        .iter()
        .filter_map(|(id, _)| optim.moments(*id).map(|m| (*id, m)))
        .flat_map(|(id, [m1, m2])| [(StateKey::Moment(id, 0), m1), (StateKey::Moment(id, 1), m2)])
        .collect();
    params.found.into_iter().map(|(id, t)| (StateKey::Param(id), t)).chain(moments).collect()
}

/// Every float parameter (running statistics included) of a module, on the inner backend.
struct Collect<B: TrainBackend> {
    found: Vec<(ParamId, FloatTensor<Inner<B>>)>,
}

impl<B: TrainBackend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let inner = param.val().inner().into_primitive();
        self.found.push((param.id, inner.tensor()));
    }
}

/// `model` and `optim` holding the tensors of `values` (the same keys as theirs).
fn point_at<B: TrainBackend>(
    model: Cnn<B>,
    optim: &mut ModuleAdam<B>,
    values: &[(StateKey, FloatTensor<Inner<B>>)],
) -> Cnn<B> {
    let mut params = HashMap::new();
    for (key, tensor) in values.iter().cloned() {
        match key {
            StateKey::Param(id) => drop(params.insert(id, tensor)),
            StateKey::Moment(id, which) => optim.set_moment(id, which, tensor),
        }
    }
    replace_params(model, params)
}

/// A recorded step: its graph, the buffers it reads its inputs from, and those it leaves its
/// state and outputs in.
struct Replay<B: TrainBackend> {
    graph: StepGraph,
    batch: usize,
    images: FloatTensor<Inner<B>>,
    labels: IntTensor<Inner<B>>,
    /// Adam's `[step_size, epsilon]`.
    scalars: FloatTensor<Inner<B>>,
    /// The model's and optimizer's state, which every replay reads and leaves updated.
    state: Vec<(StateKey, FloatTensor<Inner<B>>)>,
    loss: FloatTensor<Inner<B>>,
    logits: FloatTensor<Inner<B>>,
}

impl<B: TrainBackend> Replay<B> {
    /// Records one step of `model` on a batch of `batch`'s shape without running it; `model` and
    /// `optim` come back as they were, holding the graph's state buffers. On failure they too
    /// are as they were.
    fn record(
        model: Cnn<B>,
        optim: &mut ModuleAdam<B>,
        (images, labels): (Tensor<B, 4>, Tensor<B, 1, Int>),
        variant: LossVariant,
        learning_rate: f64,
    ) -> Result<(Self, Cnn<B>), GraphError> {
        let state_in = state(&model, optim);
        let anchor = state_in.first().map(|(_, t)| t.clone()).ok_or(GraphError::Unsupported)?;
        let device = Inner::<B>::float_device(&anchor);
        let images_in = Inner::<B>::float_buffer(&unwrap(images.inner()));
        let labels_in = Inner::<B>::int_buffer(&labels.inner().into_primitive());
        let scalars = scalars_tensor::<B>(optim, learning_rate, &device);
        let before = optim.clone();
        Inner::<B>::record_begin(&anchor)?;
        optim.read_scalars_from(Some(scalars.clone()));
        let batch = (
            wrap_inner::<B, 4>(images_in.clone()),
            Tensor::from_inner(Tensor::from_primitive(labels_in.clone())),
        );
        let stepped = eager_step(model, optim, batch, variant, learning_rate);
        let copied = state_pairs::<B>(state(&stepped.model, optim), &state_in)
            .and_then(|pairs| Inner::<B>::copy_into(pairs, Vec::new()));
        let recorded = Inner::<B>::record_end(&anchor).and_then(|graph| copied.map(|()| graph));
        // Nothing of the recorded step has run: the optimizer (its update counts too) and the
        // model's running statistics go back to their state before it.
        *optim = before;
        let model = point_at(stepped.model, optim, &state_in);
        let replay = Replay {
            graph: recorded?,
            batch: images_in.shape()[0],
            images: images_in,
            labels: labels_in,
            scalars,
            state: state_in,
            loss: unwrap(stepped.loss),
            logits: unwrap(stepped.logits),
        };
        Ok((replay, model))
    }

    /// One replay on `batch` (of the recorded size); `model` already holds the state buffers.
    fn run(
        &self,
        model: Cnn<B>,
        optim: &mut ModuleAdam<B>,
        (images, labels): (Tensor<B, 4>, Tensor<B, 1, Int>),
        learning_rate: f64,
    ) -> Result<Stepped<B>, GraphError> {
        let started = Instant::now();
        let device = Inner::<B>::float_device(&self.scalars);
        let scalars = scalars_tensor::<B>(optim, learning_rate, &device);
        let floats = vec![(unwrap(images.inner()), self.images.clone()), (scalars, self.scalars.clone())];
        Inner::<B>::copy_into(floats, vec![(labels.inner().into_primitive(), self.labels.clone())])?;
        Inner::<B>::replay(&self.graph, &self.scalars)?;
        optim.count_update();
        let (loss, logits) = self.outputs()?;
        Ok(Stepped { model, loss, logits, phases: [started.elapsed(), Duration::ZERO, Duration::ZERO] })
    }

    /// Copies of the loss and logits the last replay wrote (the next one overwrites them).
    fn outputs(&self) -> Result<Outputs<B>, GraphError> {
        let (loss, logits) = (Inner::<B>::float_buffer(&self.loss), Inner::<B>::float_buffer(&self.logits));
        let pairs = vec![(self.loss.clone(), loss.clone()), (self.logits.clone(), logits.clone())];
        Inner::<B>::copy_into(pairs, Vec::new())?;
        Ok((wrap::<Inner<B>, 1>(loss), wrap::<Inner<B>, 2>(logits)))
    }

    /// `model` and `optim` after a step op by op: their new state copied into the graph's
    /// buffers, which they hold again.
    fn adopt(&self, model: Cnn<B>, optim: &mut ModuleAdam<B>) -> Result<Cnn<B>, GraphError> {
        Inner::<B>::copy_into(state_pairs::<B>(state(&model, optim), &self.state)?, Vec::new())?;
        Ok(point_at(model, optim, &self.state))
    }
}

/// Each tensor of `new` with the one of `into` it replaces (the same keys in the same order).
fn state_pairs<B: TrainBackend>(
    new: Vec<(StateKey, FloatTensor<Inner<B>>)>,
    into: &[(StateKey, FloatTensor<Inner<B>>)],
) -> Result<CopyPairs<B>, GraphError> {
    if new.len() != into.len() || new.iter().zip(into).any(|((a, _), (b, _))| a != b) {
        return Err(GraphError::Cuda("the model's or optimizer's state changed its layout".into()));
    }
    Ok(new.into_iter().zip(into).map(|((_, new), (_, into))| (new, into.clone())).collect())
}

/// Adam's `[step_size, epsilon]` for the optimizer's next update, on `device`.
fn scalars_tensor<B: TrainBackend>(
    optim: &ModuleAdam<B>,
    learning_rate: f64,
    device: &burn::tensor::Device<Inner<B>>,
) -> FloatTensor<Inner<B>> {
    scalars_table::<Inner<B>>(&[optim.next_scalars(learning_rate)], device)
}

fn wrap_inner<B: TrainBackend, const D: usize>(t: FloatTensor<Inner<B>>) -> Tensor<B, D> {
    Tensor::from_inner(wrap::<Inner<B>, D>(t))
}

#[cfg(test)]
pub(crate) mod tests;
