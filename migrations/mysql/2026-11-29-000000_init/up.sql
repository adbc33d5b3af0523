-- modelgen schema, MySQL 8 / MariaDB 10.6+ flavour.
--
-- * Every table is utf8mb4 with the binary collation utf8mb4_bin: text keeps any
--   Unicode character (CJK, emoji), ids and user ids compare case-sensitively as
--   on PostgreSQL, and ULID-based task ids sort bytewise (keyset pagination by
--   task_id). utf8mb4_bin pads with spaces when comparing; ids reach the database
--   trimmed, so "a" and "a " never both occur.
-- * Timestamps are DATETIME(6): naive UTC with microseconds, written by the
--   service (never NOW()), so the server's and the session's time_zone do not
--   change them. Every connection still runs with time_zone '+00:00'.
-- * Keys are VARCHAR(255) (an index entry stays under InnoDB's 3072-byte limit
--   even for two of them at 4 bytes per character); free text is MEDIUMTEXT
--   (16 MiB), the inline image LONGTEXT.
-- * No expression DEFAULTs (MySQL before 8.0.13 lacks them): the service writes
--   every column on insert.

CREATE TABLE ai_generation_task (
    task_id             VARCHAR(255) NOT NULL,
    request_id          VARCHAR(255) NULL,
    user_id             VARCHAR(255) NOT NULL,
    task_type           VARCHAR(16) NOT NULL,
    base_model_task_id  VARCHAR(255) NULL,
    angle               VARCHAR(16) NULL,
    size                VARCHAR(32) NOT NULL,
    prompt              MEDIUMTEXT NOT NULL,
    model               VARCHAR(255) NOT NULL,
    input_images        MEDIUMTEXT NOT NULL,
    request_fingerprint VARCHAR(255) NULL,
    external_task_id    VARCHAR(255) NULL,
    status              VARCHAR(16) NOT NULL,
    progress            INT NOT NULL DEFAULT 0,
    error_code          INT NULL,
    error_message       MEDIUMTEXT NULL,
    submit_attempts     INT NOT NULL DEFAULT 0,
    poll_count          INT NOT NULL DEFAULT 0,
    next_run_at         DATETIME(6) NOT NULL,
    lease_owner         VARCHAR(255) NULL,
    lease_expires_at    DATETIME(6) NULL,
    created_at          DATETIME(6) NOT NULL,
    updated_at          DATETIME(6) NOT NULL,
    completed_at        DATETIME(6) NULL,
    PRIMARY KEY (task_id),
    CONSTRAINT uq_task_user_request UNIQUE (user_id, request_id),
    CONSTRAINT ck_task_type CHECK (task_type IN ('default', 'edit', 'outfit')),
    CONSTRAINT ck_task_angle CHECK (angle IS NULL OR angle IN ('front', 'side', 'back')),
    CONSTRAINT ck_task_status
        CHECK (status IN ('submitted', 'processing', 'completed', 'failed', 'cancelled')),
    CONSTRAINT ck_task_progress CHECK (progress BETWEEN 0 AND 100)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Worker claim query: status IN (...) AND next_run_at <= now ORDER BY next_run_at.
CREATE INDEX idx_task_status_next_run ON ai_generation_task (status, next_run_at);
-- Listing a user's tasks newest first with a task_id keyset cursor.
CREATE INDEX idx_task_user_task ON ai_generation_task (user_id, task_id);
CREATE INDEX idx_task_external ON ai_generation_task (external_task_id);

CREATE TABLE ai_generation_image (
    id           BIGINT NOT NULL AUTO_INCREMENT,
    task_id      VARCHAR(255) NOT NULL,
    angle        VARCHAR(16) NULL,
    image_url    MEDIUMTEXT NOT NULL,
    storage_key  MEDIUMTEXT NOT NULL,
    image_base64 LONGTEXT NULL,
    mime         VARCHAR(64) NOT NULL,
    width        INT NOT NULL,
    height       INT NOT NULL,
    bytes        BIGINT NOT NULL,
    created_at   DATETIME(6) NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT fk_image_task FOREIGN KEY (task_id) REFERENCES ai_generation_task (task_id),
    CONSTRAINT ck_image_angle CHECK (angle IS NULL OR angle IN ('front', 'side', 'back'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE INDEX idx_image_task ON ai_generation_image (task_id);

CREATE TABLE callback_delivery (
    event_id         VARCHAR(255) NOT NULL,
    task_id          VARCHAR(255) NOT NULL,
    event_type       VARCHAR(64) NOT NULL,
    status           VARCHAR(16) NOT NULL,
    attempts         INT NOT NULL DEFAULT 0,
    next_attempt_at  DATETIME(6) NOT NULL,
    last_error       MEDIUMTEXT NULL,
    lease_owner      VARCHAR(255) NULL,
    lease_expires_at DATETIME(6) NULL,
    created_at       DATETIME(6) NOT NULL,
    updated_at       DATETIME(6) NOT NULL,
    delivered_at     DATETIME(6) NULL,
    PRIMARY KEY (event_id),
    CONSTRAINT uq_callback_task_event UNIQUE (task_id, event_type),
    CONSTRAINT fk_callback_task FOREIGN KEY (task_id) REFERENCES ai_generation_task (task_id),
    CONSTRAINT ck_callback_status CHECK (status IN ('pending', 'delivered', 'dead'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE INDEX idx_callback_status_next ON callback_delivery (status, next_attempt_at);
