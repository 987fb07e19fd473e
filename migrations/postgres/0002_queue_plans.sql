-- Cheaper job writes: a queue table takes two writes per job and its statistics are stale by
-- nature (a burst of submissions arrives, then the claims drain it), so every saving counts and no
-- hot statement may depend on the planner's row estimates.

-- No statement looks jobs up by owner alone: every job write is by id, fenced by (owner, lease_epoch).
-- The index only cost an insert per claim and, with stale statistics, led the planner to walk
-- every running job of a worker for each row of a batched completion.
DROP INDEX IF EXISTS jobs_running_owner;

-- The completion audit row is now written by the completing statement itself (one INSERT per
-- batch, in the same statement and transaction) instead of a per-row PL/pgSQL trigger. The
-- trigger stays for everyone else: a worker of the previous version during a rolling upgrade, or
-- an operator's UPDATE. Workers of this version announce on their connection that their statement
-- writes the audit row (handover.completion_audit = statement), and the trigger skips theirs.
DROP TRIGGER IF EXISTS jobs_completion_audit ON jobs;
CREATE TRIGGER jobs_completion_audit AFTER UPDATE OF status ON jobs
FOR EACH ROW WHEN (NEW.status = 'completed' AND OLD.status <> 'completed'
                   AND current_setting('handover.completion_audit', true) IS DISTINCT FROM 'statement')
EXECUTE FUNCTION handover_audit_completion();
