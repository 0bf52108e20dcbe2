//! The experiment's five loss variants, as pure functions of the logits and the integer labels.
//!
//! Everything is built on [`kcce`] ([`crate::keras`]), a faithful port of Keras 2's
//! `categorical_crossentropy` (`from_logits=False`).
//!
//! # What the auxiliary terms really optimise
//!
//! The unit tests in this module measure the gradient of every auxiliary term with autodiff:
//!
//! * **natural_hardmax**: the term is built from `argmax(p)`, which has no gradient. Its value is
//!   `−ln(1 − ε) ≈ 1e-7` per correct natural/artificial call and `−ln ε ≈ 16.12` per wrong one,
//!   so it moves the *reported* loss, but its gradient w.r.t. the logits is exactly zero.
//! * **multi_softmax**: each of the 45 terms is a *one-column* tensor; Keras renormalises it
//!   over its last axis (`o / Σo = 1`) and clips it to `1 − ε`, so the term is the constant
//!   `−(Σ y + ε)·ln(1 − ε)` and its gradient is exactly zero.
//! * **natural_softmax**: the term depends smoothly on the softmax and has a non-zero gradient.
//!
//! Hence variants 1 and 3 optimise the same objective as variant 4 (`normal_lr1e-3`) plus a
//! constant (up to the order of floating-point summation), and only natural_softmax trains a
//! genuinely different objective.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use sweep_proto::LossVariant;

use crate::keras::{KERAS_EPSILON, NUM_CLASSES, kcce, one_hot};
use crate::train_ops::{TrainOps, unwrap, wrap};

/// First "natural" class label (bird).
pub const FIRST_NATURAL: usize = 2;
/// Last "natural" class label (horse), inclusive.
pub const LAST_NATURAL: usize = 7;

/// `[is_natural, is_artificial]` (`[N, 2]`) for integer class labels `[N]`.
pub fn natural_indicator<B: Backend>(labels: Tensor<B, 1, Int>) -> Tensor<B, 2> {
    let natural = labels
        .clone()
        .greater_equal_elem(FIRST_NATURAL as i64)
        .bool_and(labels.lower_equal_elem(LAST_NATURAL as i64))
        .float()
        .unsqueeze_dim::<2>(1);
    let artificial = natural.clone().neg().add_scalar(1.0);
    Tensor::cat(vec![natural, artificial], 1)
}

/// Auxiliary term of natural_hardmax: `kcce(c, h)` with `h` the natural indicator of `argmax(p)`.
pub fn hardmax_term<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let predicted = softmax(logits, 1).argmax(1).squeeze_dim::<1>(1);
    kcce(natural_indicator(labels), natural_indicator(predicted))
}

/// Auxiliary term of natural_softmax: `kcce(c, [Σ_{k=2..=7} p_k, 1 − Σ_{k=2..=7} p_k])`.
pub fn natural_softmax_term<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let p = softmax(logits, 1);
    let natural = p.narrow(1, FIRST_NATURAL, LAST_NATURAL - FIRST_NATURAL + 1).sum_dim(1);
    let output = Tensor::cat(vec![natural.clone(), natural.neg().add_scalar(1.0)], 1);
    kcce(natural_indicator(labels), output)
}

/// Auxiliary term of multi_softmax: the sum over the 45 pairs `0 ≤ i < j ≤ 9` of
/// `kcce([Σ_{k=i..=j} y_k + ε], [Σ_{k=i..=j} p_k + ε])` on one-column tensors, as in the original.
pub fn multi_softmax_term<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let p = softmax(logits, 1);
    let y = one_hot(labels);
    let mut total: Option<Tensor<B, 1>> = None;
    for i in 0..NUM_CLASSES {
        for j in (i + 1)..NUM_CLASSES {
            let len = j - i + 1;
            let t = y.clone().narrow(1, i, len).sum_dim(1).add_scalar(KERAS_EPSILON);
            let o = p.clone().narrow(1, i, len).sum_dim(1).add_scalar(KERAS_EPSILON);
            let term = kcce(t, o);
            total = Some(match total {
                Some(sum) => sum.add(term),
                None => term,
            });
        }
    }
    total.expect("45 pairs")
}

