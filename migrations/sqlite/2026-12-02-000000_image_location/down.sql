-- Back to frozen URLs: stored images get a relative `/images/<key>` URL (the
-- absolute one they had is gone); remote images keep theirs.
CREATE TABLE ai_generation_image_old (
    id           INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    task_id      TEXT NOT NULL REFERENCES ai_generation_task (task_id),
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

INSERT INTO ai_generation_image_old
    (id, task_id, angle, image_url, storage_key, image_base64, mime, width, height, bytes, created_at)
SELECT id, task_id, angle,
       COALESCE(remote_url, '/images/' || storage_key),
       COALESCE(storage_key, ''),
       image_base64, COALESCE(mime, 'application/octet-stream'),
       COALESCE(width, 0), COALESCE(height, 0), COALESCE(bytes, 0), created_at
FROM ai_generation_image;

DROP TABLE ai_generation_image;
ALTER TABLE ai_generation_image_old RENAME TO ai_generation_image;
CREATE INDEX idx_image_task ON ai_generation_image (task_id);
