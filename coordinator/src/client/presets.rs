//! The named sweeps a user can run with one flag: the experiment's protocol and its parts, the
//! ghost-batch check, and small sizes for trying the system out.

use clap::ValueEnum;
use sweep_proto::LossVariant;
use sweep_proto::pb::{DataOptions, SweepSpec};

/// Attempts a job of a long preset gets: a 100-epoch job outlives machines that are lent for a
/// while and then taken back (each loss costs an attempt).
const LONG_RUN_ATTEMPTS: u32 = 5;

/// Named sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// The experiment as it was run: 5 variants × seeds 0..5 × 100 epochs, then natural_softmax
    /// and normal_lr1e-3 to 15 seeds (45 jobs), batch 512.
    Protocol,
    /// 5 variants × seeds 0..5 × 100 epochs, batch 512 (the protocol's first box plot).
    Paper,
    /// natural_softmax and normal_lr1e-3 with 15 seeds each, 100 epochs (its second box plot).
    Paper15,
    /// natural_softmax vs normal_lr1e-3 with BatchNorm over groups of 64 images (the original
    /// run's 8 TPU cores × 64 of a batch of 512): 15 seeds each, 100 epochs.
    Ghost64,
    /// 5 variants × 3 seeds × 15 epochs, full data and width.
    Quick,
    /// A tiny CPU-sized run (about a minute on 2 cores): 5 variants × 2 seeds × 2 epochs on
    /// 512 training / 256 test images with an eighth of the channels. A plumbing test: expect
    /// accuracy near chance.
    Smoke,
}

impl Preset {
    /// The preset's name (also the sweep's name).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Protocol => "protocol",
            Preset::Paper => "paper",
            Preset::Paper15 => "paper15",
            Preset::Ghost64 => "ghost64",
            Preset::Quick => "quick",
            Preset::Smoke => "smoke",
        }
    }

    /// The submissions that make the preset's sweep, in order: most presets are one grid of
    /// variants × seeds; the protocol adds seeds to two variants of its first grid.
    pub fn submissions(self) -> Vec<SweepSpec> {
        let all: Vec<LossVariant> = LossVariant::ALL.to_vec();
        let pair = vec![LossVariant::NaturalSoftmax, LossVariant::NormalLr1e3];
        let full = DataOptions::default;
        match self {
            Preset::Protocol => {
                vec![self.grid(&all, 0..5, 100, 512, full()), self.grid(&pair, 0..15, 100, 512, full())]
            }
            Preset::Paper => vec![self.grid(&all, 0..5, 100, 512, full())],
            Preset::Paper15 => vec![self.grid(&pair, 0..15, 100, 512, full())],
            Preset::Ghost64 => {
                vec![self.grid(&pair, 0..15, 100, 512, DataOptions { bn_group: 64, ..full() })]
            }
            Preset::Quick => vec![self.grid(&all, 0..3, 15, 512, full())],
            Preset::Smoke => vec![self.grid(
                &all,
                0..2,
                2,
                64,
                DataOptions { train_limit: 512, test_limit: 256, width_multiplier: 0.125, ..full() },
            )],
        }
    }

    fn grid(
        self,
        variants: &[LossVariant],
        seeds: std::ops::Range<u64>,
        epochs: u32,
        batch_size: u32,
        data: DataOptions,
    ) -> SweepSpec {
        let long = epochs >= 100;
        SweepSpec {
            name: self.name().to_owned(),
            variants: variants.iter().map(|v| v.name().to_owned()).collect(),
            seeds: seeds.collect(),
            epochs,
            batch_size,
            learning_rates: Default::default(),
            data: Some(data),
            max_attempts: if long { LONG_RUN_ATTEMPTS } else { 0 },
            seed_offsets: Default::default(),
            command: None,
            objective: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Distinct (variant, seed) jobs of a preset's submissions, validated as the coordinator does.
    fn jobs(p: Preset) -> BTreeSet<(String, u64)> {
        p.submissions()
            .into_iter()
            .flat_map(|s| {
                let spec = sweep_proto::SweepSpec::try_from(s).expect("preset must validate");
                assert_eq!(spec.name, p.name());
                spec.jobs().into_iter().map(|j| (j.variant, j.seed))
            })
            .collect()
    }

    #[test]
    fn presets_match_the_protocols() {
        let protocol = jobs(Preset::Protocol);
        assert_eq!(protocol.len(), 45);
        let seeds_of = |v: LossVariant| protocol.iter().filter(|(w, _)| w == v.name()).count();
        assert_eq!(seeds_of(LossVariant::NaturalSoftmax), 15);
        assert_eq!(seeds_of(LossVariant::NormalLr1e3), 15);
        assert_eq!(seeds_of(LossVariant::MultiSoftmax), 5);
        assert!(jobs(Preset::Paper).is_subset(&protocol));
        assert!(jobs(Preset::Paper15).is_subset(&protocol));
        assert_eq!(jobs(Preset::Paper).len(), 25);
        assert_eq!(jobs(Preset::Paper15).len(), 30);
        assert_eq!(jobs(Preset::Ghost64).len(), 30);
        assert_eq!(jobs(Preset::Quick).len(), 15);
        assert_eq!(jobs(Preset::Smoke).len(), 10);
        for s in Preset::Protocol.submissions() {
            assert_eq!((s.epochs, s.batch_size, s.max_attempts), (100, 512, LONG_RUN_ATTEMPTS));
        }
        let ghost = &Preset::Ghost64.submissions()[0];
        assert_eq!(ghost.data.unwrap().bn_group, 64);
        for p in Preset::value_variants() {
            assert_eq!(p.to_possible_value().unwrap().get_name(), p.name());
        }
    }
}
