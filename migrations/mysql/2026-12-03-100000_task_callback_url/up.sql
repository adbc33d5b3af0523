-- A task's own callback receiver (README, "Callbacks"): the create's optional
-- `callback_url`, on a host of CALLBACK_URL_ALLOWED_HOSTS; NULL sends the
-- task's callback to CALLBACK_URL.
ALTER TABLE ai_generation_task ADD COLUMN callback_url VARCHAR(2048) NULL;
