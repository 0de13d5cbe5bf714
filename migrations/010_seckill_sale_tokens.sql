-- Sale tokens (README "Sale tokens"): an arming may require POST /api/seckill to carry a
-- short-lived single-use token from GET /api/seckill/token, and fetching one may require an
-- arithmetic captcha's answer. Kept with the arming (its Redis info hash has them too) so that
-- reconciliation rebuilds a lost arming as it was armed.
ALTER TABLE seckill_activities
  ADD COLUMN require_token TINYINT UNSIGNED NOT NULL DEFAULT 0 COMMENT '1: POST /api/seckill needs a sale token (GET /api/seckill/token)',
  ADD COLUMN captcha TINYINT UNSIGNED NOT NULL DEFAULT 0 COMMENT '1: a sale token is handed out only for a captcha answer (implies require_token)';
