//! Adam with burn's semantics (and Keras's defaults as the trainer sets them): every parameter
//! of a step updated by one fused call ([`ModuleAdam`], [`AdamOps::adam_update_many`]), or one
//! parameter at a time ([`FusedAdam`] as burn's `SimpleOptimizer`, [`AdamOps::adam_update`]).
//!
//! burn's `Adam` computes `m`, `v` and the step through about a dozen tensor operations per
//! parameter; on the GPU each one is a fusion-stream operation that the host records, so for
//! the model's 38 parameters the optimizer was a large part of the host time of a training step
//! (`worker bench` prints it as `host_ms`). [`FusedAdam`] does the same arithmetic in one
//! operation per parameter, [`ModuleAdam`] in one per step: on CUDA one kernel for all 29
//! parameters with a gradient, elsewhere burn's ops per parameter.

mod by_ops;
#[cfg(feature = "cuda")]
mod cuda;
mod stacked;

pub use by_ops::{scalars_table, update_by_ops, update_stacked_at, update_stacked_by_ops};
pub use stacked::{StackedAdam, model_part, stack_parts};

use std::collections::BTreeMap;

use hashbrown::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::{GradAdaptor, OptimizerAdaptor};
use burn::optim::{GradientsParams, MultiGradientsParams, Optimizer, SimpleOptimizer};
use burn::prelude::*;
use burn::record::Record;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{DType, FloatDType, TensorMetadata};

use super::{unwrap, wrap};

/// Adam's update as backend methods: the defaults are burn's ops ([`update_by_ops`]); burn's
/// CUDA backend runs each as one kernel (`cuda`).
pub trait AdamOps: Backend {
    /// Adam's update of one f32 parameter: `[param, grad, m, v]` (same shape, any layout) →
    /// `[param', m', v']` ([`FusedAdam`]).
    fn adam_update(inputs: [FloatTensor<Self>; 4], scalars: AdamScalars) -> [FloatTensor<Self>; 3] {
        let shape = inputs[0].shape();
        let flat = inputs.map(|t| wrap::<Self, 1>(Self::float_reshape(t, [shape.num_elements()].into())));
        update_by_ops(flat, scalars).map(|t| Self::float_reshape(unwrap(t), shape.clone()))
    }

    /// Adam's update of several f32 parameters at the same step, `[param, grad, m, v]` →
    /// `[param', m', v']` each, for the parameters of `scalars.len()` models stacked model-major
    /// ([`StackedAdam`]): model `j`'s part of every parameter is the `j`-th of `scalars.len()`
    /// equal runs of its elements (row-major), updated with `scalars[j]` (one entry: one model,
    /// [`ModuleAdam`]; the β's are the same for all). Default: burn's ops per parameter; the
    /// CUDA backend updates them all in one kernel, every gradient read in its own layout.
    fn adam_update_many(
        inputs: Vec<[FloatTensor<Self>; 4]>,
        scalars: &[AdamScalars],
    ) -> Vec<[FloatTensor<Self>; 3]> {
        match scalars {
            [one] => inputs.into_iter().map(|inputs| Self::adam_update(inputs, *one)).collect(),
            _ => inputs.into_iter().map(|inputs| update_stacked_by_ops::<Self>(inputs, scalars)).collect(),
        }
    }

    /// [`AdamOps::adam_update_many`] with each model's `[step_size, epsilon]` read from the
    /// device (`model_scalars`, `2 × models` f32), as a recorded step replays it with the
    /// scalars of each new step; the inputs are not used again. Default: burn's ops per
    /// parameter; CUDA: the same one kernel, which without the fusion stream writes into the
    /// buffers of `[param, m, v]` (a recorded step then leaves its state where the next replay
    /// reads it).
    fn adam_update_many_at(
        inputs: Vec<[FloatTensor<Self>; 4]>,
        model_scalars: FloatTensor<Self>,
        betas: (f32, f32),
    ) -> Vec<[FloatTensor<Self>; 3]> {
        inputs
            .into_iter()
            .map(|inputs| update_stacked_at::<Self>(inputs, model_scalars.clone(), betas))
            .collect()
    }
}

