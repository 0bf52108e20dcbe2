//! The replayed training step on the CPU (where nothing records) and on CUDA (GPU test).

use super::*;
use burn::backend::{Autodiff, Flex};

use crate::model::{CnnConfig, seeded_model};
use crate::training::adam;

/// Every state tensor of a model and its optimizer, as f32 values in the model's order.
fn values<B: TrainBackend>(model: &Cnn<B>, optim: &ModuleAdam<B>) -> Vec<Vec<f32>> {
    values_of::<B>(&state(model, optim))
}

/// Trains model `seed` on `sizes.len()` batches (sizes in turn) through `stepper`; returns each
/// step's loss, the state at the end and the batch it ended replaying, if any. The batches are
/// the same whatever the seed and however many jobs train at once (no device RNG).
fn train<B: TrainBackend>(
    mut stepper: Stepper<B>,
    kernels: Kernels,
    (seed, sizes): (u64, &[usize]),
    device: &B::Device,
) -> (Vec<f32>, Vec<Vec<f32>>, Option<usize>) {
    let config = CnnConfig::new().with_width_multiplier(0.25);
    let mut model = seeded_model::<B>(&config, seed, device).with_kernels(kernels);
    let mut optim = adam().init::<B>();
    let mut losses = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let pixels: Vec<f32> =
            (0..n * 3 * 32 * 32).map(|j| ((j * 7_919 + i * 104_729) % 1_000) as f32 / 1_000.0).collect();
        let images = Tensor::<B, 4>::from_data(TensorData::new(pixels, [n, 3, 32, 32]), device);
        let labels: Vec<i64> = (0..n as i64).map(|j| (j * 3 + i as i64) % 10).collect();
        let labels = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [n]), device);
        let variant = LossVariant::NaturalSoftmax;
        let stepped = stepper.step(model, &mut optim, (images, labels), variant, 1e-3).unwrap();
        losses.push(stepped.loss.into_scalar().elem::<f32>());
        model = stepped.model;
    }
    (losses, values(&model, &optim), stepper.replay.as_ref().map(|r| r.batch))
}

/// The CUDA default's kernel set where cuDNN loads, `fast-bf16` where it does not (GPU tests).
#[cfg(feature = "cuda")]
pub(crate) fn cuda_base_kernels() -> Kernels {
    let cudnn = Kernels::FAST_BF16_CUDNN;
    match crate::train_ops::check_kernels(cudnn, crate::device::DeviceChoice::Cuda(0)) {
        Ok(()) => cudnn,
        Err(_) => Kernels::FAST_BF16,
    }
}

