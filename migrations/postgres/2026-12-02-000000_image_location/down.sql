-- Back to frozen URLs: stored images get a relative `/images/<key>` URL (the
-- absolute one they had is gone); remote images keep theirs.
ALTER TABLE ai_generation_image DROP CONSTRAINT ck_image_location;
UPDATE ai_generation_image SET remote_url = '/images/' || storage_key WHERE remote_url IS NULL;
UPDATE ai_generation_image SET storage_key = '' WHERE storage_key IS NULL;
UPDATE ai_generation_image SET mime = 'application/octet-stream' WHERE mime IS NULL;
UPDATE ai_generation_image SET width = 0 WHERE width IS NULL;
UPDATE ai_generation_image SET height = 0 WHERE height IS NULL;
UPDATE ai_generation_image SET bytes = 0 WHERE bytes IS NULL;
ALTER TABLE ai_generation_image RENAME COLUMN remote_url TO image_url;
ALTER TABLE ai_generation_image
    ALTER COLUMN image_url SET NOT NULL,
    ALTER COLUMN storage_key SET NOT NULL,
    ALTER COLUMN mime SET NOT NULL,
    ALTER COLUMN width SET NOT NULL,
    ALTER COLUMN height SET NOT NULL,
    ALTER COLUMN bytes SET NOT NULL;
