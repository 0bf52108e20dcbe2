-- Moves job ?5 to state ?1 / attempt ?2 / error ?3 if it is still in state ?6 on attempt ?7. A
-- requeued job loses its lease and progress; a terminal one is finished at ?4.
UPDATE jobs
SET state = ?1, attempt = ?2, last_error = ?3, lease_expires_at_ms = NULL,
    worker_id = CASE WHEN ?1 = 'queued' THEN NULL ELSE worker_id END,
    lease_token = CASE WHEN ?1 = 'queued' THEN NULL ELSE lease_token END,
    epochs_done = CASE WHEN ?1 = 'queued' THEN 0 ELSE epochs_done END,
    best_val_acc = CASE WHEN ?1 = 'queued' THEN 0 ELSE best_val_acc END,
    best_epoch = CASE WHEN ?1 = 'queued' THEN 0 ELSE best_epoch END,
    finished_at_ms = CASE WHEN ?1 IN ('succeeded', 'failed', 'cancelled') THEN ?4 ELSE NULL END
WHERE id = ?5 AND state = ?6 AND attempt = ?7
RETURNING id, sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, learning_rate,
          epochs_done, best_val_acc, best_epoch, worker_id, lease_token, lease_expires_at_ms,
          last_error, created_at_ms, started_at_ms, finished_at_ms
