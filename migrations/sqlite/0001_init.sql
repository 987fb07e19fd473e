-- handover schema v1 for SQLite. Times are Unix milliseconds (INTEGER), taken from SQLite's clock.

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT    NOT NULL,
    payload          TEXT    NOT NULL,             -- JSON
    status           TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'dead', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,   -- attempts that counted (hand-backs do not)
    max_attempts     INTEGER NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_after        INTEGER NOT NULL,
    owner            TEXT,
    lease_epoch      INTEGER NOT NULL DEFAULT 0,   -- only ever grows
    lease_expires_at INTEGER,
    checkpoint       TEXT,                         -- JSON
    result           TEXT,                         -- JSON
    error            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    CHECK ((status = 'running') = (lease_expires_at IS NOT NULL AND owner IS NOT NULL))
);

-- The claim scans runnable jobs in priority order.
CREATE INDEX jobs_runnable ON jobs (priority DESC, run_after, id) WHERE status IN ('pending', 'failed');
-- The rescuer scans running jobs by lease expiry; heartbeats find a worker's jobs by owner.
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_running_owner ON jobs (owner) WHERE status = 'running';
CREATE INDEX jobs_by_status ON jobs (status, id);

-- One row per completion, written by the completing statement itself: the at-most-once audit.
CREATE TABLE job_completions (
    job_id       INTEGER NOT NULL,
    lease_epoch  INTEGER NOT NULL,
    worker_id    TEXT    NOT NULL,
    completed_at INTEGER NOT NULL
);
CREATE INDEX job_completions_job ON job_completions (job_id);

CREATE TRIGGER jobs_completion_audit AFTER UPDATE OF status ON jobs
WHEN NEW.status = 'completed' AND OLD.status <> 'completed'
BEGIN
    INSERT INTO job_completions (job_id, lease_epoch, worker_id, completed_at)
    VALUES (NEW.id, NEW.lease_epoch, COALESCE(OLD.owner, ''), NEW.updated_at);
END;

CREATE TABLE workers (
    id                 TEXT    PRIMARY KEY,
    name               TEXT    NOT NULL,
    version            TEXT    NOT NULL,
    phase              TEXT    NOT NULL,
    listen_addr        TEXT,
    concurrency        INTEGER NOT NULL,
    lease_ttl_ms       INTEGER NOT NULL,
    started_at         INTEGER NOT NULL,
    heartbeat_at       INTEGER NOT NULL,
    in_flight          INTEGER NOT NULL DEFAULT 0,
    drain_mode         TEXT,
    drain_reason       TEXT,
    drain_requested_by TEXT,
    drain_requested_at INTEGER,
    declared_dead_at   INTEGER,
    stopped_at         INTEGER
);
CREATE INDEX workers_by_name ON workers (name);

CREATE TABLE shutdowns (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    worker_id     TEXT    NOT NULL,
    worker_name   TEXT    NOT NULL,
    trigger       TEXT    NOT NULL,
    mode          TEXT    NOT NULL,
    outcome       TEXT    NOT NULL,
    requested_by  TEXT,
    reason        TEXT,
    started_at    INTEGER NOT NULL,
    duration_ms   REAL    NOT NULL,
    phases        TEXT    NOT NULL,                -- JSON array of {phase, entered_at, duration_ms}
    jobs_released INTEGER NOT NULL,
    forced_jobs   TEXT    NOT NULL                 -- JSON array of job ids
);
CREATE INDEX shutdowns_recent ON shutdowns (started_at DESC);
