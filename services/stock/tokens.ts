import crypto from "node:crypto";
import svgCaptcha from "svg-captcha";
import { getConfig } from "../../config";
import { bizError, Rejection } from "../../lib/contract/errors";
import { captchaAnswerHash, makeSaleToken, verifySaleToken } from "../../lib/domain/sale-token";
import type { ActivityMeta, StockThis, TokenMethods } from "./types";

/** A captcha's answer in Redis, keyed-hashed (lib/domain/sale-token.ts), until answered once or expired. */
const captchaRedisKey = (captchaId: string) => `seckill:captcha:${captchaId}`;

/**
 * Sale tokens (README "Sale tokens"): handed out from the sale's start, to a logged-in buyer, after
 * a captcha when the activity asks for one; checked on the hot path by tokenRefusal.
 */
export const tokenMethods = {
	/** The activity, if it is open now: tokens (and captchas) exist only from the sale's start. */
	async openForTokens(this: StockThis, pid: number): Promise<ActivityMeta> {
		const meta = await this.activityFor(pid);
		if (!meta) throw bizError("SECKILL_NO_ACTIVITY");
		// This node's clock, with no slack: a token fetched early would let a script be ready and
		// waiting at the start, which is what opening only at the start is for.
		const now = Date.now();
		if (now < meta.start) throw bizError("SECKILL_NOT_STARTED");
		if (now >= meta.end) throw bizError("SECKILL_ENDED");
		return meta;
	},

	/**
	 * A token for this buyer, arming and product. An activity that takes no token gets one too: it is
	 * harmless there (ignored), and a client may then fetch one always, whatever the sale asks.
	 */
	async saleToken(this: StockThis, pid: number, userId: number, captchaId?: string, captchaAnswer?: string) {
		const meta = await this.openForTokens(pid);
		if (meta.captcha) {
			if (!captchaId || captchaAnswer === undefined) throw bizError("SECKILL_CAPTCHA_WRONG");
			// GETDEL: one answer per captcha, right or wrong, so guessing costs a new captcha each time.
			const kept = await this.redis.getdel(captchaRedisKey(captchaId));
			if (!kept || kept !== captchaAnswerHash(this.captchaKey, captchaId, userId, pid, captchaAnswer))
				throw bizError("SECKILL_CAPTCHA_WRONG");
		}
		const expiresAt = Date.now() + getConfig().seckill.token_ttl_s * 1000;
		const token = makeSaleToken(this.saleTokenKey, { userId, arming: meta.arming, productId: pid }, expiresAt);
		return { token, expires_at: new Date(expiresAt) };
	},

	/** An arithmetic captcha (svg-captcha); its answer kept only as a hash, bound to this buyer and product. */
	async saleCaptcha(this: StockThis, pid: number, userId: number) {
		await this.openForTokens(pid);
		const captcha = svgCaptcha.createMathExpr({ mathMin: 1, mathMax: 20, mathOperator: "+", noise: 2 });
		const captchaId = crypto.randomBytes(16).toString("base64url");
		await this.redis.set(
			captchaRedisKey(captchaId),
			captchaAnswerHash(this.captchaKey, captchaId, userId, pid, captcha.text),
			"EX",
			getConfig().seckill.captcha_ttl_s
		);
		return { captcha_id: captchaId, svg: captcha.data };
	},

	/**
	 * The hot path's check: a Rejection, or the token's nonce for lua/seckill_reserve.lua to spend
	 * ("" when the activity takes no token). Pure CPU (one HMAC), no Redis read.
	 */
	tokenRefusal(this: StockThis, meta: ActivityMeta, userId: number, saleToken: unknown): Rejection | string {
		if (!meta.require_token) return "";
		const check = verifySaleToken(this.saleTokenKey, saleToken, {
			userId,
			arming: meta.arming,
			productId: meta.product_id
		});
		if (check.ok) return check.nonce;
		return this.reject(saleToken === undefined ? "token_missing" : `token_${check.reason}`, "SECKILL_TOKEN_INVALID");
	}
} satisfies TokenMethods;
