const TRACED_PARAMS = ["id", "product_id", "order_no", "quantity", "page", "page_size", "status"];

/**
 * An action span's tags: the whitelisted params and the caller's user id when it starts, the
 * response's order_no when it ends. The same tags Moleculer's path lists would give, without
 * lodash parsing a path per field on every call (it showed in the flash sale's profile).
 */
export function actionSpanTags(this: unknown, ctx: { params?: any; meta?: any }, res?: any): Record<string, unknown> {
	if (arguments.length > 1)
		return res && typeof res === "object" && res.order_no !== undefined ? { response: { order_no: res.order_no } } : {};
	const params: Record<string, unknown> = {};
	const p = ctx.params;
	if (p && typeof p === "object") for (const k of TRACED_PARAMS) if (p[k] !== undefined) params[k] = p[k];
	const userId = ctx.meta?.user?.id;
	return userId === undefined ? { params } : { params, meta: { user: { id: userId } } };
}
