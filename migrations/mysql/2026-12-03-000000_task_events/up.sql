-- A timeline for every task (docs/design.md, "Task timeline"), what each task
-- cost upstream, and callbacks of a retried run kept beside the earlier run's.
--
-- task_events: append-only; each row is written in the same transaction as
-- the change it describes. seq orders a task's events (oldest first); `at`
-- is the writer's clock. Rows older than EVENT_RETENTION are deleted by the
-- retention cleanup (index on `at`).
CREATE TABLE task_events (
    seq              BIGINT NOT NULL AUTO_INCREMENT,
    task_id          VARCHAR(255) NOT NULL,
    at               DATETIME(6) NOT NULL,
    kind             VARCHAR(32) NOT NULL,
    replica          VARCHAR(255) NULL,
    attempt          INT NULL,
    upstream_task_id VARCHAR(255) NULL,
    upstream_status  VARCHAR(32) NULL,
    progress         INT NULL,
    http_status      INT NULL,
    latency_ms       BIGINT NULL,
    error_code       INT NULL,
    message          MEDIUMTEXT NULL,
    PRIMARY KEY (seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX idx_event_task_seq ON task_events (task_id, seq);
CREATE INDEX idx_event_at ON task_events (at);

-- cost_micros: the upstream's reported cost of the task in millionths of the
-- account's balance unit (docs/apimart.md, "Cost"); NULL when not reported.
ALTER TABLE ai_generation_task ADD COLUMN cost_micros BIGINT NULL;
-- retries: how many times an operator retried the task (its current run).
ALTER TABLE ai_generation_task ADD COLUMN retries INT NOT NULL DEFAULT 0;
-- Usage sums: completed tasks in a time range.
CREATE INDEX idx_task_completed ON ai_generation_task (completed_at);

-- run: the task's `retries` when the row was enqueued. A retried run's
-- callback gets its own row; the earlier run's row is kept. The new unique
-- index also serves the foreign key on task_id before the old one goes.
ALTER TABLE callback_delivery ADD COLUMN run INT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX uq_callback_task_event_run ON callback_delivery (task_id, event_type, run);
ALTER TABLE callback_delivery DROP INDEX uq_callback_task_event;
