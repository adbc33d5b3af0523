-- A timeline for every task (docs/design.md, "Task timeline"), what each task
-- cost upstream, and callbacks of a retried run kept beside the earlier run's.
--
-- task_events: append-only; each row is written in the same transaction as
-- the change it describes. seq orders a task's events (oldest first); `at`
-- is the writer's clock. Rows older than EVENT_RETENTION are deleted by the
-- retention cleanup (index on `at`).
CREATE TABLE task_events (
    seq              BIGSERIAL PRIMARY KEY,
    task_id          TEXT COLLATE "C" NOT NULL,
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
-- callback gets its own row; the earlier run's row is kept.
ALTER TABLE callback_delivery ADD COLUMN run INTEGER NOT NULL DEFAULT 0;
ALTER TABLE callback_delivery ADD CONSTRAINT uq_callback_task_event_run
    UNIQUE (task_id, event_type, run);
ALTER TABLE callback_delivery DROP CONSTRAINT uq_callback_task_event;
