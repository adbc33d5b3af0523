DELETE FROM callback_delivery WHERE run > 0;
CREATE UNIQUE INDEX uq_callback_task_event ON callback_delivery (task_id, event_type);
ALTER TABLE callback_delivery DROP INDEX uq_callback_task_event_run;
ALTER TABLE callback_delivery DROP COLUMN run;
DROP INDEX idx_task_completed ON ai_generation_task;
ALTER TABLE ai_generation_task DROP COLUMN retries;
ALTER TABLE ai_generation_task DROP COLUMN cost_micros;
DROP TABLE task_events;
