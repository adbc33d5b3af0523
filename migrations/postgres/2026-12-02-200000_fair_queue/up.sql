-- Fair per-user queueing (crates/persistence/src/fair.rs; docs/design.md,
-- "Fair queueing and claims").
-- queue_rank: the task's place in the submit order while it waits to be
-- submitted upstream (status 'submitted', submitted_at NULL, not parked);
-- NULL otherwise. A new task of a user gets max(head, the user's last queued
-- rank + 1), or the head's rank when the user has nothing queued, so one
-- user's batch cannot hold back another user's task by more than a turn.
ALTER TABLE ai_generation_task ADD COLUMN queue_rank BIGINT;
-- Existing queued rows: each user's queued tasks, oldest first, get ranks
-- 0, 1, 2, ... (what the rule gives users who all queued at once): the users
-- take turns from the first claim on.
UPDATE ai_generation_task SET queue_rank = ranked.queue_rank
FROM (
    SELECT task_id,
           ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY next_run_at, task_id) - 1 AS queue_rank
    FROM ai_generation_task
    WHERE status = 'submitted' AND submitted_at IS NULL AND external_task_id IS NULL
          AND next_run_at < '9999-01-01 00:00:00'
) AS ranked
WHERE ai_generation_task.task_id = ranked.task_id;
-- The claim's two lanes, each read in index order (no sort of the backlog):
-- polls are `status = ? AND queue_rank IS NULL AND next_run_at <= now` in
-- next_run_at order (one range per active status), submits `status =
-- 'submitted' AND queue_rank IS NOT NULL` in (queue_rank, next_run_at,
-- task_id) order. The same index gives the head rank (its first ranked entry),
-- the queue depth (a count of the ranked range) and a task's position (a count
-- of the range before it). It replaces idx_task_status_next_run, of which it
-- is a superset for every query that used it.
CREATE INDEX idx_task_queue ON ai_generation_task (status, queue_rank, next_run_at, task_id);
DROP INDEX idx_task_status_next_run;
-- A user's last queued rank: the last entry of the user's range.
CREATE INDEX idx_task_user_rank ON ai_generation_task (user_id, queue_rank);
