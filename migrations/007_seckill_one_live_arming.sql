-- At most one live arming per product, kept by the database itself: two concurrent inits of
-- one product could each retire the armings they saw and insert their own, leaving two live.
-- The generated column is the product id while the row is live and NULL otherwise, so the
-- unique key admits any number of retired armings and one live one.
UPDATE seckill_activities a
  JOIN (SELECT product_id, MAX(id) AS newest FROM seckill_activities WHERE status = 1 GROUP BY product_id) l
    ON l.product_id = a.product_id
   SET a.status = 0
 WHERE a.status = 1 AND a.id <> l.newest;

ALTER TABLE seckill_activities
  ADD COLUMN live_product_id BIGINT UNSIGNED GENERATED ALWAYS AS (IF(status = 1, product_id, NULL)) STORED COMMENT 'product_id while this arming is live, else NULL: at most one live arming per product',
  ADD UNIQUE KEY uk_seckill_live_product (live_product_id);
