ALTER TABLE ai_generation_task DROP COLUMN callback_url;