/// `run` of every input at once, each on a thread of its own (so on a stream of its own, as a
/// worker's slots are), started together; the results in the inputs' order.
#[cfg(feature = "cuda")]
pub(crate) fn side_by_side<I: Sync, T: Send>(inputs: &[I], run: impl Fn(&I) -> T + Sync) -> Vec<T> {
    let start = std::sync::Barrier::new(inputs.len());
    std::thread::scope(|scope| {
        let runs: Vec<_> = inputs
            .iter()
            .map(|input| {
                let (start, run) = (&start, &run);
                scope.spawn(move || {
                    start.wait();
                    run(input)
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    })
}

/// Asserts that a run's losses and state match the expected ones within the tolerance of
/// bf16 steps whose cuDNN algorithms may add in another order.
pub(crate) fn assert_trains_alike(
    what: &str,
    (losses, state): (&[f32], &[Vec<f32>]),
    expected: (&[f32], &[Vec<f32>]),
) {
    for (i, (a, b)) in losses.iter().zip(expected.0).enumerate() {
        assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{what}: step {i}'s loss {a} against {b}");
    }
    for (i, (a, b)) in state.iter().zip(expected.1).enumerate() {
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(err <= 2e-2 * scale.max(1e-6), "{what}: state tensor {i} off by {err} (scale {scale})");
    }
}

#[test]
fn where_nothing_records_a_stepper_asked_to_record_steps_op_by_op() {
    type B = Autodiff<Flex>;
    let device = Default::default();
    let kernels = Kernels { replay_step: true, ..Kernels::FAST };
    let sizes = [4, 4, 4, 4, 4, 3, 4];
    let (losses, state, replaying) = train::<B>(Stepper::new(kernels), kernels, (7, &sizes), &device);
    let (expected_losses, expected_state, _) =
        train::<B>(Stepper::new(Kernels::FAST), Kernels::FAST, (7, &sizes), &device);
    assert_eq!(replaying, None, "the CPU backend records nothing");
    assert_eq!(losses, expected_losses);
    assert_eq!(state, expected_state);
    assert!(losses.windows(2).all(|w| w[0] != w[1]), "every step trains: {losses:?}");
}

#[test]
fn adam_steps_alike_with_its_scalars_on_the_device_and_counts_replayed_updates() {
    type B = Autodiff<Flex>;
    let device = Default::default();
    let config = CnnConfig::new().with_width_multiplier(0.25);
    let model = seeded_model::<B>(&config, 3, &device);
    let images = crate::model::drawn(|| {
        Tensor::<B, 4>::random([4, 3, 32, 32], burn::tensor::Distribution::Default, &device)
    });
    let labels = Tensor::<B, 1, Int>::from_data([1, 2, 3, 4], &device);
    let batch = (images, labels);
    let normal = LossVariant::NormalLr1e3;
    let mut host = adam().init::<B>();
    let mut on_device = adam().init::<B>();
    let mut a = eager_step(model.clone(), &mut host, batch.clone(), normal, 1e-3).model;
    let mut b = eager_step(model, &mut on_device, batch.clone(), normal, 1e-3).model;
    for _ in 0..2 {
        a = eager_step(a, &mut host, batch.clone(), normal, 1e-3).model;
        let at = scalars_tensor::<B>(&on_device, 1e-3, &device);
        on_device.read_scalars_from(Some(at));
        b = eager_step(b, &mut on_device, batch.clone(), normal, 1e-3).model;
        on_device.read_scalars_from(None);
    }
    for (x, y) in values(&a, &host).iter().zip(values(&b, &on_device)) {
        let err = x.iter().zip(&y).fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        let scale = x.iter().fold(0.0f32, |m, p| m.max(p.abs()));
        assert!(err <= 1e-6 * scale.max(1e-3), "off by {err} at scale {scale}");
    }
    let third = adam().scalars(1e-3, 4);
    assert_eq!(host.next_scalars(1e-3), third);
    host.count_update();
    assert_eq!(host.next_scalars(1e-3), adam().scalars(1e-3, 5));
}

/// A step recorded once and replayed trains as steps op by op do: the same losses and, after
/// replays, a smaller batch (op by op, its state taken into the graph's buffers) and more
/// replays, the same weights, running statistics and Adam moments. The warm-up ends on a smaller
/// batch, which is not the one recorded.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_replayed_steps_train_as_steps_op_by_op() {
    use crate::backend::CudaDirectBackend;
    type C = CudaDirectBackend;
    let device = Default::default();
    let mut sets = vec![Kernels::FAST_BF16];
    let cudnn = Kernels::FAST_BF16_CUDNN;
    if crate::train_ops::check_kernels(cudnn, crate::device::DeviceChoice::Cuda(0)).is_ok() {
        let f32_image = Kernels { explicit_gemm: true, bf16_image: false, ..cudnn };
        sets.extend([cudnn, f32_image, Kernels { tensor_core_image: true, ..cudnn }]);
    }
    let sizes = [64, 64, 64, 48, 64, 64, 64, 48, 64, 64];
    for kernels in sets {
        let eager = Kernels { direct_launch: true, ..kernels };
        let replayed = Kernels { replay_step: true, ..eager };
        let (losses, state, replaying) = train::<C>(Stepper::new(replayed), replayed, (7, &sizes), &device);
        let (expected_losses, expected_state, _) =
            train::<C>(Stepper::new(eager), eager, (7, &sizes), &device);
        assert_eq!(replaying, Some(64), "{replayed}: the full batch's step was not recorded");
        assert!(losses.windows(2).all(|w| w[0] != w[1]), "{replayed}: a replay repeated a loss: {losses:?}");
        assert_trains_alike(&replayed.to_string(), (&losses, &state), (&expected_losses, &expected_state));
    }
}

/// Jobs that train at once on one GPU, each from its own thread and so on its own stream (a
/// worker's slots), record and replay their steps as they do alone: every job's step is
/// recorded, and its losses and state match its run alone (cuDNN's convolutions each with
/// their stream's workspace).
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_jobs_side_by_side_replay_as_they_do_alone() {
    use crate::backend::CudaDirectBackend;
    type C = CudaDirectBackend;
    let device = Default::default();
    let base = cuda_base_kernels();
    let kernels = Kernels { direct_launch: true, replay_step: true, ..base };
    let sizes = [64, 64, 64, 64, 64, 64, 48, 64, 64];
    let seeds = [7, 8, 9];
    let alone: Vec<_> =
        seeds.iter().map(|&s| train::<C>(Stepper::new(kernels), kernels, (s, &sizes), &device)).collect();
    let together =
        side_by_side(&seeds, |&seed| train::<C>(Stepper::new(kernels), kernels, (seed, &sizes), &device));
    for ((seed, (losses, state, replaying)), (expected_losses, expected_state, _)) in
        seeds.iter().zip(&together).zip(&alone)
    {
        assert!(replaying.is_some(), "{kernels}: job {seed}'s step was not recorded beside the others");
        assert_trains_alike(
            &format!("{kernels}, job {seed}"),
            (losses, state),
            (expected_losses, expected_state),
        );
    }
    assert_ne!(alone[0].0, alone[1].0, "the jobs differ");
}

#[test]
fn state_goes_back_only_into_a_state_of_the_same_layout() {
    type B = Autodiff<Flex>;
    let device = Default::default();
    let stepped = |seed| {
        let model = seeded_model::<B>(&CnnConfig::new().with_width_multiplier(0.25), seed, &device);
        let mut optim = adam().init::<B>();
        let images = crate::model::drawn(|| {
            Tensor::<B, 4>::random([2, 3, 32, 32], burn::tensor::Distribution::Default, &device)
        });
        let batch = (images, Tensor::<B, 1, Int>::from_data([0, 5], &device));
        (eager_step(model, &mut optim, batch, LossVariant::NormalLr1e3, 1e-3).model, optim)
    };
    let ((model, mut optim), (other, other_optim)) = (stepped(1), stepped(2));
    let full = state(&model, &optim);
    assert!(full.iter().any(|(k, _)| matches!(k, StateKey::Moment(..))), "Adam's moments are state");
    assert_eq!(state_pairs::<B>(full.clone(), &full).unwrap().len(), full.len());
    assert!(state_pairs::<B>(full[1..].to_vec(), &full).is_err());
    let mut swapped = full.clone();
    swapped.swap(0, 1);
    assert!(state_pairs::<B>(swapped, &full).is_err());
    // Pointed at another job's tensors (its weights, running statistics and moments), the model
    // and optimizer hold exactly those.
    let theirs: Vec<_> =
        full.iter().zip(state(&other, &other_optim)).map(|((key, _), (_, tensor))| (*key, tensor)).collect();
    assert_ne!(values(&model, &optim), values_of::<B>(&theirs));
    let model = point_at(model, &mut optim, &theirs);
    assert_eq!(values(&model, &optim), values_of::<B>(&theirs));
}

fn values_of<B: TrainBackend>(state: &[(StateKey, FloatTensor<Inner<B>>)]) -> Vec<Vec<f32>> {
    state
        .iter()
        .map(|(_, t)| {
            wrap::<Inner<B>, 1>(Inner::<B>::float_reshape(t.clone(), [t.shape().num_elements()].into()))
        })
        .map(|t| t.into_data().convert::<f32>().to_vec::<f32>().unwrap())
        .collect()
}
