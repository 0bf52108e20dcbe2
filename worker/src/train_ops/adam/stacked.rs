//! Adam over the parameters of several models stacked model-major ([`StackedAdam`]): one
//! update of every model's parameters per step, each model at its own learning rate and update
//! count, stacked from and unstacked to each model's own [`ModuleAdam`].

use burn::module::ParamId;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{FloatDType, TensorMetadata};
use hashbrown::HashMap;

use super::{AdamOps, AdamScalars, FusedAdam, ModuleAdam, Moments};
use crate::train_ops::{unwrap, wrap};

/// The optimizer of `K` models whose parameters lie stacked model-major: parameter `i` is one
/// tensor whose `j`-th of `K` equal runs of elements is model `j`'s (conv weights
/// `[K·C_out, …]`, the head's `[K, …]`).
pub struct StackedAdam<B: AutodiffBackend> {
    adam: FusedAdam,
    /// Each parameter's two moments, in the stacked parameter's shape.
    moments: Vec<[FloatTensor<B::InnerBackend>; 2]>,
    /// Each model's updates so far.
    times: Vec<usize>,
    /// Where a recorded step reads the models' `[step_size, epsilon]` pairs
    /// ([`StackedAdam::read_scalars_from`]).
    scalars_at: Option<FloatTensor<B::InnerBackend>>,
}

impl<B: AutodiffBackend> Clone for StackedAdam<B> {
    fn clone(&self) -> Self {
        let (moments, times, scalars_at) =
            (self.moments.clone(), self.times.clone(), self.scalars_at.clone());
        StackedAdam { adam: self.adam, moments, times, scalars_at }
    }
}

/// Model `j`'s run of `K`: the `j`-th of `models` equal runs of `t`'s elements, flat.
pub fn model_part<B: Backend>(t: &FloatTensor<B>, j: usize, models: usize) -> FloatTensor<B> {
    let n = t.shape().num_elements();
    let len = n / models;
    unwrap(wrap::<B, 1>(B::float_reshape(t.clone(), [n].into())).narrow(0, j * len, len))
}

/// The models' runs `parts` (flat or any shape, model-major) laid one after the other in `shape`.
pub fn stack_parts<B: Backend>(parts: Vec<FloatTensor<B>>, shape: burn::tensor::Shape) -> FloatTensor<B> {
    let flat = parts.into_iter().map(|p| {
        let n = p.shape().num_elements();
        wrap::<B, 1>(B::float_reshape(p, [n].into()))
    });
    B::float_reshape(unwrap(Tensor::cat(flat.collect(), 0)), shape)
}

impl<B: AutodiffBackend<InnerBackend: AdamOps>> StackedAdam<B> {
    /// The optimizers `optims` of `K ≥ 1` models as one, for the stacked parameters `params`:
    /// model `j`'s `i`-th parameter is `ids[j][i]`. A parameter a model has not updated yet
    /// starts from zero moments.
    pub fn stack(
        optims: &[&ModuleAdam<B>],
        ids: &[Vec<ParamId>],
        params: &[FloatTensor<B::InnerBackend>],
    ) -> Self {
        let models = optims.len();
        let times = optims
            .iter()
            .zip(ids)
            .map(|(optim, ids)| ids.iter().filter_map(|id| optim.moments.get(id)).map(|m| m.time).max())
            .map(Option::unwrap_or_default)
            .collect();
        let moments = params
            .iter()
            .enumerate()
            .map(|(i, param)| {
                let part_len = param.shape().num_elements() / models;
                let device = B::InnerBackend::float_device(param);
                let zeros = || B::InnerBackend::float_zeros([part_len].into(), &device, FloatDType::F32);
                let parts = |which: fn(&Moments<B::InnerBackend>) -> &FloatTensor<B::InnerBackend>| {
                    let part = |(optim, ids): (&&ModuleAdam<B>, &Vec<ParamId>)| {
                        optim.moments.get(&ids[i]).map_or_else(zeros, |m| which(m).clone())
                    };
                    stack_parts::<B::InnerBackend>(optims.iter().zip(ids).map(part).collect(), param.shape())
                };
                [parts(|m| &m.moment_1), parts(|m| &m.moment_2)]
            })
            .collect();
        StackedAdam { adam: optims[0].adam, moments, times, scalars_at: None }
    }

