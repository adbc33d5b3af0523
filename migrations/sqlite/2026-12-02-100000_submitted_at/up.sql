-- Two clocks per task (README, "How a task moves"): QUEUE_TIMEOUT bounds the
-- time before the upstream accepts the task, TASK_TIMEOUT the upstream run
-- from then on.
-- submitted_at: when the upstream accepted the current run (its task id was
-- stored); NULL while the task waits to be submitted.
ALTER TABLE ai_generation_task ADD COLUMN submitted_at TIMESTAMP;
-- Existing rows already sent upstream: the earliest instant their submission
-- can have happened (the start of their run), which keeps TASK_TIMEOUT of a
-- task in flight during the upgrade what it was before.
UPDATE ai_generation_task SET submitted_at = COALESCE(started_at, created_at)
    WHERE external_task_id IS NOT NULL;
-- The submit queue is `submitted_at IS NULL AND status = 'submitted'`, in
-- `next_run_at` order. This index alone serves its depth, its oldest entry,
-- a task's position in it, and the drain rate (`submitted_at > now - window`).
CREATE INDEX idx_task_submitted_status ON ai_generation_task (submitted_at, status, next_run_at);
