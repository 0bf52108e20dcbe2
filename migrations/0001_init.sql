-- Durable job queue of the sweep coordinator. Timestamps are unix milliseconds (INTEGER).

CREATE TABLE sweeps (
    name          TEXT    PRIMARY KEY NOT NULL,
    -- The validated domain SweepSpec (serde JSON); variants/seeds grow when a resubmit adds jobs.
    spec_json     TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE jobs (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    sweep               TEXT    NOT NULL REFERENCES sweeps(name) ON DELETE CASCADE,
    variant             TEXT    NOT NULL,
    seed                INTEGER NOT NULL, -- u64 stored bit-for-bit as i64
    state               TEXT    NOT NULL
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- The attempt the job is on (1-based): the next lease, or the running one, uses it.
    attempt             INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    max_attempts        INTEGER NOT NULL CHECK (max_attempts >= 1),
    epochs              INTEGER NOT NULL CHECK (epochs >= 1),
    batch_size          INTEGER NOT NULL,
    learning_rate       REAL    NOT NULL,
    -- Epochs stored by the current attempt, and the best validation accuracy among them.
    epochs_done         INTEGER NOT NULL DEFAULT 0,
    best_val_acc        REAL    NOT NULL DEFAULT 0,
    best_epoch          INTEGER NOT NULL DEFAULT 0,
    worker_id           TEXT,
    lease_token         TEXT,
    lease_expires_at_ms INTEGER,
    last_error          TEXT,
    created_at_ms       INTEGER NOT NULL,
    started_at_ms       INTEGER,
    finished_at_ms      INTEGER,
    UNIQUE (sweep, variant, seed)
);

-- The lease claim picks the oldest queued job; the reaper scans running leases by expiry.
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE INDEX jobs_by_lease ON jobs (state, lease_expires_at_ms);
CREATE INDEX jobs_by_worker ON jobs (worker_id, state);

CREATE TABLE epochs (
    job_id         INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    epoch          INTEGER NOT NULL CHECK (epoch >= 1),
    -- Attempt that wrote the row; a later attempt overwrites rows of earlier ones.
    attempt        INTEGER NOT NULL,
    train_loss     REAL    NOT NULL,
    train_acc      REAL    NOT NULL,
    val_loss       REAL    NOT NULL,
    val_acc        REAL    NOT NULL,
    wall_seconds   REAL    NOT NULL,
    images_per_sec REAL    NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    PRIMARY KEY (job_id, epoch)
) WITHOUT ROWID;

CREATE TABLE workers (
    id               TEXT    PRIMARY KEY NOT NULL,
    hostname         TEXT    NOT NULL,
    gpus_json        TEXT    NOT NULL,
    slots            INTEGER NOT NULL,
    idle_slots       INTEGER NOT NULL DEFAULT 0,
    registered_at_ms INTEGER NOT NULL,
    last_seen_ms     INTEGER NOT NULL
);
