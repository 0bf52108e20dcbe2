//! When a stepper records its step: after the warm-up steps, on the largest batch seen.

/// Steps run op by op before one is recorded: the first ones compile, autotune and benchmark
/// cuDNN's algorithms, none of which a recording may do.
const WARM_UP_STEPS: usize = 3;

/// A stepper's op-by-op steps so far and the largest batch they had.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WarmUp {
    eager_steps: usize,
    largest: usize,
}

impl WarmUp {
    /// Whether the step on `batch` images is the one to record. An epoch's last batch is
    /// smaller than all others: recorded, it would leave every other step op by op.
    pub fn ready(&mut self, batch: usize) -> bool {
        self.largest = self.largest.max(batch);
        self.eager_steps >= WARM_UP_STEPS && batch == self.largest
    }

    /// One more step ran op by op.
    pub fn stepped(&mut self) {
        self.eager_steps += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch sizes on which a fresh [`WarmUp`] would record, one step after another.
    fn readiness(batches: &[usize]) -> Vec<bool> {
        let mut warm_up = WarmUp::default();
        batches
            .iter()
            .map(|&n| {
                let ready = warm_up.ready(n);
                warm_up.stepped();
                ready
            })
            .collect()
    }

    #[test]
    fn records_after_the_warm_up_steps() {
        assert_eq!(readiness(&[512; 5]), [false, false, false, true, true]);
    }

    #[test]
    fn an_epochs_last_smaller_batch_is_not_recorded() {
        // Warm-up ends on an epoch's last batch (80 images): the next epoch's first is recorded.
        assert_eq!(readiness(&[512, 512, 512, 80, 512]), [false, false, false, false, true]);
        // A warm-up that starts on the last batch: the larger ones that follow are recorded.
        assert_eq!(readiness(&[80, 512, 512, 512]), [false, false, false, true]);
    }
}
