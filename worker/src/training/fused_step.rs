//! A fused group's training step ([`FusedStepper`]): the stacked models' forward, each job's
//! loss, the backward and the stacked Adam update, run op by op ([`eager_fused_step`]) or, with
//! the kernels' `graph` part on a backend that records, captured once per group size and batch
//! size and replayed, as a single job's step is ([`super::replay`]).

use burn::prelude::*;
use burn::tensor::TensorMetadata;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps, IntTensor};
use sweep_proto::LossVariant;

use super::TrainError;
use super::replay::WarmUp;
use crate::loss::trained_loss;
use crate::model::{FusedCnn, NUM_CLASSES, side_by_side};
use crate::train_ops::adam::{StackedAdam, scalars_table};
use crate::train_ops::{GraphError, GraphOps, Kernels, StepGraph, TrainBackend, unwrap, wrap};

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// Pairs of a tensor and the one whose buffer it goes into.
type CopyPairs<B> = Vec<(FloatTensor<Inner<B>>, FloatTensor<Inner<B>>)>;

/// A fused step's results on the inner backend: each job's mean trained loss `[1]`, and the
/// logits `[K, N, 10]`.
pub struct FusedOutputs<B: TrainBackend> {
    pub losses: Vec<Tensor<Inner<B>, 1>>,
    pub logits: Tensor<Inner<B>, 3>,
}

/// One step of the `K` stacked jobs on their batches, op by op: `images` `[K·N, 3, 32, 32]`
/// and `labels` `[K·N]` model-major, job `j` on `variants[j]`'s trained loss at
/// `learning_rates[j]`.
pub fn eager_fused_step<B: TrainBackend>(
    model: &mut FusedCnn<B>,
    optim: &mut StackedAdam<B>,
    (images, labels): (Tensor<B, 4>, Tensor<B, 1, Int>),
    variants: &[LossVariant],
    learning_rates: &[f64],
) -> FusedOutputs<B> {
    let k = model.models();
    let n = labels.dims()[0] / k;
    let logits = model.forward(side_by_side(images, k));
    let mut losses = Vec::with_capacity(k);
    let mut total: Option<Tensor<B, 1>> = None;
    for (j, variant) in variants.iter().enumerate() {
        let job_logits = logits.clone().narrow(0, j, 1).reshape([n, NUM_CLASSES]);
        let loss = trained_loss(*variant, job_logits, labels.clone().narrow(0, j * n, n));
        losses.push(loss.clone().inner());
        total = Some(match total {
            Some(t) => t.add(loss),
            None => loss,
        });
    }
    // The jobs share no parameter, so the summed loss's gradients are each job's own.
    let mut grads = total.expect("at least one job").backward();
    let grads = model.gradients(&mut grads);
    let params = optim.step(model.trainables(), grads, learning_rates);
    model.set_trainables(params);
    FusedOutputs { losses, logits: logits.inner() }
}

/// A fused group's steps: op by op, or replayed once recorded (the kernels' `graph` part).
pub struct FusedStepper<B: TrainBackend> {
    record: bool,
    /// The group size the steps so far had, and their warm-up at that size.
    models: usize,
    warm_up: WarmUp,
    replay: Option<FusedReplay<B>>,
    /// Whether the model and optimizer hold the replay's state buffers.
    adopted: bool,
}

impl<B: TrainBackend> FusedStepper<B> {
    pub fn new(kernels: Kernels) -> Self {
        FusedStepper {
            record: kernels.replay_step,
            models: 0,
            warm_up: WarmUp::default(),
            replay: None,
            adopted: false,
        }
    }

    /// Whether steps of the recorded group and batch size now replay a graph.
    pub fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    /// The group's model and optimizer were stacked anew: the next replay first takes their
    /// state into its buffers.
    pub fn restacked(&mut self) {
        self.adopted = false;
    }

