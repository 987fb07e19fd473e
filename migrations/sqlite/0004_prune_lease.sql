-- Retention passes run one at a time across every process sharing this file: a pass holds this
-- row's lease (renewed by each of its batches) and ends by deleting it. A pass that died leaves a
-- lease that expires; nothing else ever reads it.
CREATE TABLE prune_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL                    -- Unix milliseconds
);
