-- A timeline for every task (docs/design.md, "Task timeline"), what each task
-- cost upstream, and callbacks of a retried run kept beside the earlier run's.
--
-- task_events: append-only; each row is written in the same transaction as
-- the change it describes. seq orders a task's events (oldest first); `at`
-- is the writer's clock. Rows older than EVENT_RETENTION are deleted by the
-- retention cleanup (index on `at`).
CREATE TABLE task_events (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    task_id          TEXT NOT NULL,
    at               TIMESTAMP NOT NULL,
    kind             TEXT NOT NULL,
    replica          TEXT,
    attempt          INTEGER,
    upstream_task_id TEXT,
    upstream_status  TEXT,
    progress         INTEGER,
    http_status      INTEGER,
    latency_ms       BIGINT,
    error_code       INTEGER,
    message          TEXT
);
CREATE INDEX idx_event_task_seq ON task_events (task_id, seq);
CREATE INDEX idx_event_at ON task_events (at);

-- cost_micros: the upstream's reported cost of the task in millionths of the
-- account's balance unit (docs/apimart.md, "Cost"); NULL when not reported.
ALTER TABLE ai_generation_task ADD COLUMN cost_micros BIGINT;
-- retries: how many times an operator retried the task (its current run).
ALTER TABLE ai_generation_task ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
-- Usage sums: completed tasks in a time range.
CREATE INDEX idx_task_completed ON ai_generation_task (completed_at);

-- run: the task's `retries` when the row was enqueued. A retried run's
-- callback gets its own row; the earlier run's row is kept. SQLite cannot
-- drop a table constraint in place: rebuild the table.
CREATE TABLE callback_delivery_new (
    event_id         TEXT PRIMARY KEY NOT NULL,
    task_id          TEXT NOT NULL REFERENCES ai_generation_task (task_id),
    event_type       TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMP NOT NULL,
    last_error       TEXT,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMP,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    delivered_at     TIMESTAMP,
    run              INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT uq_callback_task_event_run UNIQUE (task_id, event_type, run)
);
INSERT INTO callback_delivery_new
    (event_id, task_id, event_type, status, attempts, next_attempt_at, last_error,
     lease_owner, lease_expires_at, created_at, updated_at, delivered_at, run)
SELECT event_id, task_id, event_type, status, attempts, next_attempt_at, last_error,
       lease_owner, lease_expires_at, created_at, updated_at, delivered_at, 0
FROM callback_delivery;
DROP TABLE callback_delivery;
ALTER TABLE callback_delivery_new RENAME TO callback_delivery;
CREATE INDEX idx_callback_status_next ON callback_delivery (status, next_attempt_at);