    /// One step as [`eager_fused_step`] takes it. A failure to record is logged and the group
    /// goes on op by op; a failed replay is the group's error.
    pub fn step(
        &mut self,
        model: &mut FusedCnn<B>,
        optim: &mut StackedAdam<B>,
        batch: (Tensor<B, 4>, Tensor<B, 1, Int>),
        variants: &[LossVariant],
        learning_rates: &[f64],
    ) -> Result<FusedOutputs<B>, TrainError> {
        let k = model.models();
        let n = batch.1.dims()[0] / k;
        if k != self.models {
            // A job left (or the first step): other shapes to warm up and record.
            (self.models, self.warm_up, self.replay) = (k, WarmUp::default(), None);
        }
        if let Some(replay) = self.replay.as_ref().filter(|r| r.batch == n && r.variants == variants) {
            if !self.adopted {
                replay.adopt(model, optim).map_err(device_error)?;
                self.adopted = true;
            }
            return replay.run(optim, batch, learning_rates).map_err(device_error);
        }
        if self.record && self.replay.is_none() && self.warm_up.ready(n) {
            match FusedReplay::record(model, optim, batch.clone(), variants, learning_rates) {
                Ok(replay) => {
                    let buffers = replay.graph.buffers;
                    tracing::info!(
                        models = k,
                        batch = n,
                        buffers,
                        "fused training step recorded; replaying it"
                    );
                    self.adopted = true;
                    let outputs = replay.run(optim, batch, learning_rates).map_err(device_error);
                    self.replay = Some(replay);
                    return outputs;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fused training step not recorded; it runs op by op");
                    self.record = false;
                }
            }
        }
        self.warm_up.stepped();
        // The step's new tensors are not the replay's buffers.
        self.adopted = false;
        Ok(eager_fused_step(model, optim, batch, variants, learning_rates))
    }
}

fn device_error(e: GraphError) -> TrainError {
    TrainError::Device(e.to_string())
}

/// What a step updates: the model's state ([`FusedCnn::state`]), then the optimizer's moments.
fn state<B: TrainBackend>(model: &FusedCnn<B>, optim: &StackedAdam<B>) -> Vec<FloatTensor<Inner<B>>> {
    model.state().into_iter().chain(optim.moments()).collect()
}

/// `model` and `optim` holding the tensors of `values` ([`state`]'s order).
fn hold<B: TrainBackend>(
    model: &mut FusedCnn<B>,
    optim: &mut StackedAdam<B>,
    values: &[FloatTensor<Inner<B>>],
) {
    let (model_state, moments) = values.split_at(values.len() - optim.moments().len());
    model.set_state(model_state.to_vec());
    optim.set_moments(moments.to_vec());
}

/// Each tensor of `new` with the one of `into` it replaces (same count, same order).
fn pairs<B: TrainBackend>(
    new: Vec<FloatTensor<Inner<B>>>,
    into: &[FloatTensor<Inner<B>>],
) -> Result<CopyPairs<B>, GraphError> {
    if new.len() != into.len() {
        return Err(GraphError::Cuda("the group's state changed its layout".into()));
    }
    Ok(new.into_iter().zip(into.iter().cloned()).collect())
}

/// A recorded fused step: its graph, the buffers it reads its inputs from, and those it leaves
/// its state and outputs in.
struct FusedReplay<B: TrainBackend> {
    graph: StepGraph,
    /// Images per job.
    batch: usize,
    /// Each job's loss, which the recorded step computes.
    variants: Vec<LossVariant>,
    images: FloatTensor<Inner<B>>,
    labels: IntTensor<Inner<B>>,
    /// The jobs' `[step_size, epsilon]` pairs.
    scalars: FloatTensor<Inner<B>>,
    /// The group's state ([`state`]), which every replay reads and leaves updated.
    state: Vec<FloatTensor<Inner<B>>>,
    losses: Vec<FloatTensor<Inner<B>>>,
    logits: FloatTensor<Inner<B>>,
}

