-- Job control: cancel requests, each job's journey (the events its hand-backs, rescues, failures,
-- cancels and retries write), and the kinds each worker serves.

-- Set when an operator cancels a running job; its owner stops it and writes `cancelled`.
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
-- When the current (or last) attempt was claimed: what a job's journey shows for each attempt.
ALTER TABLE jobs ADD COLUMN claimed_at INTEGER;
ALTER TABLE job_completions ADD COLUMN claimed_at INTEGER;
-- Owners look for cancels of their running jobs once a poll; only requested cancels are indexed.
CREATE INDEX jobs_cancel_requested ON jobs (owner) WHERE cancel_requested = 1 AND status = 'running';

CREATE TABLE job_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      INTEGER NOT NULL,
    event       TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    worker_id   TEXT,
    lease_epoch INTEGER,
    detail      TEXT                                -- JSON object
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- The completion audit also keeps when the completed attempt was claimed.
DROP TRIGGER IF EXISTS jobs_completion_audit;
CREATE TRIGGER jobs_completion_audit AFTER UPDATE OF status ON jobs
WHEN NEW.status = 'completed' AND OLD.status <> 'completed'
BEGIN
    INSERT INTO job_completions (job_id, lease_epoch, worker_id, completed_at, claimed_at)
    VALUES (NEW.id, NEW.lease_epoch, COALESCE(OLD.owner, ''), NEW.updated_at, OLD.claimed_at);
END;

-- JSON array of the kinds this worker serves.
ALTER TABLE workers ADD COLUMN kinds TEXT NOT NULL DEFAULT '[]';
