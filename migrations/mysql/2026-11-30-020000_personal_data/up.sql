-- People's photos are personal data (README, "Personal data").
-- inputs_purged_at: when the input retention cleanup (INPUT_RETENTION) deleted the task's uploaded input images (set on every task it has processed, also those without uploads); NULL while they are kept.
ALTER TABLE ai_generation_task ADD COLUMN inputs_purged_at DATETIME(6) NULL;
-- purged_at: when the owner's data was erased (`modelgen users purge`, DELETE /admin/users/{user_id}/data): images deleted, prompt and body profile blanked.
ALTER TABLE ai_generation_task ADD COLUMN purged_at DATETIME(6) NULL;
-- The cleanup's claim: ended tasks not processed yet, oldest first.
CREATE INDEX idx_task_inputs_purge ON ai_generation_task (inputs_purged_at, completed_at);