/// [`multi_softmax_term`] from the labels alone: each pair term is `−(Σ_{k=i..=j} y_k + ε)·ln(1 − ε)`
/// and the label `c` lies in `(c + 1)·(10 − c) − 1` of the 45 ranges. The same value up to float
/// rounding and, like the original, no gradient, in a handful of operations: the 45 little
/// graphs cost ~22 ms of host time per training step (3 s instead of 0.8 s per epoch on an H200).
pub fn multi_softmax_constant<B: Backend>(labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let pairs = (NUM_CLASSES * (NUM_CLASSES - 1) / 2) as f64;
    let label = labels.float();
    let covering =
        label.clone().add_scalar(1.0).mul(label.neg().add_scalar(NUM_CLASSES as f64)).sub_scalar(1.0);
    let log_one_minus_eps = f64::from(1.0f32 - KERAS_EPSILON).ln();
    covering.add_scalar(pairs * f64::from(KERAS_EPSILON)).mul_scalar(-log_one_minus_eps).mean()
}

/// The part of `variant`'s loss that has a gradient, what a training step differentiates: the
/// cross-entropy as [`TrainOps::cross_entropy`], or for natural_softmax with its term
/// ([`natural_softmax_term`]) as [`TrainOps::natural_cross_entropy`] (one autodiff node each
/// in training, see [`crate::train_ops::cross_entropy`]).
pub fn trained_loss<B: TrainOps>(
    variant: LossVariant,
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let (logits, labels) = (unwrap(logits), labels.into_primitive());
    wrap(match variant {
        LossVariant::NaturalSoftmax => {
            B::natural_cross_entropy(logits, labels, [FIRST_NATURAL, LAST_NATURAL])
        }
        _ => B::cross_entropy(logits, labels),
    })
}

/// natural_hardmax's and multi_softmax's terms (batch mean; `None` for the other variants,
/// multi_softmax's as [`multi_softmax_constant`]). They have no gradient, so a training step
/// leaves them out and a pass adds them once over all its rows, where natural_hardmax's cost
/// every step ~30 host operations: a mean of per-row values, the same as its batches' means
/// weighted by their rows.
pub fn gradient_free_term<B: Backend>(
    variant: LossVariant,
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
) -> Option<Tensor<B, 1>> {
    match variant {
        LossVariant::NaturalHardmax => Some(hardmax_term(logits, labels)),
        LossVariant::MultiSoftmax => Some(multi_softmax_constant(labels)),
        _ => None,
    }
}

