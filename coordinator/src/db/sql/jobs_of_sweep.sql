-- A sweep's jobs, optionally only those in state ?2 and/or of variant ?3.
SELECT id, sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, learning_rate,
       epochs_done, best_value, best_epoch, worker_id, lease_token, lease_expires_at_ms,
       last_error, created_at_ms, started_at_ms, finished_at_ms, kind
FROM jobs
WHERE sweep = ?1 AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR variant = ?3)
ORDER BY id
