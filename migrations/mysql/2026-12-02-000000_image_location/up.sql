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
ALTER TABLE ai_generation_image
    CHANGE COLUMN image_url remote_url MEDIUMTEXT NULL,
    MODIFY COLUMN storage_key MEDIUMTEXT NULL,
    MODIFY COLUMN mime VARCHAR(64) NULL,
    MODIFY COLUMN width INT NULL,
    MODIFY COLUMN height INT NULL,
    MODIFY COLUMN bytes BIGINT NULL;
UPDATE ai_generation_image SET remote_url = NULL WHERE storage_key <> '';
UPDATE ai_generation_image SET storage_key = NULL WHERE storage_key = '';
ALTER TABLE ai_generation_image
    ADD CONSTRAINT ck_image_location CHECK ((storage_key IS NULL) <> (remote_url IS NULL));
