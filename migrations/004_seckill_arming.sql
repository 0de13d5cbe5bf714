-- Every arming of a flash sale gets an identity that is never reused, unlike the table's
-- auto-increment id (a recreated or restored database hands out the same ids again while
-- Redis and RabbitMQ still hold the old sale's keys and messages). Redis keys and queue
-- messages carry it, and the order writer only applies a message whose arming matches.
ALTER TABLE seckill_activities
  ADD COLUMN arming_id CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL COMMENT 'globally unique id of this arming: Redis keys and queue messages carry it' AFTER id;

UPDATE seckill_activities SET arming_id = REPLACE(UUID(), '-', '') WHERE arming_id IS NULL;

ALTER TABLE seckill_activities
  MODIFY arming_id CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL COMMENT 'globally unique id of this arming: Redis keys and queue messages carry it',
  ADD UNIQUE KEY uk_seckill_arming (arming_id);
