import ApiGateway from "moleculer-web";
import { getConfig } from "../../config";
import { resultEnvelope } from "../../lib/contract/envelope";
import { isRejection } from "../../lib/contract/errors";
import { readJsonBody } from "../../lib/http/body";
import { STREAM_PATH } from "./stream";
import type { ApiThis, AuthLevel, Req, Res } from "./types";

/** The flash sale's lane: this exact request skips the generic route pipeline (seckillLane). */
const SECKILL_LANE = { method: "POST", url: "/api/seckill", action: "stock.seckill", auth: "user" as AuthLevel };
const SECKILL_ALIAS = Object.freeze({ fullPath: SECKILL_LANE.url });

const isStreamUrl = (url = "") =>
	url.startsWith(STREAM_PATH) && (url.length === STREAM_PATH.length || url[STREAM_PATH.length] === "?");

/**
 * moleculer-web's own handler, which httpHandler overrides and falls back to for every other
 * request. Its typings declare the mixin a bare ServiceSchema, so its methods are untyped.
 */
const gatewayHttpHandler = (
	ApiGateway as unknown as {
		methods: { httpHandler(this: ApiThis, req: Req, res: Res, next?: () => void): Promise<void> };
	}
).methods.httpHandler;

export const laneMethods = {
	/**
	 * The HTTP server's handler. `POST /api/seckill` takes the lane; everything else goes
	 * through moleculer-web's route pipeline. Every request begins here (beginRequest).
	 */
	httpHandler(this: ApiThis, req: Req, res: Res, next?: () => void): Promise<void> {
		if (req.url === SECKILL_LANE.url && req.method === SECKILL_LANE.method) return this.seckillLane(req, res);
		// The result stream (stream.ts): a response that stays open fits no route of the pipeline.
		if (req.method === "GET" && isStreamUrl(req.url)) return this.resultStream(req, res);
		// Here, not as a route middleware: moleculer-web runs those after the body parsers, so a
		// request refused for its body (malformed, oversized) went uncounted and without headers.
		this.beginRequest(req, res);
		return gatewayHttpHandler.call(this, req, res, next);
	},

	/**
	 * The flash sale's hot path without the generic route pipeline (alias resolution, the
	 * `api.rest` context and its span, body-parser, parameter merging), which cost more than
	 * the sale itself. The contract is the same as every route's: security and CORS
	 * headers, the body limit, the local limit, the token, the shared limit, the action's
	 * own params validation, the envelope and status, metrics, the request log, the trace
	 * id (the action's context is the trace's root span). Errors go through sendError.
	 */
	async seckillLane(this: ApiThis, req: Req, res: Res): Promise<void> {
		this.beginRequest(req, res);
		this.writeCorsHeaders(this.settings, req, res, true);
		req.$alias = SECKILL_ALIAS;
		const traceId = (req.$traceId = this.broker.generateUid());
		try {
			const body = await readJsonBody(req, this.bodyLimit);
			this.limitLocal(req, res);
			// The same rule as every route's: 503 with Retry-After until the ended sessions are loaded.
			const user = this.verifyBearer(req.headers.authorization, SECKILL_LANE.auth, res)!;
			req.$userId = user.id;
			const params: Record<string, unknown> = typeof body === "object" && body !== null ? { ...body } : {};
			// A sale token may come as a header too (README "Sale tokens"); the body's wins.
			const saleToken = req.headers["x-sale-token"];
			if (typeof saleToken === "string" && params.sale_token === undefined) params.sale_token = saleToken;
			const rl = getConfig().rate_limit;
			if (rl.enabled && rl.distributed && !this.soldOut.has(Number((params as { product_id?: unknown }).product_id))) {
				await this.limitDistributed(user, SECKILL_LANE.action, req, res);
			}
			const data = await this.broker.call(SECKILL_LANE.action, params, { meta: { user }, requestID: traceId });
			// A gateway that started after the broadcast learns "sold out" from the answer.
			if (isRejection(data) && data.$rejected === "SECKILL_SOLD_OUT")
				this.soldOut.add(Number((params as { product_id?: unknown }).product_id));
			const out = resultEnvelope(data, traceId);
			this.sendJson(res, out.status, out.body, traceId, true);
		} catch (err) {
			this.sendError(req, res, err);
		}
	}
} satisfies Partial<ApiThis>;
