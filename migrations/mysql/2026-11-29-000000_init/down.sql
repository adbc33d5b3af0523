DROP TABLE callback_delivery;
DROP TABLE ai_generation_image;
DROP TABLE ai_generation_task;
