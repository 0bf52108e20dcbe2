//! `coordinator submit`: builds a sweep spec from flags and/or a JSON spec file and submits it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;
use sweep_proto::domain::LossVariant;
use sweep_proto::pb;

use super::ClientArgs;
use crate::error::{Error, Result};

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// JSON spec file (fields as in `SweepSpec`; `seeds` may be a list or a range string like
    /// "0..5"). Flags given on the command line override its values.
    #[arg(long, env = "SWEEP_SPEC")]
    pub spec: Option<PathBuf>,
    /// Sweep name (letters, digits, '.', '_', '-').
    #[arg(long, env = "SWEEP_NAME")]
    pub name: Option<String>,
    /// Loss variants, comma separated (default: all five).
    #[arg(long, env = "SWEEP_VARIANTS", value_delimiter = ',')]
    pub variants: Vec<String>,
    /// Seeds: a list "0,1,2", a range "0..5" (end excluded) or "0..=4".
    #[arg(long, env = "SWEEP_SEEDS")]
    pub seeds: Option<String>,
    /// Epochs per job.
    #[arg(long, env = "SWEEP_EPOCHS")]
    pub epochs: Option<u32>,
    /// Batch size.
    #[arg(long, env = "SWEEP_BATCH_SIZE")]
    pub batch_size: Option<u32>,
    /// Learning-rate overrides, VARIANT=LR, comma separated.
    #[arg(long = "lr", env = "SWEEP_LR", value_delimiter = ',')]
    pub learning_rates: Vec<String>,
    /// Train on the first N images only (0 = all).
    #[arg(long, env = "SWEEP_TRAIN_LIMIT")]
    pub train_limit: Option<u32>,
    /// Validate on the first N test images only (0 = all).
    #[arg(long, env = "SWEEP_TEST_LIMIT")]
    pub test_limit: Option<u32>,
    /// Random crop + horizontal flip.
    #[arg(long, env = "SWEEP_AUGMENT")]
    pub augment: Option<bool>,
    /// CNN channel width multiplier (1.0 = the experiment's width).
    #[arg(long, env = "SWEEP_WIDTH_MULTIPLIER")]
    pub width_multiplier: Option<f32>,
    /// Attempts before a job fails for good (default 3).
    #[arg(long, env = "SWEEP_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
}

/// Seeds in a spec file: a list or a range string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SeedsField {
    List(Vec<u64>),
    Text(String),
}

/// The JSON spec file; every field optional so flags can fill the gaps.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpecFile {
    pub name: Option<String>,
    pub variants: Vec<String>,
    pub seeds: Option<SeedsField>,
    pub epochs: Option<u32>,
    pub batch_size: Option<u32>,
    pub learning_rates: BTreeMap<String, f64>,
    pub data: Option<DataFile>,
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataFile {
    pub train_limit: u32,
    pub test_limit: u32,
    pub augment: bool,
    pub width_multiplier: f32,
}

/// Parses "0..5", "0..=4" or "0,1,2" into seeds (order kept; validation happens on the server).
pub fn parse_seeds(text: &str) -> Result<Vec<u64>> {
    let text = text.trim();
    let bad = |what: &str| Error::Format(format!("bad seeds {text:?}: {what}"));
    let num = |s: &str| s.trim().parse::<u64>().map_err(|e| bad(&e.to_string()));
    if let Some((a, b)) = text.split_once("..") {
        let (inclusive, b) = match b.strip_prefix('=') {
            Some(b) => (true, b),
            None => (false, b),
        };
        let (start, end) = (num(a)?, num(b)?);
        let end = if inclusive { end.checked_add(1).ok_or_else(|| bad("range too large"))? } else { end };
        if end <= start {
            return Err(bad("empty range"));
        }
        if end - start > sweep_proto::domain::MAX_SEEDS as u64 {
            return Err(bad("more seeds than a sweep may hold"));
        }
        return Ok((start..end).collect());
    }
    text.split(',').filter(|s| !s.trim().is_empty()).map(num).collect()
}

/// Builds the wire spec from the file (if any) and the flags (which win).
pub fn build_spec(args: &SubmitArgs) -> Result<pb::SweepSpec> {
    let file: SpecFile = match &args.spec {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Format(format!("cannot read {}: {e}", path.display())))?;
            serde_json::from_str(&text)?
        }
        None => SpecFile::default(),
    };
    let name = args.name.clone().or(file.name).ok_or_else(|| Error::Format("--name is required".into()))?;
    let variants = if !args.variants.is_empty() {
        args.variants.clone()
    } else if !file.variants.is_empty() {
        file.variants
    } else {
        LossVariant::ALL.iter().map(|v| v.name().to_owned()).collect()
    };
    let seeds = match (&args.seeds, file.seeds) {
        (Some(text), _) => parse_seeds(text)?,
        (None, Some(SeedsField::List(seeds))) => seeds,
        (None, Some(SeedsField::Text(text))) => parse_seeds(&text)?,
        (None, None) => return Err(Error::Format("--seeds is required (e.g. 0..5)".into())),
    };
    let epochs = args.epochs.or(file.epochs).ok_or_else(|| Error::Format("--epochs is required".into()))?;
    let batch_size = args
        .batch_size
        .or(file.batch_size)
        .ok_or_else(|| Error::Format("--batch-size is required".into()))?;
    let mut learning_rates: std::collections::HashMap<String, f64> =
        file.learning_rates.into_iter().collect();
    for item in &args.learning_rates {
        let (variant, lr) =
            item.split_once('=').ok_or_else(|| Error::Format(format!("--lr {item:?} is not VARIANT=LR")))?;
        let lr = lr.trim().parse().map_err(|e| Error::Format(format!("--lr {item:?}: {e}")))?;
        learning_rates.insert(variant.trim().to_owned(), lr);
    }
    let data = file.data.unwrap_or_default();
    Ok(pb::SweepSpec {
        name,
        variants,
        seeds,
        epochs,
        batch_size,
        learning_rates,
        data: Some(pb::DataOptions {
            train_limit: args.train_limit.unwrap_or(data.train_limit),
            test_limit: args.test_limit.unwrap_or(data.test_limit),
            augment: args.augment.unwrap_or(data.augment),
            width_multiplier: args.width_multiplier.unwrap_or(data.width_multiplier),
        }),
        max_attempts: args.max_attempts.or(file.max_attempts).unwrap_or(0),
    })
}

pub async fn run(args: SubmitArgs) -> Result<()> {
    let spec = build_spec(&args)?;
    // Check locally first for a clear message; the server checks again.
    sweep_proto::SweepSpec::try_from(spec.clone())?;
    let mut client = args.client.connect().await?;
    let reply = client.submit_sweep(pb::SubmitSweepRequest { spec: Some(spec) }).await?.into_inner();
    println!(
        "sweep {}: {} job(s) created, {} already existed",
        reply.sweep, reply.jobs_created, reply.jobs_existing
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_ranges_and_lists() {
        assert_eq!(parse_seeds("0..5").unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(parse_seeds("2..=4").unwrap(), vec![2, 3, 4]);
        assert_eq!(parse_seeds("7, 3,9").unwrap(), vec![7, 3, 9]);
        assert!(parse_seeds("5..5").is_err());
        assert!(parse_seeds("a..3").is_err());
        assert!(parse_seeds("1,x").is_err());
    }
}
