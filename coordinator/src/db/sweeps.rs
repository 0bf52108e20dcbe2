//! The `sweeps` table: one row per sweep name with its validated spec and owner, and the rules for
//! merging a resubmitted spec into the stored one.

use sqlx::{Executor, Sqlite};
use sweep_proto::SweepSpec;
use sweep_proto::domain::MAX_SEEDS;

use crate::error::{Error, Result};

/// A stored sweep.
#[derive(Debug, Clone)]
pub struct SweepRow {
    pub name: String,
    pub spec_json: String,
    pub created_at_ms: i64,
    /// The credential that created it (`""`: created without authentication).
    pub owner: String,
}

impl SweepRow {
    /// The stored spec (variants and seeds of every job of the sweep).
    pub fn spec(&self) -> Result<SweepSpec> {
        serde_json::from_str(&self.spec_json)
            .map_err(|e| Error::Internal(format!("stored spec of sweep {} is unreadable: {e}", self.name)))
    }
}

pub async fn get<'c, E>(ex: E, name: &str) -> Result<Option<SweepRow>>
where
    E: Executor<'c, Database = Sqlite>,
{
    Ok(sqlx::query_as!(
        SweepRow,
        "SELECT name, spec_json, created_at_ms, owner FROM sweeps WHERE name = ?1",
        name
    )
    .fetch_optional(ex)
    .await?)
}

/// Like [`get`], but a missing sweep is [`Error::NotFound`].
pub async fn require<'c, E>(ex: E, name: &str) -> Result<SweepRow>
where
    E: Executor<'c, Database = Sqlite>,
{
    get(ex, name).await?.ok_or_else(|| Error::NotFound(format!("sweep {name:?}")))
}

/// Every sweep, oldest first.
pub async fn list<'c, E>(ex: E) -> Result<Vec<SweepRow>>
where
    E: Executor<'c, Database = Sqlite>,
{
    Ok(sqlx::query_as!(
        SweepRow,
        "SELECT name, spec_json, created_at_ms, owner FROM sweeps ORDER BY created_at_ms, name"
    )
    .fetch_all(ex)
    .await?)
}

/// Inserts a sweep owned by `owner`, or replaces the stored spec of an existing one (whose
/// owner stays).
pub async fn upsert<'c, E>(ex: E, spec: &SweepSpec, owner: &str, now_ms: i64) -> Result<()>
where
    E: Executor<'c, Database = Sqlite>,
{
    let spec_json = serde_json::to_string(spec)?;
    sqlx::query!(
        "INSERT INTO sweeps (name, spec_json, created_at_ms, owner) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO UPDATE SET spec_json = excluded.spec_json",
        spec.name,
        spec_json,
        now_ms,
        owner
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Merges a resubmitted spec into the stored one: variants and seeds are united (stored order
/// first), everything that shapes a job must match. Returns the merged spec, a
/// [`Error::Conflict`] naming every difference, or [`Error::ResourceExhausted`] when the sweep
/// would hold more than [`MAX_SEEDS`] seeds (the limit is per sweep, not per submission).
pub fn merge(stored: &SweepSpec, new: &SweepSpec) -> Result<SweepSpec> {
    let mut conflicts = Vec::new();
    if stored.epochs != new.epochs {
        conflicts.push(format!("epochs {} (stored {})", new.epochs, stored.epochs));
    }
    if stored.batch_size != new.batch_size {
        conflicts.push(format!("batch_size {} (stored {})", new.batch_size, stored.batch_size));
    }
    if stored.data != new.data {
        conflicts.push(format!("data options {:?} (stored {:?})", new.data, stored.data));
    }
    if stored.max_attempts != new.max_attempts {
        conflicts.push(format!("max_attempts {} (stored {})", new.max_attempts, stored.max_attempts));
    }
    for variant in new.variants.iter().filter(|v| stored.variants.contains(v)) {
        let (old_lr, new_lr) = (stored.learning_rate(*variant), new.learning_rate(*variant));
        if old_lr != new_lr {
            conflicts.push(format!("learning rate {new_lr} for {variant} (stored {old_lr})"));
        }
        let (old_offset, new_offset) = (stored.seed_offset(*variant), new.seed_offset(*variant));
        if old_offset != new_offset {
            conflicts.push(format!("seed offset {new_offset} for {variant} (stored {old_offset})"));
        }
    }
    if !conflicts.is_empty() {
        return Err(Error::Conflict(format!(
            "sweep {:?} already exists with different settings: {}; submit under a new name",
            stored.name,
            conflicts.join(", ")
        )));
    }
    let mut merged = stored.clone();
    for v in &new.variants {
        if !merged.variants.contains(v) {
            merged.variants.push(*v);
            merged.learning_rates.insert(*v, new.learning_rate(*v));
            if new.seed_offset(*v) > 0 {
                merged.seed_offsets.insert(*v, new.seed_offset(*v));
            }
        }
    }
    let known: std::collections::HashSet<u64> = merged.seeds.iter().copied().collect();
    merged.seeds.extend(new.seeds.iter().filter(|s| !known.contains(s)));
    if merged.seeds.len() > MAX_SEEDS {
        return Err(Error::ResourceExhausted(format!(
            "sweep {:?} would hold {} seeds, more than the {MAX_SEEDS} a sweep may hold",
            stored.name,
            merged.seeds.len()
        )));
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sweep_proto::{LossVariant, pb};

    fn spec(variants: &[&str], seeds: &[u64]) -> SweepSpec {
        pb::SweepSpec {
            name: "s".into(),
            variants: variants.iter().map(|v| v.to_string()).collect(),
            seeds: seeds.to_vec(),
            epochs: 10,
            batch_size: 64,
            ..Default::default()
        }
        .try_into()
        .unwrap()
    }

    #[test]
    fn merge_unites_variants_and_seeds() {
        let stored = spec(&["natural_softmax"], &[0, 1]);
        let merged = merge(&stored, &spec(&["normal_lr1e-2", "natural_softmax"], &[1, 2])).unwrap();
        assert_eq!(merged.variants, vec![LossVariant::NaturalSoftmax, LossVariant::NormalLr1e2]);
        assert_eq!(merged.seeds, vec![0, 1, 2]);
        assert_eq!(merged.learning_rate(LossVariant::NormalLr1e2), 1e-2);
    }

    #[test]
    fn the_seed_limit_holds_per_sweep_not_per_submission() {
        let stored = spec(&["natural_softmax"], &(0..MAX_SEEDS as u64).collect::<Vec<_>>());
        let again = merge(&stored, &spec(&["natural_softmax"], &[0, 1])).unwrap();
        assert_eq!(again.seeds.len(), MAX_SEEDS);
        let err = merge(&stored, &spec(&["natural_softmax"], &[MAX_SEEDS as u64])).unwrap_err();
        assert!(matches!(err, Error::ResourceExhausted(_)), "{err}");
        assert!(err.to_string().contains("10001 seeds"), "{err}");
    }

    #[test]
    fn merge_rejects_changed_hyper_parameters() {
        let stored = spec(&["natural_softmax"], &[0]);
        let mut other = stored.clone();
        other.epochs = 11;
        other.learning_rates.insert(LossVariant::NaturalSoftmax, 0.5);
        other.seed_offsets.insert(LossVariant::NaturalSoftmax, 100);
        let err = merge(&stored, &other).unwrap_err().to_string();
        assert!(err.contains("epochs 11 (stored 10)"), "{err}");
        assert!(err.contains("learning rate 0.5"), "{err}");
        assert!(err.contains("seed offset 100 for natural_softmax (stored 0)"), "{err}");
    }
}
