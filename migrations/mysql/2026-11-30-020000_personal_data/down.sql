DROP INDEX idx_task_inputs_purge ON ai_generation_task;
ALTER TABLE ai_generation_task DROP COLUMN purged_at;
ALTER TABLE ai_generation_task DROP COLUMN inputs_purged_at;
