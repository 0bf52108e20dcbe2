-- Completes job ?2 if (?3, ?4) is its running, unexpired lease as of ?1 and every epoch is stored
-- (by this attempt, or by an earlier one it continued after from a checkpoint).
UPDATE jobs
SET state = 'succeeded', last_error = NULL, lease_expires_at_ms = NULL, finished_at_ms = ?1
WHERE id = ?2 AND attempt = ?3 AND lease_token = ?4 AND state = 'running'
  AND lease_expires_at_ms > ?1 AND epochs_done >= epochs
RETURNING id, sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, learning_rate,
          epochs_done, best_value, best_epoch, worker_id, lease_token, lease_expires_at_ms,
          last_error, created_at_ms, started_at_ms, finished_at_ms, kind