impl<B: TrainBackend> FusedReplay<B> {
    /// Records one step on a batch of `batch`'s shape without running it; `model` and `optim`
    /// stay as they were, holding the graph's state buffers (on failure, their own).
    fn record(
        model: &mut FusedCnn<B>,
        optim: &mut StackedAdam<B>,
        (images, labels): (Tensor<B, 4>, Tensor<B, 1, Int>),
        variants: &[LossVariant],
        learning_rates: &[f64],
    ) -> Result<Self, GraphError> {
        let state_in = state(model, optim);
        let anchor = state_in.first().cloned().ok_or(GraphError::Unsupported)?;
        let device = Inner::<B>::float_device(&anchor);
        let images_in = Inner::<B>::float_buffer(&unwrap(images.inner()));
        let labels_in = Inner::<B>::int_buffer(&labels.inner().into_primitive());
        let scalars = scalars_table::<Inner<B>>(&optim.next_scalars(learning_rates), &device);
        let before = optim.clone();
        Inner::<B>::record_begin(&anchor)?;
        optim.read_scalars_from(Some(scalars.clone()));
        let batch = (
            Tensor::from_inner(wrap::<Inner<B>, 4>(images_in.clone())),
            Tensor::from_inner(Tensor::from_primitive(labels_in.clone())),
        );
        let outputs = eager_fused_step(model, optim, batch, variants, learning_rates);
        let copied =
            pairs::<B>(state(model, optim), &state_in).and_then(|p| Inner::<B>::copy_into(p, Vec::new()));
        let recorded = Inner::<B>::record_end(&anchor).and_then(|graph| copied.map(|()| graph));
        // Nothing of the recorded step has run: the optimizer (its update counts too) and the
        // model go back to their state before it.
        *optim = before;
        hold(model, optim, &state_in);
        Ok(FusedReplay {
            graph: recorded?,
            batch: labels_in.shape()[0] / model.models(),
            variants: variants.to_vec(),
            images: images_in,
            labels: labels_in,
            scalars,
            state: state_in,
            losses: outputs.losses.into_iter().map(unwrap).collect(),
            logits: unwrap(outputs.logits),
        })
    }

    /// One replay on `batch` (of the recorded size); the model already holds the state buffers.
    fn run(
        &self,
        optim: &mut StackedAdam<B>,
        (images, labels): (Tensor<B, 4>, Tensor<B, 1, Int>),
        learning_rates: &[f64],
    ) -> Result<FusedOutputs<B>, GraphError> {
        let device = Inner::<B>::float_device(&self.scalars);
        let scalars = scalars_table::<Inner<B>>(&optim.next_scalars(learning_rates), &device);
        let floats = vec![(unwrap(images.inner()), self.images.clone()), (scalars, self.scalars.clone())];
        Inner::<B>::copy_into(floats, vec![(labels.inner().into_primitive(), self.labels.clone())])?;
        Inner::<B>::replay(&self.graph, &self.scalars)?;
        optim.count_update();
        self.outputs()
    }

    /// Copies of the losses and logits the last replay wrote (the next one overwrites them).
    fn outputs(&self) -> Result<FusedOutputs<B>, GraphError> {
        let losses: Vec<_> = self.losses.iter().map(Inner::<B>::float_buffer).collect();
        let logits = Inner::<B>::float_buffer(&self.logits);
        let mut copies: Vec<_> = self.losses.iter().cloned().zip(losses.iter().cloned()).collect();
        copies.push((self.logits.clone(), logits.clone()));
        Inner::<B>::copy_into(copies, Vec::new())?;
        let losses = losses.into_iter().map(wrap::<Inner<B>, 1>).collect();
        Ok(FusedOutputs { losses, logits: wrap::<Inner<B>, 3>(logits) })
    }

    /// `model` and `optim` after steps op by op or a new stack: their state copied into the
    /// graph's buffers, which they hold again.
    fn adopt(&self, model: &mut FusedCnn<B>, optim: &mut StackedAdam<B>) -> Result<(), GraphError> {
        Inner::<B>::copy_into(pairs::<B>(state(model, optim), &self.state)?, Vec::new())?;
        hold(model, optim, &self.state);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
