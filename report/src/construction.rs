//! What the report knows about the experiment's loss variants by construction: which of them
//! train exactly like the baseline, so that any difference from it is run-to-run nondeterminism
//! rather than an effect of the loss.
//!
//! Two jobs train identically in exact arithmetic when their losses have the same gradient, their
//! seeds are equal (same initial weights, same data order) and their learning rates are equal:
//! Adam then takes the same steps. Whether they also agree bit for bit depends on the floating-
//! point summation order of the GPU kernels, picked by autotuning: jobs run with the same kernels
//! agree exactly; jobs run elsewhere, or while a machine is still tuning, drift apart from the
//! first epochs on.

use std::collections::BTreeMap;

/// Variants that add to the cross-entropy a term whose gradient w.r.t. the logits is exactly zero:
/// `natural_hardmax` builds its term from `argmax(p)`, which has no gradient, and each of
/// `multi_softmax`'s 45 terms is a one-column softmax that Keras renormalises to 1 and clips, a
/// constant. They move the reported loss, not the training.
pub const ZERO_GRADIENT_TERM_VARIANTS: [&str; 2] = ["natural_hardmax", "multi_softmax"];

/// Variants whose loss is the plain cross-entropy (they differ in the learning rate only).
pub const PLAIN_CROSS_ENTROPY_VARIANTS: [&str; 2] = ["normal_lr1e-3", "normal_lr1e-2"];

/// Why two such variants train alike, as the report says it.
pub const WHY_IDENTICAL: &str = "the gradients of plain cross-entropy, shared seeds, the same learning rate";

/// Why such variants can still differ, as the report says it.
pub const WHY_THEY_DIFFER: &str = "run-to-run nondeterminism (GPU kernels chosen by autotuning, per machine \
     and for jobs that start while it is still tuning, so floating-point sums in a different order)";

/// True when `variant`'s gradients are those of the plain cross-entropy.
pub fn has_cross_entropy_gradients(variant: &str) -> bool {
    ZERO_GRADIENT_TERM_VARIANTS.contains(&variant) || PLAIN_CROSS_ENTROPY_VARIANTS.contains(&variant)
}

/// True when `variant` trains exactly like `baseline` at equal seeds, in exact arithmetic: both
/// have cross-entropy gradients and both learning rates are known and equal. Equal seeds are the
/// comparison's part (it pairs jobs by seed).
pub fn trains_like(variant: &str, baseline: &str, learning_rates: &BTreeMap<String, f64>) -> bool {
    let equal_rates = matches!(
        (learning_rates.get(variant), learning_rates.get(baseline)),
        (Some(a), Some(b)) if a == b
    );
    variant != baseline
        && has_cross_entropy_gradients(variant)
        && has_cross_entropy_gradients(baseline)
        && equal_rates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(v, lr)| (v.to_string(), *lr)).collect()
    }

    #[test]
    fn zero_gradient_variants_train_like_the_baseline_at_its_learning_rate() {
        let lr = rates(&[
            ("natural_hardmax", 1e-3),
            ("natural_softmax", 1e-3),
            ("multi_softmax", 1e-3),
            ("normal_lr1e-3", 1e-3),
            ("normal_lr1e-2", 1e-2),
        ]);
        let base = "normal_lr1e-3";
        assert!(trains_like("natural_hardmax", base, &lr));
        assert!(trains_like("multi_softmax", base, &lr));
        assert!(!trains_like("natural_softmax", base, &lr), "its term has a gradient");
        assert!(!trains_like("normal_lr1e-2", base, &lr), "another learning rate");
        assert!(!trains_like(base, base, &lr), "the baseline is not compared with itself");
        assert!(!trains_like("Natural_HardMax", base, &lr), "names are exact");
    }

    #[test]
    fn unknown_or_different_learning_rates_are_not_identical_training() {
        let base = "normal_lr1e-3";
        assert!(!trains_like("natural_hardmax", base, &BTreeMap::new()));
        assert!(!trains_like("natural_hardmax", base, &rates(&[("natural_hardmax", 1e-3)])));
        let other = rates(&[("multi_softmax", 2e-3), (base, 1e-3)]);
        assert!(!trains_like("multi_softmax", base, &other));
        // The same loss at the same rate is the same training, whatever the name says.
        let same = rates(&[("normal_lr1e-2", 1e-3), (base, 1e-3)]);
        assert!(trains_like("normal_lr1e-2", base, &same));
    }
}
