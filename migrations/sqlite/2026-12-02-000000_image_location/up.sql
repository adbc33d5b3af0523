-- Image URLs are rendered when read, not frozen at completion: a stored image
-- keeps only its blob-store key (`storage_key`), and its URL is built from the
-- current PUBLIC_BASE_URL / IMAGE_URL_MODE on each read and callback attempt.
-- An image we do not hold (e.g. imported from the earlier service) has a
-- `remote_url` and no key. Exactly one of the two is set. Facts we cannot know
-- about a remote image (type, pixels, size) may be NULL.
--
-- Existing rows: the frozen `image_url` was always built from `storage_key`,
-- so the key is kept and the frozen URL dropped; a row without a key (none
-- are written by modelgen) keeps its URL as a remote URL.
--
-- SQLite cannot drop NOT NULL or rename into a CHECK in place: rebuild the table.
CREATE TABLE ai_generation_image_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    task_id      TEXT NOT NULL REFERENCES ai_generation_task (task_id),
    angle        TEXT CHECK (angle IS NULL OR angle IN ('front', 'side', 'back')),
    storage_key  TEXT,
    remote_url   TEXT,
    image_base64 TEXT,
    mime         TEXT,
    width        INTEGER,
    height       INTEGER,
    bytes        BIGINT,
    created_at   TIMESTAMP NOT NULL,
    CONSTRAINT ck_image_location CHECK ((storage_key IS NULL) <> (remote_url IS NULL))
);

INSERT INTO ai_generation_image_new
    (id, task_id, angle, storage_key, remote_url, image_base64, mime, width, height, bytes, created_at)
SELECT id, task_id, angle,
       CASE WHEN storage_key <> '' THEN storage_key END,
       CASE WHEN storage_key = '' THEN image_url END,
       image_base64, mime, width, height, bytes, created_at
FROM ai_generation_image;

DROP TABLE ai_generation_image;
ALTER TABLE ai_generation_image_new RENAME TO ai_generation_image;
CREATE INDEX idx_image_task ON ai_generation_image (task_id);
