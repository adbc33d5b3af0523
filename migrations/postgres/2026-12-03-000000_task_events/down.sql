DELETE FROM callback_delivery WHERE run > 0;
ALTER TABLE callback_delivery ADD CONSTRAINT uq_callback_task_event UNIQUE (task_id, event_type);
ALTER TABLE callback_delivery DROP CONSTRAINT uq_callback_task_event_run;
ALTER TABLE callback_delivery DROP COLUMN run;
DROP INDEX idx_task_completed;
ALTER TABLE ai_generation_task DROP COLUMN retries;
ALTER TABLE ai_generation_task DROP COLUMN cost_micros;
DROP TABLE task_events;
