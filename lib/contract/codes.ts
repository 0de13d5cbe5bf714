/**
 * Every business code of the REST contract (SPEC "Business codes"), defined once.
 *
 * Actions refer to a code by its key (`"SECKILL_SOLD_OUT"`); the key travels between nodes as
 * the Moleculer error `type` (or a rejection's `reason`) and the gateway maps it back here to
 * the HTTP status and numeric code of the envelope.
 */
export interface CodeDef {
	readonly biz: number;
	readonly http: number;
	readonly message: string;
}

function def(biz: number, http: number, message: string): CodeDef {
	return Object.freeze({ biz, http, message });
}

export const Codes = Object.freeze({
	// general
	BAD_REQUEST: def(400, 400, "bad request"),
	UNAUTHORIZED: def(401, 401, "not logged in"),
	FORBIDDEN: def(403, 403, "forbidden"),
	NOT_FOUND: def(404, 404, "not found"),
	CONFLICT: def(409, 409, "conflict"),
	// An Idempotency-Key already answered another request (SPEC "Repeated requests").
	IDEMPOTENCY_KEY_REUSED: def(422, 422, "this Idempotency-Key was already used with another request"),
	PAYLOAD_TOO_LARGE: def(400, 413, "request body too large"),
	TOO_MANY_REQUESTS: def(429, 429, "too many requests"),
	INTERNAL: def(500, 500, "internal server error"),
	UNAVAILABLE: def(503, 503, "service unavailable, please retry"),

	// user
	USER_NOT_FOUND: def(10001, 404, "user not found"),
	USER_ALREADY_EXISTS: def(10002, 409, "username or email already registered"),
	USER_DISABLED: def(10003, 403, "user is disabled"),
	USER_WRONG_PASSWORD: def(10004, 401, "wrong username or password"),
	// The same business code for a logged-in user's wrong old password, but not a 401: the caller
	// is authenticated, and clients log out on a 401.
	USER_OLD_PASSWORD_WRONG: def(10004, 400, "old password is wrong"),
	TOKEN_EXPIRED: def(10005, 401, "token expired"),
	TOKEN_INVALID: def(10006, 401, "token invalid"),
	NOT_ADMIN: def(10010, 403, "admin role required"),

	// product
	PRODUCT_NOT_FOUND: def(20001, 404, "product not found"),
	PRODUCT_OFF_SHELF: def(20002, 400, "product is off shelf"),
	PRODUCT_OUT_OF_STOCK: def(20003, 409, "product out of stock"),
	PRODUCT_NOT_ENOUGH_STOCK: def(20004, 409, "not enough stock"),

	// order
	ORDER_NOT_FOUND: def(30001, 404, "order not found"),
	ORDER_WRONG_STATUS: def(30003, 409, "order status does not allow this action"),
	ORDER_CLOSED: def(30006, 409, "order expired or closed"),
	ORDER_ALREADY_PAID: def(30007, 409, "order already paid"),
	// Payments through a provider (SPEC "Payments").
	ORDER_PAY_TYPE_UNAVAILABLE: def(30008, 400, "this pay_type is not available"),
	ORDER_NOT_REFUNDABLE: def(30009, 409, "order cannot be refunded (not paid, or already shipped)"),
	PAYMENT_PROVIDER_UNAVAILABLE: def(30010, 503, "payment provider unavailable, please retry"),
	PAYMENT_PROVIDER_REFUSED: def(30011, 502, "payment provider refused the request"),

	// cart
	CART_EMPTY: def(50001, 400, "cart is empty"),
	CART_ITEM_NOT_FOUND: def(50002, 404, "item not in cart"),
	CART_NOT_ENOUGH_STOCK: def(50007, 409, "not enough stock"),
	CART_PRODUCT_OFF_SHELF: def(50009, 400, "product is off shelf"),

	// seckill
	SECKILL_NOT_STARTED: def(60001, 400, "flash sale has not started"),
	SECKILL_ENDED: def(60002, 400, "flash sale has ended"),
	SECKILL_SOLD_OUT: def(60003, 409, "sold out"),
	SECKILL_LIMIT_REACHED: def(60004, 409, "purchase limit reached"),
	SECKILL_ORDER_FAILED: def(60005, 503, "order could not be queued, please retry"),
	SECKILL_NO_ACTIVITY: def(60008, 404, "no such flash-sale activity"),
	SECKILL_ARMING_BUSY: def(60009, 409, "this product is being armed by another request; try again"),
	SECKILL_RECONCILE_BUSY: def(60010, 409, "a reconciliation is running on another node"),
	SECKILL_NOT_FAILED: def(60011, 409, "this reservation is not failed (already replayed, released or ordered)"),
	// Sale tokens (README "Sale tokens"): one business code for every token refusal, since a client
	// does the same for each (fetch a new token); a reused one has its own key, message and metric.
	SECKILL_TOKEN_INVALID: def(60012, 403, "sale token missing, invalid or expired; fetch a new one"),
	SECKILL_TOKEN_USED: def(60012, 403, "sale token already used; fetch a new one"),
	SECKILL_CAPTCHA_WRONG: def(60013, 400, "captcha answer wrong or expired; fetch a new captcha"),
	// Pushed results (README "Pushed results (SSE)"): a bound on open streams, so 429 with Retry-After.
	SECKILL_STREAM_USER_LIMIT: def(60014, 429, "too many result streams open for this user; close one first"),
	SECKILL_STREAM_GATEWAY_FULL: def(60015, 429, "this gateway has no room for another result stream; retry"),

	// upload (the Go version's 70001- range)
	UPLOAD_NO_FILE: def(70001, 400, "no file in the request"),
	UPLOAD_TOO_LARGE: def(70002, 413, "file too large"),
	UPLOAD_NOT_IMAGE: def(70003, 400, "not an image (PNG, JPEG, GIF or WebP)"),
	UPLOAD_SAVE_FAILED: def(70004, 500, "file could not be saved"),
	UPLOAD_NOT_FOUND: def(70005, 404, "file not found"),
	UPLOAD_TOO_MANY_FILES: def(70007, 400, "too many files in one request"),
	UPLOAD_NOT_MULTIPART: def(70008, 415, "request body must be multipart/form-data"),
	UPLOAD_MALFORMED: def(70008, 400, "malformed multipart body"),
	// A rate over a day, so 429 with Retry-After (the next UTC midnight): the same request succeeds then.
	UPLOAD_QUOTA_EXCEEDED: def(70009, 429, "daily upload quota reached")
});

export type CodeKey = keyof typeof Codes;

export function isCodeKey(key: unknown): key is CodeKey {
	return typeof key === "string" && Object.prototype.hasOwnProperty.call(Codes, key);
}
