-- Fleet operations (SPEC §10): what each worker's heartbeat reports of a drain's cost, and the
-- rolling-drain queue whose budget every caller and worker checks in one write transaction.

-- How long a handoff drain would take now, and the work since the last checkpoints (milliseconds).
ALTER TABLE workers ADD COLUMN drain_eta_ms INTEGER;
ALTER TABLE workers ADD COLUMN work_at_risk_ms INTEGER;

-- Drain requests waiting for the budget: at most `max_draining` workers out at once. A request is
-- moved into its worker's row (and this row deleted) when fewer are out.
CREATE TABLE drain_queue (
    worker_id    TEXT    PRIMARY KEY,
    mode         TEXT    NOT NULL,
    reason       TEXT,
    requested_by TEXT,
    max_draining INTEGER NOT NULL CHECK (max_draining >= 1),
    queued_at    INTEGER NOT NULL                 -- Unix milliseconds
);