impl AdamOps for burn::backend::Flex {}

// Adam updates the inner backend's tensors; the autodiff backend only forwards.
impl<B: AdamOps, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> AdamOps
    for burn::backend::Autodiff<B, C>
{
}

/// Adam's hyper-parameters (no weight decay, no AMSGrad: what the experiment uses).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FusedAdam {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
}

/// The scalars of one update at step `t`, folded as burn's Adam folds them:
/// `param' = param − step_size · m' / (√v' + epsilon)` with
/// `step_size = lr · √(1−β₂ᵗ) / (1−β₁ᵗ)` and `epsilon = ε · √(1−β₂ᵗ)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamScalars {
    pub beta_1: f32,
    pub beta_2: f32,
    pub step_size: f32,
    pub epsilon: f32,
}

impl FusedAdam {
    /// The scalars of step `time` (1 for the first update) at learning rate `lr`.
    pub fn scalars(&self, lr: f64, time: usize) -> AdamScalars {
        let time = time as i32;
        let bias_correction_2 = (1.0 - self.beta_2.powi(time)).sqrt();
        let step_factor = bias_correction_2 / (1.0 - self.beta_1.powi(time));
        AdamScalars {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            step_size: (lr * step_factor as f64) as f32,
            epsilon: self.epsilon * bias_correction_2,
        }
    }

    /// The optimizer for autodiff backend `B`: every step's updates in one call.
    pub fn init<B: AutodiffBackend<InnerBackend: AdamOps>>(self) -> ModuleAdam<B> {
        ModuleAdam { adam: self, moments: HashMap::new(), scalars_at: None }
    }

    /// The optimizer for module `M` on autodiff backend `B` as burn's adaptor of a
    /// `SimpleOptimizer`: one update per parameter.
    pub fn init_per_parameter<B, M>(self) -> OptimizerAdaptor<Self, M, B>
    where
        B: AutodiffBackend<InnerBackend: AdamOps>,
        M: AutodiffModule<B>,
    {
        OptimizerAdaptor::from(self)
    }
}

/// One parameter's moments (in the parameter's shape) and the number of its updates so far.
#[derive(Clone)]
struct Moments<B: Backend> {
    moment_1: FloatTensor<B>,
    moment_2: FloatTensor<B>,
    time: usize,
}

/// Adam over a whole module: each step collects every parameter that has a gradient and
/// updates them with one [`AdamOps::adam_update_many`] per update count (normally one: all
/// parameters have been updated equally often). Same arithmetic and state as [`FusedAdam`]
/// through burn's adaptor; a parameter without a gradient keeps its value and moments.
#[derive(Clone)]
pub struct ModuleAdam<B: AutodiffBackend> {
    adam: FusedAdam,
    moments: HashMap<ParamId, Moments<B::InnerBackend>>,
    /// Where a recorded step reads its `[step_size, epsilon]` ([`ModuleAdam::read_scalars_from`]).
    scalars_at: Option<FloatTensor<B::InnerBackend>>,
}

