import { Errors } from "moleculer";
import { getConfig } from "../../config";
import { bizError } from "../../lib/contract/errors";
import type { QueuedItem, ResultItem, StreamState } from "../../lib/domain/seckill-results";
import type { ApiThis, Req, Res } from "./types";

/** Pushed results (README "Pushed results (SSE)"): taken off the generic pipeline like the sale's lane. */
export const STREAM_PATH = "/api/seckill/result/stream";
const STREAM_ALIAS = Object.freeze({ fullPath: STREAM_PATH });
/** The most buyers one re-check reads (stock.resultStates' bound). */
const RECHECK_CHUNK = 5000;

type StatesRead = { sold_out: boolean; states: StreamState[] };
type StatesParams = { product_id: number; user_ids: number[] };

const frame = (event: string, data: unknown) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

/**
 * One buyer's open stream: `queued`, then exactly one final event (`success` or `failed`), then
 * the end. Whatever tells it first (the initial read, a pushed event, a re-check) wins; what
 * comes later is dropped, so two sources never make two final events. Frames decided before the
 * response's head is written (the initial read still in flight) wait in `pending`.
 */
export class ResultStream {
	orderNo: string | null = null;
	done = false;
	closed = false;
	heartbeat: NodeJS.Timeout | null = null;
	private queuedSent = false;
	private started = false;
	private pending: string[] = [];

	constructor(
		readonly productId: number,
		readonly userId: number,
		readonly res: Res
	) {}

	queued(orderNo: string): void {
		if (this.done || (this.queuedSent && this.orderNo === orderNo)) return;
		this.orderNo = orderNo;
		this.queuedSent = true;
		this.write(frame("queued", { order_no: orderNo }));
	}

	/** The final event; one that names a reservation follows its `queued`, sent first if missing. */
	finish(status: "success" | "failed", orderNo: string | null, reason?: string): void {
		if (this.done) return;
		if (orderNo && !(this.queuedSent && this.orderNo === orderNo)) this.queued(orderNo);
		this.done = true;
		const data =
			status === "success"
				? { order_no: orderNo }
				: { reason: reason ?? "", ...(orderNo ? { order_no: orderNo } : {}) };
		this.write(frame(status, data));
		if (this.started) this.res.end();
	}

	/** The head and the frames decided so far; ends at once when the final one is among them. */
	start(retryMs: number): void {
		if (this.closed || this.started) return;
		this.started = true;
		this.res.writeHead(200, {
			"Content-Type": "text/event-stream; charset=utf-8",
			"Cache-Control": "no-cache, no-transform",
			// Proxies (nginx) would otherwise hold the events back in their buffers.
			"X-Accel-Buffering": "no"
		});
		this.res.write(`retry: ${retryMs}\n\n` + this.pending.join(""));
		this.pending = [];
		if (this.done) this.res.end();
	}

	/** Ends a stream whose head is out; one still reading its state is answered by that read. */
	end(): void {
		if (this.started) this.res.end();
	}

	ping(): void {
		if (this.started && !this.done) this.res.write(": ping\n\n");
	}

	private write(text: string): void {
		if (this.closed) return;
		if (this.started) this.res.write(text);
		else this.pending.push(text);
	}
}

/** This gateway's open streams, indexed by buyer and by product; the bounds count them here. */
export class ResultStreams {
	readonly all = new Set<ResultStream>();
	private readonly byBuyer = new Map<string, Set<ResultStream>>();
	private readonly byProduct = new Map<number, Set<ResultStream>>();
	private readonly perUser = new Map<number, number>();
	/** products being re-checked; true: sold out again meanwhile, read once more */
	readonly rechecking = new Map<number, boolean>();

	get size(): number {
		return this.all.size;
	}

	countOf(userId: number): number {
		return this.perUser.get(userId) ?? 0;
	}

	of(productId: number, userId: number): Iterable<ResultStream> {
		return this.byBuyer.get(`${productId}:${userId}`) ?? [];
	}

	/** The products with a stream still waiting for its final event, and those streams' buyers. */
	undecided(): Map<number, number[]> {
		const out = new Map<number, number[]>();
		for (const [pid, set] of this.byProduct) {
			const ids = [...new Set([...set].filter(s => !s.done).map(s => s.userId))];
			if (ids.length) out.set(pid, ids);
		}
		return out;
	}

	/** The product's streams that hold no reservation yet: the ones its selling out may end. */
	waiting(productId: number): ResultStream[] {
		return [...(this.byProduct.get(productId) ?? [])].filter(s => !s.done && !s.orderNo);
	}

