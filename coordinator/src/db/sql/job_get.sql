-- One job by id.
SELECT id, sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, learning_rate,
       epochs_done, best_value, best_epoch, worker_id, lease_token, lease_expires_at_ms,
       last_error, created_at_ms, started_at_ms, finished_at_ms, kind
FROM jobs
WHERE id = ?1