/// The full loss of `variant` (batch mean, 1-element tensor): [`trained_loss`] plus
/// [`gradient_free_term`].
pub fn variant_loss<B: TrainOps>(
    variant: LossVariant,
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let trained = trained_loss(variant, logits.clone(), labels.clone());
    match gradient_free_term(variant, logits, labels) {
        Some(term) => trained.add(term),
        None => trained,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keras::cross_entropy;
    use burn::backend::{Autodiff, Flex};

    type B = Flex;
    type AD = Autodiff<Flex>;

    /// Logits whose softmax is exactly `probs` (log of the probabilities).
    fn logits_of<Bk: Backend>(rows: &[[f32; 10]]) -> Tensor<Bk, 2> {
        let flat: Vec<f32> = rows.iter().flatten().map(|p| p.max(1e-30).ln()).collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), 10]), &Default::default())
    }

    fn labels_of<Bk: Backend>(labels: &[i64]) -> Tensor<Bk, 1, Int> {
        Tensor::from_data(TensorData::new(labels.to_vec(), [labels.len()]), &Default::default())
    }

    fn scalar<Bk: Backend>(t: Tensor<Bk, 1>) -> f64 {
        t.into_scalar().elem::<f64>()
    }

    /// p = 0.6 airplane, 0.2 bird, 0.2 ship.
    const EXAMPLE: [f32; 10] = [0.6, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.0];
    const EPS: f64 = KERAS_EPSILON as f64;

    fn loss(variant: LossVariant, rows: &[[f32; 10]], labels: &[i64]) -> f64 {
        scalar(variant_loss::<B>(variant, logits_of(rows), labels_of(labels)))
    }

    #[test]
    fn normal_variants_are_minus_log_p_of_the_label() {
        for v in [LossVariant::NormalLr1e3, LossVariant::NormalLr1e2] {
            let got = loss(v, &[EXAMPLE], &[0]);
            assert!((got - (-(0.6f64).ln())).abs() < 1e-5, "{v}: {got}");
        }
    }

    #[test]
    fn natural_softmax_matches_hand_value() {
        // −ln 0.6 − ln 0.8 (airplane is artificial; the artificial mass is 0.8).
        let got = loss(LossVariant::NaturalSoftmax, &[EXAMPLE], &[0]);
        assert!((got - 0.733_969).abs() < 1e-5, "{got}");
    }

    #[test]
    fn natural_hardmax_matches_hand_value() {
        // argmax is airplane (artificial) = the label's group: −ln 0.6 − ln(1 − ε).
        let got = loss(LossVariant::NaturalHardmax, &[EXAMPLE], &[0]);
        let want = -(0.6f64).ln() - ((1.0f32 - KERAS_EPSILON) as f64).ln();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Label bird (natural) but argmax airplane: the term is −ln ε ≈ 16.118.
        let got = loss(LossVariant::NaturalHardmax, &[EXAMPLE], &[2]);
        let want = -(0.2f64).ln() - EPS.ln();
        assert!((got - want).abs() < 1e-3, "{got} vs {want}");
    }

    #[test]
    fn multi_softmax_adds_a_label_only_constant() {
        // Each pair term is −(Σy + ε)·ln(1 − ε); Σy = 1 for the pairs whose range holds the label.
        let label = 0usize;
        let one_minus_eps = (1.0f32 - KERAS_EPSILON) as f64;
        let mut want = -(0.6f64).ln();
        for i in 0..10 {
            for j in (i + 1)..10 {
                let t = if (i..=j).contains(&label) { 1.0 + EPS } else { EPS };
                want -= t * one_minus_eps.ln();
            }
        }
        let got = loss(LossVariant::MultiSoftmax, &[EXAMPLE], &[label as i64]);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // The constant does not depend on the prediction.
        let other = [0.1f32; 10];
        let diff =
            loss(LossVariant::MultiSoftmax, &[other], &[0]) - loss(LossVariant::NormalLr1e3, &[other], &[0]);
        assert!((diff - (want + (0.6f64).ln())).abs() < 1e-5, "{diff}");
    }

    #[test]
    fn kcce_renormalises_and_clips() {
        let t = Tensor::<B, 2>::from_floats([[0.0, 1.0]], &Default::default());
        let o = Tensor::<B, 2>::from_floats([[3.0, 1.0]], &Default::default());
        assert!((scalar(kcce(t.clone(), o)) - 4.0f64.ln()).abs() < 1e-5);
        let zero = Tensor::<B, 2>::from_floats([[1.0, 0.0]], &Default::default());
        assert!((scalar(kcce(t, zero)) + EPS.ln()).abs() < 1e-3);
    }

    #[test]
    fn batch_values_are_means() {
        let rows = [EXAMPLE, [0.1; 10]];
        let got = loss(LossVariant::NormalLr1e3, &rows, &[0, 5]);
        let want = (-(0.6f64).ln() - (0.1f64).ln()) / 2.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    /// Gradient of `term(logits) + 0·Σlogits` w.r.t. the logits (the zero link keeps the
    /// logits in the graph even when the term itself is detached from them).
    fn term_gradient(
        term: fn(Tensor<AD, 2>, Tensor<AD, 1, Int>) -> Tensor<AD, 1>,
        rows: &[[f32; 10]],
        labels: &[i64],
    ) -> Vec<f32> {
        let logits = logits_of::<AD>(rows).require_grad();
        let value = term(logits.clone(), labels_of(labels)).add(logits.clone().sum().mul_scalar(0.0));
        let grads = value.backward();
        logits.grad(&grads).expect("logits are tracked").into_data().to_vec().unwrap()
    }

    const GRAD_ROWS: [[f32; 10]; 3] = [
        EXAMPLE,
        [0.05, 0.05, 0.1, 0.1, 0.1, 0.2, 0.1, 0.1, 0.1, 0.1],
        [0.3, 0.1, 0.05, 0.05, 0.1, 0.05, 0.05, 0.1, 0.1, 0.1],
    ];
    const GRAD_LABELS: [i64; 3] = [0, 5, 9];

    fn max_abs(v: &[f32]) -> f32 {
        v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
    }

    #[test]
    fn hardmax_term_has_zero_gradient() {
        let g = term_gradient(hardmax_term::<AD>, &GRAD_ROWS, &GRAD_LABELS);
        assert_eq!(max_abs(&g), 0.0, "{g:?}");
    }

    #[test]
    fn multi_softmax_term_has_zero_gradient() {
        let g = term_gradient(multi_softmax_term::<AD>, &GRAD_ROWS, &GRAD_LABELS);
        assert_eq!(max_abs(&g), 0.0, "{g:?}");
    }

    #[test]
    fn the_closed_form_multi_softmax_term_equals_the_45_terms() {
        let labels: Vec<i64> = (0..40).map(|i| (i * 7 + 3) % 10).collect();
        let rows: Vec<[f32; 10]> = (0..40).map(|i| if i % 2 == 0 { EXAMPLE } else { [0.1; 10] }).collect();
        let terms = scalar(multi_softmax_term::<B>(logits_of(&rows), labels_of(&labels)));
        let constant = scalar(multi_softmax_constant::<B>(labels_of(&labels)));
        assert!(terms > 1e-6, "{terms}");
        assert!((terms - constant).abs() <= 1e-6 * terms, "{terms} vs {constant}");
        let g = term_gradient(|_, y| multi_softmax_constant(y), &GRAD_ROWS, &GRAD_LABELS);
        assert_eq!(max_abs(&g), 0.0, "{g:?}");
    }

    /// natural_softmax's node (loss and gradient in one) against autodiff through burn's ops of
    /// the cross-entropy plus [`natural_softmax_term`], on natural and artificial labels and on
    /// rows where both terms clip (no gradient), the loss scaled after the node.
    #[test]
    fn the_natural_softmax_node_matches_autodiff_through_burns_ops() {
        let mut certain = [0.0f32; 10];
        certain[3] = 1.0;
        let rows = [GRAD_ROWS[0], GRAD_ROWS[1], GRAD_ROWS[2], certain, certain];
        let labels = [0, 5, 9, 3, 0];
        let by_burn = logits_of::<AD>(&rows).require_grad();
        let reference = cross_entropy(by_burn.clone(), labels_of(&labels))
            .add(natural_softmax_term(by_burn.clone(), labels_of(&labels)));
        let burn_grad = by_burn.grad(&reference.clone().mul_scalar(3.0).backward()).unwrap();
        let by_node = logits_of::<AD>(&rows).require_grad();
        let node = trained_loss(LossVariant::NaturalSoftmax, by_node.clone(), labels_of(&labels));
        let node_grad = by_node.grad(&node.clone().mul_scalar(3.0).backward()).unwrap();
        let (node, reference) = (scalar(node), scalar(reference));
        assert!((node - reference).abs() < 1e-5 * reference, "loss {node} vs {reference}");
        let node_grad: Vec<f32> = node_grad.into_data().to_vec().unwrap();
        let burn_grad: Vec<f32> = burn_grad.into_data().to_vec().unwrap();
        let scale = max_abs(&burn_grad);
        for (i, (n, b)) in node_grad.iter().zip(&burn_grad).enumerate() {
            assert!((n - b).abs() <= 1e-5 * scale, "logit {i}: node {n} vs burn {b}");
        }
        assert_eq!(max_abs(&node_grad[30..50]), 0.0, "rows where both terms clip have no gradient");
        assert!(max_abs(&node_grad[..30]) > 1e-3);
    }

    #[test]
    fn natural_softmax_term_has_a_gradient() {
        let g = term_gradient(natural_softmax_term::<AD>, &GRAD_ROWS, &GRAD_LABELS);
        assert!(max_abs(&g) > 1e-3, "{g:?}");
    }

    #[test]
    fn variants_1_and_3_have_the_gradient_of_plain_cross_entropy() {
        let plain = term_gradient(cross_entropy::<AD>, &GRAD_ROWS, &GRAD_LABELS);
        for v in [LossVariant::NaturalHardmax, LossVariant::MultiSoftmax] {
            let full = match v {
                LossVariant::NaturalHardmax => term_gradient(
                    |l, y| variant_loss(LossVariant::NaturalHardmax, l, y),
                    &GRAD_ROWS,
                    &GRAD_LABELS,
                ),
                _ => term_gradient(
                    |l, y| variant_loss(LossVariant::MultiSoftmax, l, y),
                    &GRAD_ROWS,
                    &GRAD_LABELS,
                ),
            };
            let diff: Vec<f32> = full.iter().zip(&plain).map(|(a, b)| a - b).collect();
            assert!(max_abs(&diff) < 1e-7, "{v}: {diff:?}");
        }
    }
}
