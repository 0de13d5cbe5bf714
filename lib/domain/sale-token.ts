import crypto, { KeyObject } from "node:crypto";

/**
 * Flash-sale tokens (README "Sale tokens"): a short-lived permission to try to buy, bound to one
 * buyer, one arming and one product. The stock actor makes it (GET /api/seckill/token) and checks
 * it on the hot path (POST /api/seckill) with an HMAC alone: no Redis read, microseconds of CPU,
 * so a flood of forged tokens costs the mall no more than a flood of sold-out requests. Single
 * use is not decided here: the token's nonce is recorded by lua/seckill_reserve.lua, atomically
 * with the reservation it admits.
 *
 * The text is `<expires_at ms>.<nonce>.<mac>`: the user, arming and product are not in it, the
 * verifier takes them from the request (the caller's JWT, the product's live arming), so a token
 * of another buyer, product or arming fails the MAC like a forged one.
 */

/** HKDF info: this key is the jwt secret's for this one purpose, never a JWT signing key. */
const KEY_INFO = "gomall seckill sale-token v1";
const CAPTCHA_KEY_INFO = "gomall seckill captcha-answer v1";
const NONCE_BYTES = 16;
/** A token's text is 13 + 1 + 22 + 1 + 43 characters; anything much longer is not one. */
export const SALE_TOKEN_MAX_LENGTH = 128;
const TOKEN = /^(\d{1,15})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/;

export interface SaleTokenClaims {
	userId: number;
	arming: string;
	productId: number;
}

export type SaleTokenCheck =
	{ ok: true; nonce: string; expiresAt: number } | { ok: false; reason: "malformed" | "mac" | "expired" };

/**
 * The MAC key, derived from the jwt secret (so no new secret to deploy, and rotating one rotates
 * both). A KeyObject, made once: createHmac given a Buffer builds a key per call, which measured
 * 26-35 µs per token against 4-6 µs (bench: the hot path with tokens).
 */
export function saleTokenKey(jwtSecret: string): KeyObject {
	return crypto.createSecretKey(Buffer.from(crypto.hkdfSync("sha256", jwtSecret, Buffer.alloc(0), KEY_INFO, 32)));
}

function mac(key: KeyObject, c: SaleTokenClaims, expiresAt: number, nonce: string): string {
	// Fields joined with a separator none of them can contain: no two claim sets sign the same bytes.
	return crypto
		.createHmac("sha256", key)
		.update(`${c.userId}|${c.arming}|${c.productId}|${expiresAt}|${nonce}`)
		.digest("base64url");
}

export function makeSaleToken(
	key: KeyObject,
	claims: SaleTokenClaims,
	expiresAt: number,
	nonce = crypto.randomBytes(NONCE_BYTES).toString("base64url")
): string {
	return `${expiresAt}.${nonce}.${mac(key, claims, expiresAt, nonce)}`;
}

/** Checks the MAC (constant time) against the request's own claims, then the expiry. */
export function verifySaleToken(
	key: KeyObject,
	token: unknown,
	claims: SaleTokenClaims,
	now = Date.now()
): SaleTokenCheck {
	if (typeof token !== "string" || token.length > SALE_TOKEN_MAX_LENGTH) return { ok: false, reason: "malformed" };
	const m = TOKEN.exec(token);
	if (!m) return { ok: false, reason: "malformed" };
	const expiresAt = Number(m[1]);
	// The texts are compared, not the decoded bytes: base64url leaves the last character's low bits
	// unused, and a token that verifies must have exactly one spelling.
	const given = Buffer.from(m[3], "latin1");
	const expected = Buffer.from(mac(key, claims, expiresAt, m[2]), "latin1");
	if (!crypto.timingSafeEqual(given, expected)) return { ok: false, reason: "mac" };
	if (now >= expiresAt) return { ok: false, reason: "expired" };
	return { ok: true, nonce: m[2], expiresAt };
}

/** The captcha answers' key: its own HKDF info, so neither key's outputs say anything of the other's. */
export function captchaKey(jwtSecret: string): KeyObject {
	return crypto.createSecretKey(
		Buffer.from(crypto.hkdfSync("sha256", jwtSecret, Buffer.alloc(0), CAPTCHA_KEY_INFO, 32))
	);
}

/**
 * A captcha answer as kept in Redis: keyed (an arithmetic answer has a few dozen values, so a bare
 * hash would be read back by trying them all), and bound to its id, buyer and product.
 */
export function captchaAnswerHash(
	key: KeyObject,
	captchaId: string,
	userId: number,
	productId: number,
	answer: string
): string {
	return crypto
		.createHmac("sha256", key)
		.update(`${captchaId}|${userId}|${productId}|${answer.trim()}`)
		.digest("base64url");
}
