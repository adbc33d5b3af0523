-- modelgen schema, PostgreSQL flavour. Timestamps are `TIMESTAMP` (without time
-- zone) holding UTC. Ids use the "C" collation so that ULID-based ids sort
-- bytewise (keyset pagination by task_id), whatever the database locale.

CREATE TABLE ai_generation_task (
    task_id             TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    request_id          TEXT,
    user_id             TEXT NOT NULL,
    task_type           TEXT NOT NULL CHECK (task_type IN ('default', 'edit', 'outfit')),
    base_model_task_id  TEXT COLLATE "C",
    angle               TEXT CHECK (angle IS NULL OR angle IN ('front', 'side', 'back')),
    size                TEXT NOT NULL,
    prompt              TEXT NOT NULL,
    model               TEXT NOT NULL,
    input_images        TEXT NOT NULL DEFAULT '[]',
    request_fingerprint TEXT,
    external_task_id    TEXT,
    status              TEXT NOT NULL
        CHECK (status IN ('submitted', 'processing', 'completed', 'failed', 'cancelled')),
    progress            INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    error_code          INTEGER,
    error_message       TEXT,
    submit_attempts     INTEGER NOT NULL DEFAULT 0,
    poll_count          INTEGER NOT NULL DEFAULT 0,
    next_run_at         TIMESTAMP NOT NULL,
    lease_owner         TEXT,
    lease_expires_at    TIMESTAMP,
    created_at          TIMESTAMP NOT NULL,
    updated_at          TIMESTAMP NOT NULL,
    completed_at        TIMESTAMP,
    CONSTRAINT uq_task_user_request UNIQUE (user_id, request_id)
);

-- Worker claim query: status IN (...) AND next_run_at <= now ORDER BY next_run_at.
CREATE INDEX idx_task_status_next_run ON ai_generation_task (status, next_run_at);
-- Listing a user's tasks newest first with a task_id keyset cursor.
CREATE INDEX idx_task_user_task ON ai_generation_task (user_id, task_id);
CREATE INDEX idx_task_external ON ai_generation_task (external_task_id);

CREATE TABLE ai_generation_image (
    id           BIGSERIAL PRIMARY KEY,
    task_id      TEXT COLLATE "C" NOT NULL REFERENCES ai_generation_task (task_id),
    angle        TEXT CHECK (angle IS NULL OR angle IN ('front', 'side', 'back')),
    image_url    TEXT NOT NULL,
    storage_key  TEXT NOT NULL,
    image_base64 TEXT,
    mime         TEXT NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    bytes        BIGINT NOT NULL,
    created_at   TIMESTAMP NOT NULL
);

CREATE INDEX idx_image_task ON ai_generation_image (task_id);

CREATE TABLE callback_delivery (
    event_id         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    task_id          TEXT COLLATE "C" NOT NULL REFERENCES ai_generation_task (task_id),
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

CREATE INDEX idx_callback_status_next ON callback_delivery (status, next_attempt_at);
