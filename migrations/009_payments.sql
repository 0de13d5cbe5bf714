-- Payments through a provider (SPEC "Payments", issue #23). Status 6: refunded by the buyer's
-- request (the next free number: 0..5 keep their meaning for the Go version's clients).
ALTER TABLE orders
  MODIFY status TINYINT NOT NULL DEFAULT 1 COMMENT '0 processing, 1 pending payment, 2 paid, 3 shipped, 4 completed, 5 cancelled/closed, 6 refunded',
  ADD COLUMN refunded_at DATETIME(3) NULL AFTER closed_at;

-- The provider's prepay per order (WeChat Native: code_url), reused while it is valid.
CREATE TABLE payment_prepays (
  order_no VARCHAR(32) NOT NULL,
  provider VARCHAR(16) NOT NULL,
  code_url VARCHAR(512) NOT NULL,
  expires_at DATETIME(3) NOT NULL COMMENT 'the provider refuses payment past this (the order''s own deadline at most)',
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (order_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The ledger: each provider transaction applied once (its unique key), whatever the number of
-- notifies and queries that report it.
CREATE TABLE payments (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  provider VARCHAR(16) NOT NULL,
  transaction_id VARCHAR(64) NOT NULL,
  order_no VARCHAR(32) NOT NULL,
  amount_fen BIGINT NOT NULL,
  outcome VARCHAR(16) NOT NULL COMMENT 'paid: the order became paid; refund: it had closed, the money goes back',
  source VARCHAR(16) NOT NULL COMMENT 'notify or query: how the transaction was learnt',
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  UNIQUE KEY uk_payments_provider_transaction (provider, transaction_id),
  KEY idx_payments_order (order_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Refunds: one per order (its unique key), out_refund_no the provider's idempotency key.
CREATE TABLE refunds (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  order_no VARCHAR(32) NOT NULL,
  out_refund_no VARCHAR(64) NOT NULL,
  provider VARCHAR(16) NOT NULL,
  amount_fen BIGINT NOT NULL,
  reason VARCHAR(16) NOT NULL COMMENT 'buyer: requested; paid_after_close: the payment came after the order closed',
  status VARCHAR(16) NOT NULL COMMENT 'PENDING (not yet accepted by the provider), PROCESSING, SUCCESS, CLOSED, ABNORMAL',
  refund_id VARCHAR(64) NULL COMMENT 'the provider''s id',
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  PRIMARY KEY (id),
  UNIQUE KEY uk_refunds_order (order_no),
  UNIQUE KEY uk_refunds_out_refund_no (out_refund_no),
  KEY idx_refunds_status (status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
