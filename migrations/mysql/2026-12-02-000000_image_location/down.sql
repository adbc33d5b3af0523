-- Back to frozen URLs: stored images get a relative `/images/<key>` URL (the
-- absolute one they had is gone); remote images keep theirs.
-- (DROP CONSTRAINT needs MySQL 8.0.19+ or MariaDB.)
ALTER TABLE ai_generation_image DROP CONSTRAINT ck_image_location;
UPDATE ai_generation_image SET remote_url = CONCAT('/images/', storage_key) WHERE remote_url IS NULL;
UPDATE ai_generation_image SET storage_key = '' WHERE storage_key IS NULL;
UPDATE ai_generation_image SET mime = 'application/octet-stream' WHERE mime IS NULL;
UPDATE ai_generation_image SET width = 0 WHERE width IS NULL;
UPDATE ai_generation_image SET height = 0 WHERE height IS NULL;
UPDATE ai_generation_image SET bytes = 0 WHERE bytes IS NULL;
ALTER TABLE ai_generation_image
    CHANGE COLUMN remote_url image_url MEDIUMTEXT NOT NULL,
    MODIFY COLUMN storage_key MEDIUMTEXT NOT NULL,
    MODIFY COLUMN mime VARCHAR(64) NOT NULL,
    MODIFY COLUMN width INT NOT NULL,
    MODIFY COLUMN height INT NOT NULL,
    MODIFY COLUMN bytes BIGINT NOT NULL;