impl<B: AutodiffBackend<InnerBackend: AdamOps>> ModuleAdam<B> {
    fn step_with<M: AutodiffModule<B>>(&mut self, lr: f64, module: M, grads: GradAdaptor) -> M {
        let mut collected = CollectParams::<B> { grads, params: Vec::new() };
        module.visit(&mut collected);
        let mut by_time: BTreeMap<usize, UpdateGroup<B::InnerBackend>> = BTreeMap::new();
        for CollectedParam { id, value: param, grad } in collected.params {
            let moments = self.moments.remove(&id).map(|m| Moments::<B::InnerBackend> {
                moment_1: reshaped_like::<B::InnerBackend>(m.moment_1, &param),
                moment_2: reshaped_like::<B::InnerBackend>(m.moment_2, &param),
                time: m.time,
            });
            // burn's first update (m = (1−β₁)·g, v = (1−β₂)·g²) is the update from zeros.
            let Moments { moment_1, moment_2, time } = moments.unwrap_or_else(|| {
                let zeros = || {
                    let device = B::InnerBackend::float_device(&param);
                    B::InnerBackend::float_zeros(param.shape(), &device, FloatDType::F32)
                };
                Moments::<B::InnerBackend> { moment_1: zeros(), moment_2: zeros(), time: 0 }
            });
            by_time.entry(time + 1).or_default().push((id, [param, grad, moment_1, moment_2]));
        }
        let mut updated = HashMap::new();
        for (time, group) in by_time {
            let (ids, inputs): (Vec<ParamId>, Vec<_>) = group.into_iter().unzip();
            let outputs = match &self.scalars_at {
                Some(at) => B::InnerBackend::adam_update_many_at(
                    inputs,
                    at.clone(),
                    (self.adam.beta_1, self.adam.beta_2),
                ),
                None => B::InnerBackend::adam_update_many(inputs, &[self.adam.scalars(lr, time)]),
            };
            for (id, [param, moment_1, moment_2]) in ids.into_iter().zip(outputs) {
                self.moments.insert(id, Moments { moment_1, moment_2, time });
                updated.insert(id, param);
            }
        }
        replace_params(module, updated)
    }
}

impl<B: AutodiffBackend> ModuleAdam<B> {
    /// The scalars of the next update at `lr` (every parameter updated as often, as here).
    pub fn next_scalars(&self, lr: f64) -> AdamScalars {
        let done = self.moments.values().map(|m| m.time).max().unwrap_or(0);
        self.adam.scalars(lr, done + 1)
    }

    /// Steps from now on read their `[step_size, epsilon]` from `at` (`2` f32 on the device,
    /// filled with [`ModuleAdam::next_scalars`] before each), or take them from the host.
    pub fn read_scalars_from(&mut self, at: Option<FloatTensor<B::InnerBackend>>) {
        self.scalars_at = at;
    }

    /// Counts an update that ran without this optimizer (a replayed step).
    pub fn count_update(&mut self) {
        self.moments.values_mut().for_each(|m| m.time += 1);
    }

    /// The moments of parameter `id`.
    pub fn moments(&self, id: ParamId) -> Option<[FloatTensor<B::InnerBackend>; 2]> {
        self.moments.get(&id).map(|m| [m.moment_1.clone(), m.moment_2.clone()])
    }

    /// Puts `moment` in place of parameter `id`'s first (`which` 0) or second moment (its
    /// update count kept).
    pub fn set_moment(&mut self, id: ParamId, which: usize, moment: FloatTensor<B::InnerBackend>) {
        if let Some(m) = self.moments.get_mut(&id) {
            *[&mut m.moment_1, &mut m.moment_2][which] = moment;
        }
    }
}

/// `tensor` in the shape of `like` (a loaded record's flat moments; free when it already is).
fn reshaped_like<B: Backend>(tensor: FloatTensor<B>, like: &FloatTensor<B>) -> FloatTensor<B> {
    reshaped_like_shape::<B>(tensor, like.shape())
}

/// `tensor` in `shape` (free when it already is).
fn reshaped_like_shape<B: Backend>(tensor: FloatTensor<B>, shape: burn::tensor::Shape) -> FloatTensor<B> {
    if tensor.shape() == shape { tensor } else { B::float_reshape(tensor, shape) }
}

/// Parameters updated together (same update count): each one's id and `[param, grad, m, v]`,
/// the input of [`AdamOps::adam_update_many`].
type UpdateGroup<B> = Vec<(ParamId, [FloatTensor<B>; 4])>;

/// A parameter that has a gradient, on the inner backend.
struct CollectedParam<B: Backend> {
    id: ParamId,
    value: FloatTensor<B>,
    grad: FloatTensor<B>,
}

