//! The experiment's protocol projected from a benchmark's measured rates.

use std::time::Duration;

/// Training and validation work counted in images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Epochs summed over every job.
    pub job_epochs: u64,
    /// Images trained on in one epoch.
    pub train_images: u64,
    /// Images validated after each epoch.
    pub eval_images: u64,
}

impl Workload {
    /// `coordinator submit --preset protocol`: 45 jobs × 100 epochs over CIFAR-10's 50,000
    /// training and 10,000 test images.
    pub const PROTOCOL: Workload = Workload { job_epochs: 4_500, train_images: 50_000, eval_images: 10_000 };

    /// The device time of this work at `train_img_s` (aggregate over fused jobs) and
    /// `eval_img_s`: compute only, so a lower bound of a sweep's wall time, which also pays for
    /// start-up, reporting and the last partial batch of each epoch. `None` for a rate that
    /// is not a positive number.
    pub fn device_time(&self, train_img_s: f64, eval_img_s: f64) -> Option<Duration> {
        if !(train_img_s > 0.0 && eval_img_s > 0.0 && train_img_s.is_finite() && eval_img_s.is_finite()) {
            return None;
        }
        let per_epoch = self.train_images as f64 / train_img_s + self.eval_images as f64 / eval_img_s;
        Some(Duration::from_secs_f64(self.job_epochs as f64 * per_epoch))
    }

    /// The time of every job-epoch at one measured epoch's wall time (training and validation
    /// through the real data pipeline); `None` for one that is not a positive number.
    pub fn at_epoch_time(&self, epoch_seconds: f64) -> Option<Duration> {
        (epoch_seconds > 0.0 && epoch_seconds.is_finite())
            .then(|| Duration::from_secs_f64(self.job_epochs as f64 * epoch_seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_at_the_measured_single_job_rates_takes_about_an_hour() {
        // 77.1k img/s pipelined and 300k img/s validating (fast-bf16, H200): 4,500 × (0.649 +
        // 0.033) s.
        let time = Workload::PROTOCOL.device_time(77_100.0, 300_000.0).unwrap();
        assert!((time.as_secs_f64() - 4_500.0 * (50_000.0 / 77_100.0 + 10_000.0 / 300_000.0)).abs() < 1e-6);
        assert!((51.0..52.0).contains(&(time.as_secs_f64() / 60.0)), "{time:?}");
    }

    #[test]
    fn twice_the_rate_halves_the_time() {
        let w = Workload { job_epochs: 10, train_images: 1_000, eval_images: 100 };
        let slow = w.device_time(1_000.0, 100.0).unwrap();
        let fast = w.device_time(2_000.0, 200.0).unwrap();
        assert_eq!(slow, Duration::from_secs(20));
        assert_eq!(fast, Duration::from_secs(10));
    }

    #[test]
    fn a_measured_epoch_counts_once_per_job_epoch() {
        // 0.77 s an epoch (the protocol's jobs through the coordinator on an H200): 57.75 min.
        let time = Workload::PROTOCOL.at_epoch_time(0.77).unwrap();
        assert!((time.as_secs_f64() - 3_465.0).abs() < 1e-6, "{time:?}");
        assert_eq!(Workload::PROTOCOL.at_epoch_time(0.0), None);
        assert_eq!(Workload::PROTOCOL.at_epoch_time(f64::NAN), None);
    }

    #[test]
    fn rates_that_are_not_positive_project_nothing() {
        for (train, eval) in [(0.0, 1.0), (1.0, 0.0), (f64::NAN, 1.0), (1.0, f64::INFINITY), (-5.0, 1.0)] {
            assert_eq!(Workload::PROTOCOL.device_time(train, eval), None, "{train} {eval}");
        }
    }
}
