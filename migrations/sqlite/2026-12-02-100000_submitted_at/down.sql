DROP INDEX idx_task_submitted_status;
ALTER TABLE ai_generation_task DROP COLUMN submitted_at;
