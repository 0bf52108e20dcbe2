-- Sweeps of the user's own command beside the built-in CNN, and metrics by name.
--
-- jobs.kind: what a job runs; a worker leases only the kinds it can run.
-- jobs.objective / objective_max: the metric that ranks the job's epochs and whether higher is
-- better (copied from the sweep's spec when the job is created); best_value is that metric's best.
ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'builtin' CHECK (kind IN ('builtin', 'command'));
ALTER TABLE jobs ADD COLUMN objective TEXT NOT NULL DEFAULT 'val_acc';
ALTER TABLE jobs ADD COLUMN objective_max INTEGER NOT NULL DEFAULT 1 CHECK (objective_max IN (0, 1));
ALTER TABLE jobs RENAME COLUMN best_val_acc TO best_value;
-- Claims look for the oldest queued job of the kinds a worker runs.
CREATE INDEX jobs_by_kind ON jobs (state, kind, id);

-- A command job reports the metrics it prints: the named columns become optional, and any other
-- metric is kept in values_json (a JSON object of name → number; NULL when there is none).
CREATE TABLE epochs_new (
    job_id         INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    epoch          INTEGER NOT NULL CHECK (epoch >= 1),
    attempt        INTEGER NOT NULL,
    train_loss     REAL,
    train_acc      REAL,
    val_loss       REAL,
    val_acc        REAL,
    wall_seconds   REAL    NOT NULL,
    images_per_sec REAL,
    recorded_at_ms INTEGER NOT NULL,
    values_json    TEXT,
    PRIMARY KEY (job_id, epoch)
) WITHOUT ROWID;
INSERT INTO epochs_new (job_id, epoch, attempt, train_loss, train_acc, val_loss, val_acc, wall_seconds,
                        images_per_sec, recorded_at_ms)
    SELECT job_id, epoch, attempt, train_loss, train_acc, val_loss, val_acc, wall_seconds,
           images_per_sec, recorded_at_ms FROM epochs;
DROP TABLE epochs;
ALTER TABLE epochs_new RENAME TO epochs;
