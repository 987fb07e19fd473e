-- Job control: cancel requests, each job's journey (the events its hand-backs, rescues, failures,
-- cancels and retries write), and the kinds each worker serves.

-- Set when an operator cancels a running job; its owner stops it and writes `cancelled`.
ALTER TABLE jobs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false;
-- When the current (or last) attempt was claimed: what a job's journey shows for each attempt.
ALTER TABLE jobs ADD COLUMN claimed_at TIMESTAMPTZ;
ALTER TABLE job_completions ADD COLUMN claimed_at TIMESTAMPTZ;
-- Owners look for cancels of their running jobs once a poll; only requested cancels are indexed.
CREATE INDEX jobs_cancel_requested ON jobs (owner) WHERE cancel_requested AND status = 'running';

CREATE TABLE job_events (
    id          BIGSERIAL   PRIMARY KEY,
    job_id      BIGINT      NOT NULL,
    event       TEXT        NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    worker_id   TEXT,
    lease_epoch BIGINT,
    detail      JSONB
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- The trigger's audit (writers other than this version's completion statement) keeps the claim
-- time too.
CREATE OR REPLACE FUNCTION handover_audit_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_completions (job_id, lease_epoch, worker_id, completed_at, claimed_at)
    VALUES (NEW.id, NEW.lease_epoch, COALESCE(OLD.owner, ''), NEW.updated_at, OLD.claimed_at);
    RETURN NEW;
END
$$;

-- The kinds this worker serves.
ALTER TABLE workers ADD COLUMN kinds TEXT[] NOT NULL DEFAULT '{}';