    /// Model `j`'s optimizer, its moments under its parameters' `ids` (as [`StackedAdam::stack`]
    /// took them): what it would be had the model trained alone.
    pub fn unstack(&self, j: usize, ids: &[ParamId]) -> ModuleAdam<B> {
        let mut optim = self.adam.init::<B>();
        let (models, time) = (self.times.len(), self.times[j]);
        if time == 0 {
            return optim;
        }
        optim.moments = ids
            .iter()
            .zip(&self.moments)
            .map(|(id, [m1, m2])| {
                let (moment_1, moment_2) = (
                    model_part::<B::InnerBackend>(m1, j, models),
                    model_part::<B::InnerBackend>(m2, j, models),
                );
                (*id, Moments { moment_1, moment_2, time })
            })
            .collect::<HashMap<_, _>>();
        optim
    }

    /// One update of the stacked `params` with their `grads` (same order and shapes), model `j`
    /// at `learning_rates[j]`; returns the updated parameters.
    pub fn step(
        &mut self,
        params: Vec<FloatTensor<B::InnerBackend>>,
        grads: Vec<FloatTensor<B::InnerBackend>>,
        learning_rates: &[f64],
    ) -> Vec<FloatTensor<B::InnerBackend>> {
        assert_eq!(learning_rates.len(), self.times.len(), "one learning rate per model");
        for time in &mut self.times {
            *time += 1;
        }
        let scalars: Vec<_> =
            learning_rates.iter().zip(&self.times).map(|(lr, time)| self.adam.scalars(*lr, *time)).collect();
        let moments = std::mem::take(&mut self.moments);
        let inputs = params.into_iter().zip(grads).zip(moments).map(|((p, g), [m1, m2])| [p, g, m1, m2]);
        let outputs = match &self.scalars_at {
            Some(at) => B::InnerBackend::adam_update_many_at(
                inputs.collect(),
                at.clone(),
                (self.adam.beta_1, self.adam.beta_2),
            ),
            None => B::InnerBackend::adam_update_many(inputs.collect(), &scalars),
        };
        outputs
            .into_iter()
            .map(|[param, moment_1, moment_2]| {
                self.moments.push([moment_1, moment_2]);
                param
            })
            .collect()
    }

    /// Each model's scalars of its next update at its `learning_rates[j]`.
    pub fn next_scalars(&self, learning_rates: &[f64]) -> Vec<AdamScalars> {
        learning_rates.iter().zip(&self.times).map(|(lr, time)| self.adam.scalars(*lr, time + 1)).collect()
    }

    /// Steps from now on read the models' `[step_size, epsilon]` pairs from `at` (filled with
    /// [`StackedAdam::next_scalars`] before each), or take them from the host.
    pub fn read_scalars_from(&mut self, at: Option<FloatTensor<B::InnerBackend>>) {
        self.scalars_at = at;
    }

    /// Counts an update of every model that ran without this optimizer (a replayed step).
    pub fn count_update(&mut self) {
        self.times.iter_mut().for_each(|time| *time += 1);
    }

    /// Every parameter's two moments in turn.
    pub fn moments(&self) -> Vec<FloatTensor<B::InnerBackend>> {
        self.moments.iter().flat_map(|pair| pair.iter().cloned()).collect()
    }

    /// Puts `moments` ([`StackedAdam::moments`]' order and shapes) in place of the moments.
    pub fn set_moments(&mut self, moments: Vec<FloatTensor<B::InnerBackend>>) {
        assert_eq!(moments.len(), 2 * self.moments.len(), "two moments per parameter");
        let mut moments = moments.into_iter();
        for pair in &mut self.moments {
            *pair = [0; 2].map(|_| moments.next().expect("counted above"));
        }
    }
}
