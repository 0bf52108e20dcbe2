-- Moves job ?5 to state ?1 / attempt ?2 / max attempts ?8 / error ?3 if it is still in state ?6 on
-- attempt ?7. A requeued job loses its lease but keeps its stored epochs (its next attempt may
-- continue after them from a checkpoint); a terminal one is finished at ?4.
UPDATE jobs
SET state = ?1, attempt = ?2, last_error = ?3, lease_expires_at_ms = NULL,
    worker_id = CASE WHEN ?1 = 'queued' THEN NULL ELSE worker_id END,
    lease_token = CASE WHEN ?1 = 'queued' THEN NULL ELSE lease_token END,
    max_attempts = ?8,
    finished_at_ms = CASE WHEN ?1 IN ('succeeded', 'failed', 'cancelled') THEN ?4 ELSE NULL END
WHERE id = ?5 AND state = ?6 AND attempt = ?7
RETURNING id, sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, learning_rate,
          epochs_done, best_value, best_epoch, worker_id, lease_token, lease_expires_at_ms,
          last_error, created_at_ms, started_at_ms, finished_at_ms, kind
