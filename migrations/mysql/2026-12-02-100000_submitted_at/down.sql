DROP INDEX idx_task_submitted_status ON ai_generation_task;
ALTER TABLE ai_generation_task DROP COLUMN submitted_at;