/// Every float parameter that has a gradient, in the module's order.
struct CollectParams<B: AutodiffBackend> {
    grads: GradAdaptor,
    params: Vec<CollectedParam<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for CollectParams<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some((grad, _)) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let (value, grad) = (unwrap(param.val().inner()), unwrap(grad));
            self.params.push(CollectedParam { id: param.id, value, grad });
        }
    }
}

/// `module` with `values` in place of the parameters (and running states) of their ids, each
/// keeping its id, shape (a flat value is reshaped) and `require_grad`.
pub fn replace_params<B: AutodiffBackend, M: Module<B>>(
    module: M,
    values: HashMap<ParamId, FloatTensor<B::InnerBackend>>,
) -> M {
    module.map(&mut ReplaceParams::<B> { updated: values })
}

/// Puts the updated values in place of their parameters (same id, same `require_grad`).
struct ReplaceParams<B: AutodiffBackend> {
    updated: HashMap<ParamId, FloatTensor<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for ReplaceParams<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = match self.updated.remove(&id) {
            Some(value) => {
                let value = reshaped_like_shape::<B::InnerBackend>(value, tensor.shape());
                let value = Tensor::from_inner(wrap::<B::InnerBackend, D>(value));
                if tensor.is_require_grad() { value.require_grad() } else { value }
            }
            None => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

impl<B, M> Optimizer<M, B> for ModuleAdam<B>
where
    B: AutodiffBackend<InnerBackend: AdamOps>,
    M: AutodiffModule<B>,
{
    /// Each parameter's moments, flattened, and its update count.
    type Record = HashMap<ParamId, AdamMoments<B, 1>>;

    fn step(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        self.step_with(lr, module, grads.into())
    }

    fn step_multi(&mut self, lr: f64, module: M, grads: MultiGradientsParams) -> M {
        self.step_with(lr, module, grads.into())
    }

    fn to_record(&self) -> Self::Record {
        let flat = |t: &FloatTensor<B::InnerBackend>| {
            let n = t.shape().num_elements();
            Tensor::from_inner(wrap::<B::InnerBackend, 1>(t.clone()).reshape([n]))
        };
        let record = |m: &Moments<B::InnerBackend>| AdamMoments {
            moment_1: flat(&m.moment_1),
            moment_2: flat(&m.moment_2),
            time: m.time,
        };
        self.moments.iter().map(|(id, m)| (*id, record(m))).collect()
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        let moments = |m: AdamMoments<B, 1>| Moments {
            moment_1: unwrap(m.moment_1.inner()),
            moment_2: unwrap(m.moment_2.inner()),
            time: m.time,
        };
        self.moments = record.into_iter().map(|(id, m)| (id, moments(m))).collect();
        self
    }
}

/// Adam's state of one parameter: the two moments and the number of updates so far.
#[derive(Record, Clone)]
pub struct AdamMoments<B: Backend, const D: usize> {
    pub moment_1: Tensor<B, D>,
    pub moment_2: Tensor<B, D>,
    pub time: usize,
}

impl<B: AdamOps> SimpleOptimizer<B> for FusedAdam {
    type State<const D: usize> = AdamMoments<B, D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (moment_1, moment_2, time) = match state {
            Some(state) => (state.moment_1, state.moment_2, state.time),
            // burn's first update (m = (1−β₁)·g, v = (1−β₂)·g²) is the update from zeros; the
            // moments are f32 whatever the gradient's dtype.
            None => {
                let zeros = || Tensor::zeros(grad.shape(), (&grad.device(), DType::F32));
                (zeros(), zeros(), 0)
            }
        };
        let time = time + 1;
        let inputs = [tensor, grad, moment_1, moment_2].map(unwrap);
        let [tensor, moment_1, moment_2] = B::adam_update(inputs, self.scalars(lr, time)).map(wrap);
        (tensor, Some(AdamMoments { moment_1, moment_2, time }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        AdamMoments {
            moment_1: state.moment_1.to_device(device),
            moment_2: state.moment_2.to_device(device),
            time: state.time,
        }
    }
}

#[cfg(test)]
mod tests;
