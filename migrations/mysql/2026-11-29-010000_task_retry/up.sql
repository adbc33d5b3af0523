-- When the current run of a task started: NULL means created_at; set when an operator retries a failed task (`modelgen tasks retry`), so TASK_TIMEOUT counts from the retry.
ALTER TABLE ai_generation_task ADD COLUMN started_at DATETIME(6) NULL;
