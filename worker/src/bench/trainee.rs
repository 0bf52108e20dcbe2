//! What the step benchmark trains: one model and its optimizer, or several stacked as one.

use std::time::{Duration, Instant};

use burn::prelude::*;
use sweep_proto::LossVariant;

use crate::model::{Cnn, FusedCnn, FusionError};
use crate::train_ops::adam::{ModuleAdam, StackedAdam};
use crate::train_ops::{Kernels, TrainBackend};
use crate::training::{FusedStepper, Stepped, Stepper, TrainError, adam};

/// What the step benchmark trains: one model, or several stacked as one ([`FusedCnn`]).
// One value a run, moved once a step: boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
pub(super) enum Trainee<B: TrainBackend> {
    Single(Cnn<B>, ModuleAdam<B>, Stepper<B>),
    Fused(FusedCnn<B>, StackedAdam<B>, FusedStepper<B>),
}

impl<B: TrainBackend> Trainee<B> {
    pub(super) fn new(models: Vec<Cnn<B>>, kernels: Kernels) -> Result<Self, FusionError> {
        if let [model] = models.as_slice() {
            return Ok(Trainee::Single(model.clone(), adam().init::<B>(), Stepper::new(kernels)));
        }
        let fused = FusedCnn::stack(&models.iter().collect::<Vec<_>>())?;
        let optim = adam().init::<B>();
        let ids: Vec<_> = models.iter().map(FusedCnn::trainable_ids).collect();
        let optim = StackedAdam::stack(&vec![&optim; models.len()], &ids, &fused.trainables());
        Ok(Trainee::Fused(fused, optim, FusedStepper::new(kernels)))
    }

    /// One training step of every model on `images` and `labels` at learning rate 1e-3 on
    /// `variant`'s trained loss: the summed loss and the host time of forward and loss,
    /// backward, and the optimizer update (a replayed or fused step's all in the first).
    pub(super) fn step(
        self,
        images: &Tensor<B, 4>,
        labels: &Tensor<B, 1, Int>,
        variant: LossVariant,
    ) -> Result<(Self, Tensor<B, 1>, [Duration; 3]), TrainError> {
        let started = Instant::now();
        Ok(match self {
            Trainee::Single(model, mut optim, mut stepper) => {
                let batch = (images.clone(), labels.clone());
                let Stepped { model, loss, phases, .. } =
                    stepper.step(model, &mut optim, batch, variant, 1e-3)?;
                (Trainee::Single(model, optim, stepper), Tensor::from_inner(loss), phases)
            }
            Trainee::Fused(mut model, mut optim, mut stepper) => {
                // Every model on the same batch, model-major.
                let k = model.models();
                let batch =
                    (Tensor::cat(vec![images.clone(); k], 0), Tensor::cat(vec![labels.clone(); k], 0));
                let outputs =
                    stepper.step(&mut model, &mut optim, batch, &vec![variant; k], &vec![1e-3; k])?;
                let total = outputs.losses.into_iter().reduce(|a, b| a.add(b)).expect("at least two models");
                let phases = [started.elapsed(), Duration::ZERO, Duration::ZERO];
                (Trainee::Fused(model, optim, stepper), Tensor::from_inner(total), phases)
            }
        })
    }
}
