CREATE TABLE callback_delivery_old (
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
    CONSTRAINT uq_callback_task_event UNIQUE (task_id, event_type)
);
INSERT INTO callback_delivery_old
    (event_id, task_id, event_type, status, attempts, next_attempt_at, last_error,
     lease_owner, lease_expires_at, created_at, updated_at, delivered_at)
SELECT event_id, task_id, event_type, status, attempts, next_attempt_at, last_error,
       lease_owner, lease_expires_at, created_at, updated_at, delivered_at
FROM callback_delivery WHERE run = 0;
DROP TABLE callback_delivery;
ALTER TABLE callback_delivery_old RENAME TO callback_delivery;
CREATE INDEX idx_callback_status_next ON callback_delivery (status, next_attempt_at);
DROP INDEX idx_task_completed;
ALTER TABLE ai_generation_task DROP COLUMN retries;
ALTER TABLE ai_generation_task DROP COLUMN cost_micros;
DROP TABLE task_events;
