-- Sessions that can end. Login and register open a session; its access tokens (JWTs) carry the
-- session id (`sid`), so ending the session ends every access token it issued. A session's
-- refresh tokens rotate on use: each is stored once, hashed, and presenting one that was
-- already used means two parties hold the session (theft), so the whole session is revoked.
CREATE TABLE user_sessions (
  id CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL COMMENT 'the sid claim of its access tokens',
  user_id BIGINT UNSIGNED NOT NULL,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  revoked_at DATETIME(3) NULL,
  revoke_reason VARCHAR(16) CHARACTER SET ascii NULL COMMENT 'logout, reuse or password',
  PRIMARY KEY (id),
  KEY idx_sessions_user (user_id, revoked_at),
  KEY idx_sessions_revoked (revoked_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE refresh_tokens (
  token_hash BINARY(32) NOT NULL COMMENT 'SHA-256 of the token: the token itself is never stored',
  session_id CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  expires_at DATETIME(3) NOT NULL,
  used_at DATETIME(3) NULL COMMENT 'set when rotated: presenting it again revokes the session',
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (token_hash),
  KEY idx_refresh_session (session_id),
  KEY idx_refresh_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
