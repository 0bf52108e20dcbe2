-- A new queued job on attempt 1; nothing if the sweep already has this (variant, seed). SQLite
-- cannot tell that a new row's id is never NULL, hence "id!".
INSERT INTO jobs (sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size,
                  learning_rate, created_at_ms)
VALUES (?1, ?2, ?3, 'queued', 1, ?4, ?5, ?6, ?7, ?8)
ON CONFLICT (sweep, variant, seed) DO NOTHING
RETURNING id AS "id!", sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, learning_rate,
          epochs_done, best_val_acc, best_epoch, worker_id, lease_token, lease_expires_at_ms,
          last_error, created_at_ms, started_at_ms, finished_at_ms
