ALTER TABLE ai_generation_task DROP COLUMN started_at;
