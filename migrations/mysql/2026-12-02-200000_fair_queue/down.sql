DROP INDEX idx_task_user_rank ON ai_generation_task;
DROP INDEX idx_task_queue ON ai_generation_task;
CREATE INDEX idx_task_status_next_run ON ai_generation_task (status, next_run_at);
ALTER TABLE ai_generation_task DROP COLUMN queue_rank;
