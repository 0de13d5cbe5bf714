import ApiGateway from "moleculer-web";
import { getConfig } from "../../config";
import { resultEnvelope } from "../../lib/contract/envelope";
import { isRejection, rejection } from "../../lib/contract/errors";
import { reservationActivity } from "../../lib/domain/reservation-activity";
import { SOLD_OUT_RECHECK_MAX } from "../../lib/domain/sold-out-flags";
import { readJsonBody } from "../../lib/http/body";
import { requestMs } from "./responses";
import { STREAM_PATH } from "./stream";
import type { ApiThis, AuthLevel, Req, Res } from "./types";

const SECKILL_REQUESTS = "gomall_seckill_requests_total";
const SOLD_OUT_LABELS = () => ({ result: "sold_out" });
/** The gateway's own "sold out": the rejection stock.seckill answers it with. */
const SOLD_OUT = rejection("SECKILL_SOLD_OUT");

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
		let called = false;
		let live = false;
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
			const pid = Number(params.product_id);
			// Most of a sale's requests come after it sold out, and the answer is known here: the
			// stock actor's broadcast set this flag (checked against Redis every 2 s, recheckSoldOut
			// in api.service.ts), so no context, call or span is made for it. A body stock.seckill
			// would refuse is still refused by it (the same schema), before anything is said.
			if (this.soldOut.has(pid) && this.checkSeckillParams(params) === true) return this.laneSoldOutAnswer(req, res);
			// A live request: the order drain of this process waits for it from here, the limiter
			// included (lib/domain/reservation-activity; the stock actor marks its own part too,
			// for a node without a gateway). The opening's requests wait longest in the limiter,
			// and a drain that took those moments for "quiet" wrote its orders into the opening.
			reservationActivity.begin();
			live = true;
			const rl = getConfig().rate_limit;
			if (rl.enabled && rl.distributed && !this.soldOut.has(pid)) {
				await this.limitDistributed(user, SECKILL_LANE.action, req, res);
				// The limiter's round trip is where a sale's opening waits longest (a win's median
				// 19 ms in the bench): a request whose sale sold out meanwhile is answered here too.
				if (this.soldOut.has(pid) && this.checkSeckillParams(params) === true) return this.laneSoldOutAnswer(req, res);
			}
			called = true;
			const epoch = this.soldOut.epoch(pid);
			const data = await this.broker.call(SECKILL_LANE.action, params, { meta: { user }, requestID: traceId });
			// A gateway that started after the broadcast learns "sold out" from the answer, unless
			// the units came back while it was on its way (a release, a re-arming).
			if (isRejection(data) && data.$rejected === "SECKILL_SOLD_OUT") this.soldOut.learn(pid, epoch);
			const out = resultEnvelope(data, traceId);
			this.sendJson(res, out.status, out.body, traceId, true);
		} catch (err) {
			this.sendError(req, res, err);
			// A call that reached stock.seckill is in its action's span; every other failure here
			// (limits, auth, body, an actor unreachable) gets the lane's.
			if (!called || res.statusCode >= 500) this.laneSpan(req, res.statusCode, "error", err);
		} finally {
			if (live) reservationActivity.end();
		}
	},

	/** "Sold out" from the gateway's flag: no context, call or span of stock.seckill. */
	laneSoldOutAnswer(this: ApiThis, req: Req, res: Res): void {
		this.laneSoldOut++;
		this.turnMetrics.increment(SECKILL_REQUESTS, "sold_out", SOLD_OUT_LABELS);
		const out = resultEnvelope(SOLD_OUT, req.$traceId!);
		this.sendJson(res, out.status, out.body, req.$traceId!, true);
		this.laneSpan(req, out.status, "sold_out");
	},

	/**
	 * The span of an answer the lane gave without calling stock.seckill (whose action span
	 * traces every win, and every answer that reached it). Errors and 5xx are always traced;
	 * "sold out" and limit (429) answers only as `tracing.lane_sample_rate` says (reloadable):
	 * they are nearly all of a sale's traffic and the same every time. A request left out
	 * keeps its trace id in the envelope, X-Trace-Id and the request log.
	 */
	laneSpan(this: ApiThis, req: Req, status: number, result: string, err?: unknown): void {
		const tracer = this.broker.tracer;
		if (!tracer.isEnabled()) return;
		const sampledAnswer = result === "sold_out" || status === 429;
		if (sampledAnswer && !(Math.random() < getConfig().tracing.lane_sample_rate)) return;
		const ms = requestMs(req);
		const span = tracer.startSpan(`${SECKILL_LANE.method} ${SECKILL_LANE.url}`, {
			traceID: req.$traceId,
			type: "http",
			sampled: true,
			service: this.fullName,
			tags: {
				http: { method: SECKILL_LANE.method, route: SECKILL_LANE.url, status },
				result,
				meta: { user: { id: req.$userId } }
			}
		});
		if (err !== undefined) span.setError(err as Error);
		// Made once the answer is known: it began when the request did.
		const end = Date.now();
		span.startTime = end - ms;
		span.finish(end);
	},

	/**
	 * Drops the sold-out flags whose stock came back: a unit released (an unpaid order closed)
	 * is announced by "seckill.available", and this catches the broadcast a gateway missed. No
	 * stock actor answering keeps the flags (the sale cannot be served then anyway).
	 */
	async recheckSoldOut(this: ApiThis): Promise<void> {
		if (!this.soldOut.size) return;
		const flags = [...this.soldOut];
		for (let i = 0; i < flags.length; i += SOLD_OUT_RECHECK_MAX) {
			const asked = flags.slice(i, i + SOLD_OUT_RECHECK_MAX);
			try {
				const still = new Set(
					await this.broker.call<number[], { product_ids: number[] }>("stock.soldOut", { product_ids: asked })
				);
				for (const pid of asked) if (!still.has(pid)) this.soldOut.delete(pid);
			} catch (err) {
				this.logger.debug(`sold-out recheck: no answer (${(err as Error).name})`);
				return;
			}
		}
	}
} satisfies Partial<ApiThis>;
