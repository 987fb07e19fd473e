-- handover schema v1 for PostgreSQL. Times come from the database clock (now()), never from workers.

CREATE TABLE jobs (
    id               BIGSERIAL   PRIMARY KEY,
    kind             TEXT        NOT NULL,
    payload          JSONB       NOT NULL,
    status           TEXT        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'running', 'completed', 'failed', 'dead', 'cancelled')),
    priority         INTEGER     NOT NULL DEFAULT 0,
    attempts         INTEGER     NOT NULL DEFAULT 0,   -- attempts that counted (hand-backs do not)
    max_attempts     INTEGER     NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_after        TIMESTAMPTZ NOT NULL DEFAULT now(),
    owner            TEXT,
    lease_epoch      BIGINT      NOT NULL DEFAULT 0,   -- only ever grows
    lease_expires_at TIMESTAMPTZ,
    checkpoint       JSONB,
    result           JSONB,
    error            TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((status = 'running') = (lease_expires_at IS NOT NULL AND owner IS NOT NULL))
);

CREATE INDEX jobs_runnable ON jobs (priority DESC, run_after, id) WHERE status IN ('pending', 'failed');
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_running_owner ON jobs (owner) WHERE status = 'running';
CREATE INDEX jobs_by_status ON jobs (status, id);

-- One row per completion, written by the completing statement itself: the at-most-once audit.
CREATE TABLE job_completions (
    job_id       BIGINT      NOT NULL,
    lease_epoch  BIGINT      NOT NULL,
    worker_id    TEXT        NOT NULL,
    completed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX job_completions_job ON job_completions (job_id);

CREATE FUNCTION handover_audit_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_completions (job_id, lease_epoch, worker_id, completed_at)
    VALUES (NEW.id, NEW.lease_epoch, COALESCE(OLD.owner, ''), NEW.updated_at);
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_completion_audit AFTER UPDATE OF status ON jobs
FOR EACH ROW WHEN (NEW.status = 'completed' AND OLD.status <> 'completed')
EXECUTE FUNCTION handover_audit_completion();

CREATE TABLE workers (
    id                 TEXT        PRIMARY KEY,
    name               TEXT        NOT NULL,
    version            TEXT        NOT NULL,
    phase              TEXT        NOT NULL,
    listen_addr        TEXT,
    concurrency        BIGINT      NOT NULL,
    lease_ttl_ms       BIGINT      NOT NULL,
    started_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    in_flight          BIGINT      NOT NULL DEFAULT 0,
    drain_mode         TEXT,
    drain_reason       TEXT,
    drain_requested_by TEXT,
    drain_requested_at TIMESTAMPTZ,
    declared_dead_at   TIMESTAMPTZ,
    stopped_at         TIMESTAMPTZ
);
CREATE INDEX workers_by_name ON workers (name);

CREATE TABLE shutdowns (
    id            BIGSERIAL        PRIMARY KEY,
    worker_id     TEXT             NOT NULL,
    worker_name   TEXT             NOT NULL,
    trigger       TEXT             NOT NULL,
    mode          TEXT             NOT NULL,
    outcome       TEXT             NOT NULL,
    requested_by  TEXT,
    reason        TEXT,
    started_at    TIMESTAMPTZ      NOT NULL,
    duration_ms   DOUBLE PRECISION NOT NULL,
    phases        JSONB            NOT NULL,
    jobs_released BIGINT           NOT NULL,
    forced_jobs   JSONB            NOT NULL
);
CREATE INDEX shutdowns_recent ON shutdowns (started_at DESC);
