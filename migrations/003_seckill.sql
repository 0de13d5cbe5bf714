CREATE TABLE seckill_activities (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  product_id BIGINT UNSIGNED NOT NULL,
  seckill_price DECIMAL(12,2) NOT NULL,
  total_stock INT NOT NULL COMMENT 'stock this activity was armed with',
  stock INT NOT NULL COMMENT 'units not yet turned into live orders',
  limit_per_user INT NOT NULL DEFAULT 1,
  start_time DATETIME(3) NOT NULL,
  end_time DATETIME(3) NOT NULL,
  status TINYINT NOT NULL DEFAULT 1 COMMENT '1 armed, 0 superseded by a re-arm',
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  KEY idx_seckill_product_status (product_id, status),
  KEY idx_seckill_status_end (status, end_time),
  CONSTRAINT chk_seckill_stock CHECK (stock >= 0 AND stock <= total_stock),
  CONSTRAINT chk_seckill_limit CHECK (limit_per_user >= 1),
  CONSTRAINT chk_seckill_window CHECK (end_time > start_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

ALTER TABLE orders
  ADD COLUMN activity_id BIGINT UNSIGNED NULL COMMENT 'flash-sale activity, NULL for ordinary orders' AFTER pay_type,
  ADD COLUMN seckill_seq INT NULL COMMENT 'the buyer''s n-th reservation in the activity' AFTER activity_id,
  ADD UNIQUE KEY uk_orders_activity_buyer_seq (activity_id, user_id, seckill_seq);
