-- Stock buckets (README "One hot product across Redis shards"): an arming may split its Redis
-- stock over n buckets, each under a hash tag of its own so that they land on different Redis
-- Cluster slots and masters. The tags are chosen when the sale is armed (from the cluster's slot
-- map at that moment) and never change, so they are kept with the arming: every stock node
-- finds a reservation's keys from (arming_id, bucket) without asking Redis.
ALTER TABLE seckill_activities
  ADD COLUMN buckets TINYINT UNSIGNED NOT NULL DEFAULT 1 COMMENT 'Redis stock buckets of this arming (1: one slot, the keys of activityKeys(arming_id))',
  ADD COLUMN bucket_tags VARCHAR(1024) NOT NULL DEFAULT '' COMMENT 'hash-tag suffixes of buckets 1..n-1, comma-separated (bucket 0 has none)';
