/**
 * A compatibility adapter for ONE client: the Go version's prebuilt web client
 * (Aut-Ken/Gomall frontend/dist at commit 9aae0d4). It lives in the web-client driver's static
 * server (the harness's "small static server that proxies /api"), never in GoMall: GoMall's
 * REST contract stays as SPEC says.
 *
 * Why: that prebuilt bundle reads `data` itself as an array on three routes, where SPEC's
 * contract, and the Go backend the client was shipped with (its CartResponse{items, ...} and
 * OkWithList), send objects:
 * - GET /api/cart: the cart page and the product page's "加入购物车" call
 *   `setCart(res.data || [])`, then the header and the cart page run `items.reduce(...)`
 *   (`(l || []).reduce is not a function` on an object); SPEC sends
 *   `{items, total_count, total_price}`.
 * - GET /api/order: the orders page calls `setOrders(res.data || [])`, then `.map(...)`;
 *   SPEC sends the paged `{list, total, page, page_size, total_page}`.
 * - POST /api/order/checkout: the cart page shows "生成 ${res.data.length} 个订单";
 *   GoMall sends `{orders, total_price}` (so the toast would say "undefined").
 * The client's own source at the same commit already reads `data.items` / `data.list`
 * (frontend/src/pages/Cart.tsx, Orders.tsx, ProductDetail.tsx); its committed dist was built
 * before that fix. So this adapter stands in for rebuilding the client, not for a GoMall change.
 *
 * Only a successful (HTTP 200, `code` 0) JSON envelope of exactly these routes whose `data`
 * holds the expected array is rewritten: `data` becomes that array, the rest of the envelope
 * (code, message, trace_id) is kept. Every other answer passes through byte for byte.
 */

interface Rule {
	method: string;
	path: string;
	/** The field of SPEC's `data` object that holds what the client wants as `data`. */
	field: string;
}

export const GO_CLIENT_RULES: readonly Rule[] = [
	{ method: "GET", path: "/api/cart", field: "items" },
	{ method: "GET", path: "/api/order", field: "list" },
	{ method: "POST", path: "/api/order/checkout", field: "orders" }
];

/** The rule for a request (by method and path, the query string ignored), if the adapter may touch its answer. */
export function goClientRule(method: string | undefined, url: string | undefined): Rule | undefined {
	const pathname = new URL(url ?? "/", "http://x").pathname;
	return GO_CLIENT_RULES.find(r => r.method === method && r.path === pathname);
}

/**
 * The rewritten body, or null when the answer must pass through unchanged (not 200, not an
 * uncompressed JSON envelope with code 0, or `data[field]` not an array).
 */
export function adaptForGoClient(
	rule: Rule,
	status: number,
	headers: { "content-type"?: string; "content-encoding"?: string },
	body: Buffer
): Buffer | null {
	if (status !== 200 || !/^application\/json\b/i.test(headers["content-type"] ?? "")) return null;
	if (headers["content-encoding"] && headers["content-encoding"] !== "identity") return null;
	let envelope: any;
	try {
		envelope = JSON.parse(body.toString("utf8"));
	} catch {
		return null;
	}
	if (!envelope || envelope.code !== 0 || !envelope.data || !Array.isArray(envelope.data[rule.field])) return null;
	return Buffer.from(JSON.stringify({ ...envelope, data: envelope.data[rule.field] }));
}