	add(s: ResultStream): void {
		this.all.add(s);
		add(this.byBuyer, `${s.productId}:${s.userId}`, s);
		add(this.byProduct, s.productId, s);
		this.perUser.set(s.userId, this.countOf(s.userId) + 1);
	}

	remove(s: ResultStream): boolean {
		if (!this.all.delete(s)) return false;
		remove(this.byBuyer, `${s.productId}:${s.userId}`, s);
		remove(this.byProduct, s.productId, s);
		const n = this.countOf(s.userId) - 1;
		if (n > 0) this.perUser.set(s.userId, n);
		else this.perUser.delete(s.userId);
		return true;
	}
}

function add<K>(m: Map<K, Set<ResultStream>>, k: K, s: ResultStream) {
	let set = m.get(k);
	if (!set) m.set(k, (set = new Set()));
	set.add(s);
}

function remove<K>(m: Map<K, Set<ResultStream>>, k: K, s: ResultStream) {
	const set = m.get(k);
	if (!set) return;
	set.delete(s);
	if (!set.size) m.delete(k);
}

export const streamMethods = {
	/**
	 * GET /api/seckill/result/stream?product_id=: the same contract as every route up to the
	 * stream's head (security and CORS headers, the local limit, the token, the shared limit,
	 * errors as the envelope through sendError, metrics, the trace id). The stream is registered
	 * before the buyer's state is read, so a result pushed between the two is not missed.
	 */
	async resultStream(this: ApiThis, req: Req, res: Res): Promise<void> {
		this.beginRequest(req, res);
		this.writeCorsHeaders(this.settings, req, res, true);
		req.$alias = STREAM_ALIAS;
		const traceId = (req.$traceId = this.broker.generateUid());
		res.setHeader("X-Trace-Id", traceId);
		let stream: ResultStream | null = null;
		try {
			this.limitLocal(req, res);
			const user = this.verifyBearer(req.headers.authorization, "user", res)!;
			req.$userId = user.id;
			const raw = new URLSearchParams(req.url?.split("?")[1] ?? "").get("product_id");
			const productId = Number(raw);
			if (!raw || !Number.isSafeInteger(productId) || productId <= 0)
				throw new Errors.ValidationError("Parameters validation error!", "VALIDATION_ERROR", [
					{ field: "product_id", message: "The 'product_id' field must be a positive integer." }
				]);
			const rl = getConfig().rate_limit;
			if (rl.enabled && rl.distributed) await this.limitDistributed(user, "stock.result", req, res);
			// A draining gateway ended its streams; their clients must reconnect to another node.
			if (this.draining) {
				res.setHeader("Retry-After", "1");
				throw bizError("UNAVAILABLE");
			}
			const c = getConfig().seckill.stream;
			const refused =
				this.streams.countOf(user.id) >= c.per_user
					? "SECKILL_STREAM_USER_LIMIT"
					: this.streams.size >= c.max
						? "SECKILL_STREAM_GATEWAY_FULL"
						: null;
			if (refused) {
				this.broker.metrics.increment("gomall_seckill_streams_refused_total", { reason: refused });
				res.setHeader("Retry-After", String(Math.max(1, Math.ceil(c.retry_ms / 1000))));
				throw bizError(refused);
			}
			stream = this.openStream(req, new ResultStream(productId, user.id, res));
			const read = await this.broker.call<StatesRead, StatesParams>(
				"stock.resultStates",
				{ product_id: productId, user_ids: [user.id] },
				{ meta: { user }, requestID: traceId }
			);
			stream.start(c.retry_ms);
			this.applyStreamState(stream, read.states[0], read.sold_out || this.soldOut.has(productId));
		} catch (err) {
			if (stream) this.closeStream(req, stream);
			this.sendError(req, res, err);
		}
	},

	/** Registered, counted, its heartbeat running; everything undone when either side closes. */
	openStream(this: ApiThis, req: Req, s: ResultStream): ResultStream {
		this.streams.add(s);
		this.broker.metrics.set("gomall_seckill_streams", this.streams.size);
		// moleculer-web's idle timeout (httpServerTimeout) would cut a stream between heartbeats.
		req.socket.setTimeout(0);
		s.heartbeat = setInterval(() => s.ping(), getConfig().seckill.stream.heartbeat_s * 1000);
		s.heartbeat.unref();
		// The response's close, not the request's: the request closes once its (empty) body is read.
		s.res.once("close", () => this.closeStream(req, s));
		return s;
	},

	closeStream(this: ApiThis, req: Req, s: ResultStream): void {
		s.closed = true;
		if (s.heartbeat) clearInterval(s.heartbeat);
		s.heartbeat = null;
		if (!this.streams.remove(s)) return;
		this.broker.metrics.set("gomall_seckill_streams", this.streams.size);
		// A client that went away never lets the response finish: counted here instead.
		if (!s.res.writableFinished && s.res.headersSent) this.observe(req, s.res);
	},

	/** Ends every stream (draining, stopping): EventSource clients reconnect, to another node. */
	endStreams(this: ApiThis): void {
		for (const s of [...this.streams.all]) s.end();
	},

	/** What a read (stock.resultStates) says, applied; "none" ends the stream only once sold out. */
	applyStreamState(this: ApiThis, s: ResultStream, state: StreamState, soldOut: boolean): void {
		if (state.status === "queued") s.queued(state.order_no!);
		else if (state.status === "success") s.finish("success", state.order_no);
		else if (state.status === "failed") s.finish("failed", state.order_no, state.reason);
		else if (soldOut && !s.orderNo) s.finish("failed", null, "sold_out");
	},

	/** seckill.queued: the buyers who won a reservation. */
	streamsQueued(this: ApiThis, items: QueuedItem[]): void {
		if (!this.streams.size) return;
		for (const it of items) for (const s of this.streams.of(it.product_id, it.user_id)) s.queued(it.order_no);
	},

	/** seckill.results: reservations decided for good; one of an older reservation is not this stream's. */
	streamsResults(this: ApiThis, items: ResultItem[]): void {
		if (!this.streams.size) return;
		for (const it of items)
			for (const s of [...this.streams.of(it.product_id, it.user_id)])
				if (!s.orderNo || s.orderNo === it.order_no) s.finish(it.status, it.order_no, it.reason);
	},

	/**
	 * seckill.soldout: the product's waiting streams end "sold_out", unless their buyer won a
	 * moment before (maybe through another gateway, its seckill.queued still on its way), so they
	 * are read again first, all in one call. One re-check per product at a time; a sold-out that
	 * comes meanwhile reads once more after it.
	 */
	async streamsSoldOut(this: ApiThis, productId: number): Promise<void> {
		if (this.streams.rechecking.has(productId)) {
			this.streams.rechecking.set(productId, true);
			return;
		}
		try {
			do {
				this.streams.rechecking.set(productId, false);
				const ids = [...new Set(this.streams.waiting(productId).map(s => s.userId))];
				for (let i = 0; i < ids.length; i += RECHECK_CHUNK) {
					const chunk = ids.slice(i, i + RECHECK_CHUNK);
					const { states } = await this.recheckRead(productId, chunk);
					chunk.forEach((id, j) => {
						for (const s of [...this.streams.of(productId, id)]) this.applyStreamState(s, states[j], true);
					});
				}
			} while (this.streams.rechecking.get(productId));
		} catch (err) {
			// The streams stay open, waiting: the next sold-out broadcast or a reconnect reads again.
			this.logger.warn(`result streams of product ${productId}: sold-out re-check failed (${(err as Error).message})`);
		} finally {
			this.streams.rechecking.delete(productId);
		}
	},

	/**
	 * Every seckill.stream.resync_s: each product's undecided streams read again, one call per
	 * product. Pushes are events, and an event can miss a gateway (one whose INFO has not reached
	 * the deciding node yet, a transporter cut); this bounds how long a stream can wait for one.
	 */
	async resyncStreams(this: ApiThis): Promise<void> {
		for (const [productId, ids] of this.streams.undecided()) {
			try {
				for (let i = 0; i < ids.length; i += RECHECK_CHUNK) {
					const chunk = ids.slice(i, i + RECHECK_CHUNK);
					const read = await this.recheckRead(productId, chunk);
					const soldOut = read.sold_out || this.soldOut.has(productId);
					chunk.forEach((id, j) => {
						for (const s of [...this.streams.of(productId, id)]) this.applyStreamState(s, read.states[j], soldOut);
					});
				}
			} catch (err) {
				this.logger.warn(`result streams of product ${productId}: resync failed (${(err as Error).message})`);
			}
		}
	},

	/** stock.resultStates with a few tries: a stock node lost mid-sale must not leave streams waiting. */
	async recheckRead(this: ApiThis, productId: number, userIds: number[], attempt = 1) {
		try {
			return await this.broker.call<StatesRead, StatesParams>("stock.resultStates", {
				product_id: productId,
				user_ids: userIds
			});
		} catch (err) {
			if (attempt >= 3) throw err;
			await new Promise(resolve => setTimeout(resolve, 300 * attempt));
			return this.recheckRead(productId, userIds, attempt + 1);
		}
	}
} satisfies Partial<ApiThis>;
