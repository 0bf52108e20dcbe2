-- Cancels up to ?3 of sweep ?2's queued or running jobs (the states a Cancel may leave), finished
-- at ?1: what job_transition.sql does for a Cancel, one chunk at a time. No ORDER BY: the
-- (sweep, state) index then hands over the first ?3 it finds instead of every match sorted.
UPDATE jobs
SET state = 'cancelled', lease_expires_at_ms = NULL, finished_at_ms = ?1
WHERE id IN (SELECT id FROM jobs WHERE sweep = ?2 AND state IN ('queued', 'running') LIMIT ?3)
  AND state IN ('queued', 'running')
RETURNING id, sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, learning_rate,
          epochs_done, best_value, best_epoch, worker_id, lease_token, lease_expires_at_ms,
          last_error, created_at_ms, started_at_ms, finished_at_ms, kind
