DROP INDEX idx_task_inputs_purge;
ALTER TABLE ai_generation_task DROP COLUMN purged_at;
ALTER TABLE ai_generation_task DROP COLUMN inputs_purged_at;
