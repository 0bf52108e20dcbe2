-- Who may change what once authentication is on. `sweeps.owner` is the credential that created
-- the sweep (only it or an admin may grow or cancel it); `workers.owner` is the credential a
-- worker id is bound to (only it may register, lease, heartbeat or write with that id). The
-- empty string means "created without authentication": such sweeps are left to admins, and such
-- worker ids are bound to the first credential that registers them again.
ALTER TABLE sweeps ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN owner TEXT NOT NULL DEFAULT '';

-- A sweep's jobs by state: cancelling a large sweep takes its unfinished jobs a chunk at a time,
-- and each chunk must find them without walking the ones already cancelled.
CREATE INDEX jobs_by_sweep_state ON jobs (sweep, state);
