-- Up to ?2 running jobs whose lease ran out by ?1, oldest first.
SELECT id, sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, learning_rate,
       epochs_done, best_value, best_epoch, worker_id, lease_token, lease_expires_at_ms,
       last_error, created_at_ms, started_at_ms, finished_at_ms, kind
FROM jobs
WHERE state = 'running' AND lease_expires_at_ms <= ?1
ORDER BY id
LIMIT ?2
