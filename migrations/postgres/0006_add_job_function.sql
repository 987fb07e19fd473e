-- Enqueue from any language (SPEC §10): `handover_add_job(...)` adds a pending job from SQL, inside
-- the producer's own transaction, and any INSERT INTO jobs (this function's, handover's own
-- submit, or a producer's plain INSERT ... SELECT) wakes idle workers through one NOTIFY per
-- statement. (0005 is another change's number; sqlx applies migrations in order and allows gaps.)
--
-- Schema-safe: the functions are pinned to the schema this migration ran in (its current_schema(),
-- the schema handover's own tables were created in), so a caller whose search_path names another
-- schema — or a second handover deployment in the same database — still adds to, and wakes, the
-- right one. The NOTIFY goes to the channel of the schema the inserted table lives in.

-- The NOTIFY channel of a schema, exactly as the worker computes it (notify_channel in
-- src/store/postgres/mod.rs): `handover_SCHEMA`, or, when that passes PostgreSQL's 63-byte
-- identifier limit, as much of the schema as fits in whole characters, `_`, and the first 8 bytes
-- of the SHA-256 of the whole name in hex.
CREATE FUNCTION handover_notify_channel(schema_name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    plain constant text := 'handover_' || schema_name;
    -- 63 - len('handover_') - len('_') - 16 hex digits
    room constant int := 37;
    cut text := left(schema_name, 37);
BEGIN
    IF octet_length(plain) <= 63 THEN
        RETURN plain;
    END IF;
    WHILE octet_length(cut) > room LOOP
        cut := left(cut, -1);
    END LOOP;
    RETURN 'handover_' || cut || '_'
        || encode(substring(sha256(convert_to(schema_name, 'UTF8')) FROM 1 FOR 8), 'hex');
END
$$;

-- One NOTIFY per INSERT statement, whatever its row count: 10,000 rows from one INSERT ... SELECT
-- wake the workers once, and several statements in one transaction are folded into one delivery
-- by PostgreSQL (same channel, same payload). Delivered at commit; a rolled-back insert wakes
-- nobody. Workers that wake and find nothing runnable (an INSERT of zero rows, a future run_after)
-- simply wait again.
CREATE FUNCTION handover_notify_jobs_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(handover_notify_channel(TG_TABLE_SCHEMA), 'jobs');
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_inserted AFTER INSERT ON jobs
FOR EACH STATEMENT EXECUTE FUNCTION handover_notify_jobs_inserted();

-- Adds one pending job, as handover's own submit does (same columns and defaults; the job's
-- journey starts with `submitted` at its created_at, like every job's), and returns its id.
-- The trigger above wakes the workers when the caller's transaction commits.
--
-- Refused, with SQLSTATE 22004 (null_value_not_allowed) or 22023 (invalid_parameter_value) and a
-- message naming the argument:
-- - any NULL argument (a JSON null payload, 'null'::jsonb, is a value and is accepted);
-- - a payload with a control character other than tab, newline and carriage return in a string or
--   key (as `handover submit` and the HTTP API);
-- - a kind that is not 1-64 characters of letters, digits, '_', '.', '-' (as `handover submit`);
-- - max_attempts outside 1..1000 (as `handover submit --max-attempts`);
-- - a kind that is neither built in (demo, exec, noop) nor served by any worker of this schema,
--   unless allow_unknown_kind => true (a producer deployed before its workers), as
--   `handover submit --allow-unknown-kind`.
-- The payload's shape is the handler's business: a payload the kind cannot use fails that job's
-- attempts when it runs, as it would if submitted through the HTTP API by another handover version.
CREATE FUNCTION handover_add_job(
    kind text,
    payload jsonb,
    priority int DEFAULT 0,
    max_attempts int DEFAULT 5,
    run_after timestamptz DEFAULT now(),
    allow_unknown_kind boolean DEFAULT false
) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    known text;
    new_id bigint;
BEGIN
    IF kind IS NULL OR payload IS NULL OR priority IS NULL OR max_attempts IS NULL
       OR run_after IS NULL OR allow_unknown_kind IS NULL THEN
        RAISE EXCEPTION 'handover_add_job: % must not be null',
            CASE WHEN kind IS NULL THEN 'kind'
                 WHEN payload IS NULL THEN 'payload'
                 WHEN priority IS NULL THEN 'priority'
                 WHEN max_attempts IS NULL THEN 'max_attempts'
                 WHEN run_after IS NULL THEN 'run_after'
                 ELSE 'allow_unknown_kind' END
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'leave an argument out to take its default';
    END IF;
    IF kind !~ '^[A-Za-z0-9_.-]{1,64}$' THEN
        RAISE EXCEPTION 'handover_add_job: invalid job kind %', quote_literal(kind)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use 1-64 characters of letters, digits, ''_'', ''.'', ''-''';
    END IF;
    -- jsonb's text form writes a control character other than tab, newline and carriage return
    -- as \b, \f or \u00XX (after an even run of backslashes), and U+007F-U+009F as themselves.
    IF payload::text ~ '(^|[^\\])(\\\\)*\\(b|f|u00[01][0-9a-fA-F])' OR payload::text ~ '[\u007f-\u009f]' THEN
        RAISE EXCEPTION 'handover_add_job: a string or key in payload contains a control character'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'only tab, newline and carriage return are allowed (as in handover submit)';
    END IF;
    IF max_attempts NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'handover_add_job: max_attempts must be between 1 and 1000, not %', max_attempts
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT allow_unknown_kind AND kind NOT IN ('demo', 'exec', 'noop')
       AND NOT EXISTS (SELECT 1 FROM workers w WHERE handover_add_job.kind = ANY (w.kinds)) THEN
        SELECT string_agg(k, ', ' ORDER BY k) INTO known FROM (
            SELECT unnest(ARRAY['demo', 'exec', 'noop']) AS k
            UNION SELECT unnest(w.kinds) FROM workers w) AS all_kinds;
        RAISE EXCEPTION 'handover_add_job: no worker of this store serves % jobs (known kinds: %)',
                quote_literal(kind), known
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'allow_unknown_kind => true adds it anyway (a producer deployed before its workers)';
    END IF;
    INSERT INTO jobs (kind, payload, priority, max_attempts, run_after)
    VALUES (handover_add_job.kind, handover_add_job.payload, handover_add_job.priority,
            handover_add_job.max_attempts, handover_add_job.run_after)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- Pin the functions to this schema (pg_temp last, so a caller's temporary table named `jobs` or
-- `workers` cannot stand in for handover's).
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION handover_notify_jobs_inserted() SET search_path = %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION handover_add_job(text, jsonb, int, int, timestamptz, boolean) '
                   'SET search_path = %I, pg_temp', current_schema());
END
$$;
