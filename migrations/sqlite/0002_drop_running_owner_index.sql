-- No statement looks jobs up by owner alone: every job write is by id, fenced by (owner, lease_epoch).
-- The index only cost an insert per claim.
DROP INDEX IF EXISTS jobs_running_owner;
