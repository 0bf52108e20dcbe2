//! The fused step on the CPU (where nothing records: op by op, as asked) and on CUDA, recorded
//! and replayed against op by op (GPU test).

use burn::backend::{Autodiff, Flex};

use super::*;
use crate::model::{Cnn, CnnConfig, seeded_model};
use crate::training::adam;

/// Trains the models of `seeds`, stacked, on `sizes.len()` batches per job (sizes in turn)
/// through `stepper`, restacking them after step `restack_after`; returns each step's losses,
/// the state at the end and the batch per job it ended replaying, if any.
fn train<B: TrainBackend>(
    mut stepper: FusedStepper<B>,
    kernels: Kernels,
    (seeds, sizes, restack_after): (&[u64], &[usize], usize),
    device: &B::Device,
) -> (Vec<f32>, Vec<Vec<f32>>, Option<usize>) {
    let config = CnnConfig::new().with_width_multiplier(0.25);
    let models: Vec<Cnn<B>> =
        seeds.iter().map(|&s| seeded_model::<B>(&config, s, device).with_kernels(kernels)).collect();
    let stack = |models: &[Cnn<B>]| {
        let refs: Vec<&Cnn<B>> = models.iter().collect();
        let model = FusedCnn::stack(&refs).expect("one shape");
        let ids: Vec<_> = models.iter().map(FusedCnn::trainable_ids).collect();
        let optim = StackedAdam::stack(&vec![&adam().init::<B>(); models.len()], &ids, &model.trainables());
        (model, optim)
    };
    let (mut model, mut optim) = stack(&models);
    let variants = [LossVariant::NaturalSoftmax, LossVariant::NormalLr1e3, LossVariant::MultiSoftmax];
    let (k, learning_rates) = (seeds.len(), [1e-3, 2e-3, 5e-4]);
    let mut losses = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let pixels: Vec<f32> =
            (0..k * n * 3 * 32 * 32).map(|j| ((j * 7_919 + i * 104_729) % 1_000) as f32 / 1_000.0).collect();
        let images = Tensor::<B, 4>::from_data(TensorData::new(pixels, [k * n, 3, 32, 32]), device);
        let labels: Vec<i64> = (0..(k * n) as i64).map(|j| (j * 3 + i as i64) % 10).collect();
        let labels = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [k * n]), device);
        let batch = (images, labels);
        let outputs = stepper
            .step(&mut model, &mut optim, batch, &variants[..k], &learning_rates[..k])
            .expect("a step");
        losses.extend(outputs.losses.into_iter().map(|l| l.into_scalar().elem::<f32>()));
        if i == restack_after {
            // As at an epoch's end: every job its own model again, then stacked anew.
            let parts: Vec<Cnn<B>> = (0..k).map(|j| model.member(j, &models[j])).collect();
            (model, optim) = (FusedCnn::stack(&parts.iter().collect::<Vec<_>>()).expect("one shape"), optim);
            stepper.restacked();
        }
    }
    let state: Vec<_> = state(&model, &optim).into_iter().map(|t| values::<B>(t)).collect();
    (losses, state, stepper.replay.as_ref().map(|r| r.batch))
}

fn values<B: TrainBackend>(t: FloatTensor<Inner<B>>) -> Vec<f32> {
    let flat = Inner::<B>::float_reshape(t.clone(), [t.shape().num_elements()].into());
    wrap::<Inner<B>, 1>(flat).into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

#[test]
fn where_nothing_records_a_fused_stepper_asked_to_record_steps_op_by_op() {
    type B = Autodiff<Flex>;
    let device = Default::default();
    let kernels = Kernels { replay_step: true, ..Kernels::FAST };
    let sizes = [4, 4, 4, 4, 4, 3, 4];
    let run = |kernels| train::<B>(FusedStepper::new(kernels), kernels, (&[3, 4], &sizes, 2), &device);
    let (losses, state, replaying) = run(kernels);
    assert_eq!(replaying, None, "the CPU backend records nothing");
    assert_eq!(losses.len(), 2 * sizes.len(), "a loss per job and step");
    let (expected_losses, expected_state, _) = run(Kernels::FAST);
    assert_eq!(losses, expected_losses);
    assert_eq!(state, expected_state);
}

/// A fused step recorded once and replayed trains as fused steps op by op do: the same losses
/// and, after a restack (the state taken into the graph's buffers), a smaller batch (op by op)
/// and more replays, the same weights, running statistics and Adam moments; the recorded step
/// is the full batch's.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_replayed_fused_steps_train_as_fused_steps_op_by_op() {
    use crate::backend::CudaDirectBackend;
    use crate::training::replay::tests::{assert_trains_alike, cuda_base_kernels};
    type C = CudaDirectBackend;
    let device = Default::default();
    let base = cuda_base_kernels();
    let eager = Kernels { direct_launch: true, ..base };
    let replayed = Kernels { replay_step: true, ..eager };
    // The warm-up ends on a smaller batch (an epoch's last), which is not the one recorded.
    let sizes = [32, 32, 32, 24, 32, 32, 32, 24, 32, 32];
    let run = |kernels| train::<C>(FusedStepper::new(kernels), kernels, (&[7, 8, 9], &sizes, 5), &device);
    let (losses, state, replaying) = run(replayed);
    let (expected_losses, expected_state, _) = run(eager);
    assert_eq!(replaying, Some(32), "{replayed}: the full batch's fused step was not recorded");
    let what = format!("{replayed}, fused");
    assert_trains_alike(&what, (&losses, &state), (&expected_losses, &expected_state));
}

/// Fused groups that train at once on one GPU, each from its own thread and so on its own
/// stream (worker slots that each train a group), record and replay their steps as they do
/// alone: cuDNN's grouped convolutions of one stream never run on another stream's handle.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_fused_groups_side_by_side_replay_as_they_do_alone() {
    use crate::backend::CudaDirectBackend;
    use crate::training::replay::tests::{assert_trains_alike, cuda_base_kernels, side_by_side};
    type C = CudaDirectBackend;
    let device = Default::default();
    let kernels = Kernels { direct_launch: true, replay_step: true, ..cuda_base_kernels() };
    let sizes = [32, 32, 32, 32, 24, 32, 32, 32];
    let groups: [&[u64]; 3] = [&[1, 2, 3], &[4, 5, 6], &[7, 8, 9]];
    let run = |seeds: &[u64]| train::<C>(FusedStepper::new(kernels), kernels, (seeds, &sizes, 4), &device);
    let alone: Vec<_> = groups.iter().map(|seeds| run(seeds)).collect();
    let together = side_by_side(&groups, |seeds| run(seeds));
    for ((seeds, (losses, state, replaying)), (expected_losses, expected_state, _)) in
        groups.iter().zip(&together).zip(&alone)
    {
        assert_eq!(
            *replaying,
            Some(32),
            "{kernels}: group {seeds:?}'s step was not recorded beside the others"
        );
        let what = format!("{kernels}, group {seeds:?}");
        assert_trains_alike(&what, (losses, state), (expected_losses, expected_state));
    }
    assert_ne!(alone[0].0, alone[1].0, "the groups differ");
}
