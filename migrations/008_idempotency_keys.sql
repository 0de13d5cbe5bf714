-- Idempotency-Key (SPEC "Repeated requests"): the first answer to a user's key, stored in the
-- same transaction as the orders it reports, so the answer and its effect commit together. The
-- primary key is what a concurrent request with the same key waits on; it then reads the answer.
CREATE TABLE idempotency_keys (
  user_id BIGINT UNSIGNED NOT NULL,
  idem_key VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL COMMENT 'the Idempotency-Key header, 1..128 printable ASCII',
  request_hash BINARY(32) NOT NULL COMMENT 'SHA-256 of the operation and its canonical parameters: the same key with another request is refused',
  response MEDIUMTEXT NOT NULL COMMENT 'the first answer (the envelope data, HTTP 200), JSON',
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  expires_at DATETIME(3) NOT NULL COMMENT 'ignored after this, purged periodically',
  PRIMARY KEY (user_id, idem_key),
  KEY idx_idempotency_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
