import { getConfig } from "../../config";
import type { CodeKey } from "../../lib/contract/codes";
import { QueryTypes } from "sequelize";
import { bizError, rejection, Rejection } from "../../lib/contract/errors";
import { activityKeys, Reservation, SeckillOrderMessage, SeckillResult } from "../../lib/domain/seckill";
import { bucketKeys } from "../../lib/domain/seckill-buckets";
import { reservationActivity } from "../../lib/domain/reservation-activity";
import { PublishError } from "../../lib/messaging/amqp";
import { names, SECKILL_ROUTING_KEY } from "../../lib/messaging/topology";
import { isRedirection } from "../../lib/storage/redis";
import type {
	ActivityMeta,
	FailedReservation,
	PublishedMark,
	Queued,
	ReleaseMode,
	ReservationMethods,
	ReserveAttempt,
	StockThis
} from "./types";

/** ioredis' commandTimeout: the command was sent, and its outcome is unknown. */
const isTimeout = (err: unknown) => (err as Error)?.message === "Command timed out";

/** Memory pre-checks of the window allow this much clock skew; the Lua script decides exactly. */
export const CLOCK_SLACK_MS = 1000;

/**
 * How long before its caller stops waiting stock.seckill answers what it knows: the answer
 * still has to travel back, and the caller's clock started before this node's.
 */
const ANSWER_MARGIN_MS = 250;

/** seckill_reserve.lua's refusals: the metric's `result` label and the buyer's code. */
export const RESULT_BY_CODE: Record<number, [string, CodeKey]> = {
	[SeckillResult.NO_ACTIVITY]: ["no_activity", "SECKILL_NO_ACTIVITY"],
	[SeckillResult.NOT_STARTED]: ["not_started", "SECKILL_NOT_STARTED"],
	[SeckillResult.ENDED]: ["ended", "SECKILL_ENDED"],
	[SeckillResult.LIMIT]: ["limit", "SECKILL_LIMIT_REACHED"],
	[SeckillResult.SOLD_OUT]: ["sold_out", "SECKILL_SOLD_OUT"],
	// Stock buckets: a unit may still come back (lent out, or its lend not replicated): "retry".
	[SeckillResult.BUCKET_RETRY]: ["bucket_retry", "SECKILL_ORDER_FAILED"],
	// Sale tokens: the token's nonce was spent by an earlier request (README "Sale tokens").
	[SeckillResult.TOKEN_USED]: ["token_used", "SECKILL_TOKEN_USED"]
};

const queuedAnswer = (orderNo: string): Queued => ({
	order_no: orderNo,
	success: true,
	status: "queued",
	message: "queued: poll /api/seckill/result for the order"
});

/** The hot path: the Lua reservation, its confirmed hand-off to the order queue, claims and releases. */
export const reservationMethods = {
	reject(this: StockThis, result: string, key: CodeKey): Rejection {
		this.countResult(result);
		return rejection(key);
	},

	/** One answer of stock.seckill, in /metrics and in this node's own tally (stock.node, the REPL). */
	countResult(this: StockThis, result: string): void {
		this.served[result] = (this.served[result] ?? 0) + 1;
		this.broker.metrics.increment("gomall_seckill_requests_total", { result });
	},

	/**
	 * stock.seckill: the reservation, answered before its caller stops waiting. Past the
	 * caller's deadline (a Redis or a broker that hangs, a long wait in the bulkhead queue) the
	 * gateway would tell the buyer "retry" (503) for a reservation that may have run. So just
	 * before it, the buyer hears what is known: "queued" with its order_no once the script was
	 * sent (the poll settles it), "retry" while it was not, and then it is never sent. The
	 * reservation itself goes on and is counted by its own outcome.
	 */
	async reserveWithin(this: StockThis, msLeft: number, pid: number, userId: number, saleToken?: string) {
		// The sold-out shortcut is most of a sale's traffic: no timer and no tally for it.
		if (this.soldOut.has(pid)) return this.reserve(pid, userId, saleToken);
		// The order drain of this process waits while reservations run (lib/domain/reservation-activity).
		reservationActivity.begin();
		let timer: NodeJS.Timeout | undefined;
		try {
			if (msLeft === Infinity) return await this.reserve(pid, userId, saleToken);
			// Its caller gives up before any answer could reach it (it waited in the bulkhead queue).
			if (msLeft <= ANSWER_MARGIN_MS) return this.reject("late", "UNAVAILABLE");
			const attempt: ReserveAttempt = { orderNo: "", late: false };
			const late = new Promise<Rejection | Queued>(resolve => {
				timer = setTimeout(() => {
					attempt.late = true;
					this.logger.warn(
						`seckill: answered at the caller's deadline (${attempt.orderNo ? `${attempt.orderNo} queued` : "not sent: retry"})`
					);
					resolve(attempt.orderNo ? queuedAnswer(attempt.orderNo) : rejection("UNAVAILABLE"));
				}, msLeft - ANSWER_MARGIN_MS);
			});
			return await Promise.race([this.reserve(pid, userId, saleToken, attempt), late]);
		} finally {
			clearTimeout(timer);
			reservationActivity.end();
		}
	},

	async reserve(this: StockThis, pid: number, userId: number, saleToken?: string, attempt?: ReserveAttempt) {
		// The sold-out shortcut comes first, synchronously (no await: it is most of a sale's
		// traffic), on a sale that takes tokens too: a sold-out sale has nothing left to guard, and
		// "sold out" tells a bot only what GET /api/seckill shows everyone (its stock). While units
		// remain, a request without a valid token is refused before the reservation script.
		if (this.soldOut.has(pid)) return this.reject("sold_out", "SECKILL_SOLD_OUT");
		const meta = await this.activityFor(pid);
		const nonce = meta ? this.tokenRefusal(meta, userId, saleToken) : "";
		if (typeof nonce !== "string") return nonce;
		if (!meta) return this.reject("no_activity", "SECKILL_NO_ACTIVITY");
		const now = Date.now();
		if (now < meta.start - CLOCK_SLACK_MS) return this.reject("not_started", "SECKILL_NOT_STARTED");
		if (now >= meta.end + CLOCK_SLACK_MS) return this.reject("ended", "SECKILL_ENDED");

		let orderNo = "";
		let reserved: [number, number, number, number] | [number, number, number, number, number];
		try {
			// A number another buyer's reservation holds (two processes with one worker id) wrote
			// nothing: the script refused it, so a new number is safe.
			for (let tries = 1; ; tries++) {
				// Its caller has been answered "retry": nothing may be reserved for it now.
				if (attempt?.late) return this.reject("late", "UNAVAILABLE");
				orderNo = this.orderNos.next();
				if (attempt) attempt.orderNo = orderNo;
				reserved =
					meta.tags.length > 1
						? await this.reserveInBuckets(meta, userId, orderNo, nonce)
						: await this.runReserve(meta.arming, userId, orderNo, nonce);
				if (reserved[0] !== SeckillResult.ORDER_NO_TAKEN) break;
				this.logger.warn(
					`seckill ${orderNo}: order number already held by another reservation; retrying with a new one`
				);
				if (tries === 3) return this.reject("redis_error", "UNAVAILABLE");
			}
		} catch (err) {
			if (isTimeout(err)) {
				// The script may have run: the outcome is unknown, so the buyer is not told to retry.
				// A reservation that was made is published by reconciliation after reconcile_age
				// (it was never confirmed); the poll settles what happened.
				this.logger.warn(`seckill ${orderNo}: no answer from Redis in time; outcome unknown, answered queued`);
				return this.queued(orderNo, "unknown", pid, userId);
			}
			// Redis unreachable or mid-failover, the command not sent: "retry" (503).
			this.logger.warn(`seckill ${orderNo}: Redis did not answer the reservation (${(err as Error).message})`);
			return this.reject("redis_error", "UNAVAILABLE");
		}
		// The buyer's home bucket holds the reservation (0 when the sale is not bucketed).
		const [code, seq, left, replicas, bucket = 0] = reserved;
		if (code !== SeckillResult.WON) {
			if (code === SeckillResult.SOLD_OUT)
				this.broker.broadcast("seckill.soldout", { product_id: pid, activity_id: meta.id, arming_id: meta.arming });
			const [result, key] = RESULT_BY_CODE[code];
			return this.reject(result, key);
		}
		if (this.replicated && replicas < this.replicated.replicas) {
			// Not on enough replicas in time: a failover now could forget this reservation
			// while its buyer holds a "queued". Give it back instead (the buyer may retry).
			if ((await this.release(meta.arming, orderNo, "unconfirmed", bucket)) === 1)
				return this.reject("unreplicated", "SECKILL_ORDER_FAILED");
		}
		if (left === 0)
			this.broker.broadcast("seckill.soldout", { product_id: pid, activity_id: meta.id, arming_id: meta.arming });

		try {
			await this.handOff(meta, userId, seq, orderNo, bucket);
		} catch (err) {
			// "Retry" only when the unit is provably back: the broker never took the message
			// (no channel, a nack, a return) and the release found it unconfirmed. A lost confirm
			// or a confirm timeout may have queued it: the buyer is told "queued", the reservation
			// stays unconfirmed, and reconciliation republishes it (the consumer is idempotent).
			const notSent = err instanceof PublishError && err.outcome === "not_sent";
			// A release that fails (Redis away) proves nothing back either: then "queued" too.
			if (notSent && (await this.release(meta.arming, orderNo, "unconfirmed", bucket).catch(() => 0)) === 1) {
				this.logger.warn(`seckill ${orderNo}: handoff failed (${(err as Error).message}); reservation released`);
				return this.reject("handoff_failed", "SECKILL_ORDER_FAILED");
			}
			this.logger.warn(`seckill ${orderNo}: handoff unconfirmed (${(err as Error).message}); answered queued`);
			return this.queued(orderNo, "unknown", pid, userId);
		}
		// Confirmed: from now on only its order's close or an operator releases it. A failure to
		// record that leaves it unconfirmed, which costs at most a duplicate message, so the
		// buyer's answer does not wait for it (nor, behind a Redis that hangs, for its timeout);
		// the turn's marks go together (markPublished).
		this.publishedMarks.add({ arming: meta.arming, orderNo, bucket });
		return this.queued(orderNo, "confirmed", pid, userId);
	},

	/**
	 * The buyer's "queued", counted by whether its message is known to be in the queue, and
	 * announced to the result streams (README "Pushed results (SSE)") in the turn's one broadcast.
	 */
	queued(this: StockThis, orderNo: string, handoff: "confirmed" | "unknown", pid?: number, userId?: number): Queued {
		if (pid !== undefined && userId !== undefined)
			this.queuedBatch.add({ product_id: pid, user_id: userId, order_no: orderNo });
		this.countResult(handoff === "confirmed" ? "queued" : "queued_unconfirmed");
		this.broker.metrics.increment("gomall_seckill_success_total");
		return queuedAnswer(orderNo);
	},

	/**
	 * seckill_reserve.lua: with the tick's other reservations of the arming in one call
	 * (BatchedReserver), or acknowledged by WAIT when redis.wait_replicas is set (ReplicatedReserver).
	 */
	async runReserve(
		this: StockThis,
		arming: string,
		userId: number,
		orderNo: string,
		nonce = "",
		attempt = 1
	): Promise<[number, number, number, number]> {
		if (!this.replicated) return this.batchedReserver.reserve(arming, userId, orderNo, nonce);
		try {
			return await this.replicated.reserve(arming, userId, orderNo, nonce);
		} catch (err) {
			// A cluster redirection proves the script did not run; ioredis follows it for a
			// lone command but not inside a pipeline whose other command (WAIT) succeeded.
			if (attempt < 3 && isRedirection(err)) {
				await new Promise(resolve => setTimeout(resolve, 100 * attempt));
				return this.runReserve(arming, userId, orderNo, nonce, attempt + 1);
			}
			throw err;
		}
	},

	handOff(this: StockThis, meta: ActivityMeta, userId: number, seq: number, orderNo: string, bucket = 0) {
		const msg: SeckillOrderMessage = {
			order_no: orderNo,
			activity_id: meta.id,
			arming_id: meta.arming,
			product_id: meta.product_id,
			user_id: userId,
			seq,
			product_name: meta.name,
			product_image: meta.image,
			price: meta.price
		};
		// Only a bucketed sale's messages carry it: an unbucketed one's are as they always were.
		if (bucket) msg.bucket = bucket;
		return this.publisher.publish(names(getConfig().namespace).orderExchange, SECKILL_ROUTING_KEY, msg, orderNo);
	},

	/** Returns 1 released, 0 nothing to release, -1 kept (not in the state the mode releases, lua/seckill_release.lua). */
	async release(this: StockThis, arming: string, orderNo: string, mode: ReleaseMode, bucket = 0) {
		// A reservation's unit goes back to its buyer's home bucket, wherever it was lent from.
		const k = bucket ? bucketKeys(arming, await this.bucketTagsOf(arming), bucket) : activityKeys(arming);
		const [released, left] = await this.redis.seckillRelease(k.info, k.bought, k.seqs, k.resv, orderNo, mode);
		if (released === 1 && left === 1) {
			const [pid, activityId] = await this.redis.hmget(k.info, "product_id", "activity_id");
			this.broker.broadcast("seckill.available", { product_id: Number(pid), activity_id: Number(activityId) });
		}
		return released;
	},

	/** lua/seckill_failed.lua: a reservation marked failed (its message dead-lettered), or taken back for a replay. */
	async failedTransition(
		this: StockThis,
		arming: string,
		orderNo: string,
		op: "fail" | "replay",
		reason: string,
		bucket = 0
	) {
		const k = bucket ? bucketKeys(arming, await this.bucketTagsOf(arming), bucket) : activityKeys(arming);
		const done = await this.redis.seckillFailed(k.resv, k.failed, orderNo, op, reason);
		if (done === 1 && op === "fail") this.logger.warn(`seckill ${orderNo}: dead-lettered (${reason}); marked failed`);
		return done;
	},

	/** Every reservation of the activity in state F, with why its message was dead-lettered. */
	async failedReservations(this: StockThis, activityId: number): Promise<FailedReservation[]> {
		const [row] = (await this.adapter.db.query("SELECT arming_id FROM seckill_activities WHERE id = ?", {
			replacements: [activityId],
			type: QueryTypes.SELECT
		})) as { arming_id: string }[];
		if (!row) throw bizError("SECKILL_NO_ACTIVITY");
		const tags = await this.bucketTagsOf(row.arming_id);
		const out: FailedReservation[] = [];
		for (let bucket = 0; bucket < tags.length; bucket++) {
			const k = bucketKeys(row.arming_id, tags, bucket);
			const failed: Reservation[] = [];
			await this.scanReservations(
				row.arming_id,
				async page => {
					failed.push(...page.filter(r => r.state === "F"));
				},
				bucket
			);
			const reasons = failed.length ? await this.redis.hmget(k.failed, ...failed.map(r => r.order_no)) : [];
			failed.forEach((r, i) =>
				out.push({
					order_no: r.order_no,
					user_id: r.user_id,
					reserved_at: new Date(r.reserved_at),
					reason: reasons[i] ?? "",
					bucket
				})
			);
		}
		return out;
	},

	/**
	 * seckill_mark.lua over many order_nos: one command for all of them (a bucketed sale's live in
	 * their buyers' home buckets: one command per bucket, one slot each), the answers in the
	 * callers' order.
	 */
	async markMany(
		this: StockThis,
		arming: string,
		orderNos: string[],
		state: "P" | "C" | "O",
		buckets?: readonly number[]
	): Promise<(1 | 0 | -1)[]> {
		if (!orderNos.length) return [];
		if (!buckets?.some(b => b !== 0)) {
			const k = activityKeys(arming);
			return this.redis.seckillMark(k.resv, k.info, state, ...orderNos);
		}
		const tags = await this.bucketTagsOf(arming);
		const byBucket = Map.groupBy(orderNos.keys(), i => buckets[i] ?? 0);
		const out: (1 | 0 | -1)[] = new Array(orderNos.length);
		await Promise.all(
			[...byBucket].map(async ([b, idx]) => {
				const k = bucketKeys(arming, tags, b);
				const marked = await this.redis.seckillMark(k.resv, k.info, state, ...idx.map(i => orderNos[i]));
				idx.forEach((i, j) => (out[i] = marked[j]));
			})
		);
		return out;
	},

	/**
	 * The P marks of a loop turn's confirmed reservations, one command per arming (markMany).
	 * Nobody waits for them: a mark that fails leaves its reservation unconfirmed, which costs at
	 * most a duplicate message from reconciliation (the consumer is idempotent).
	 */
	markPublished(this: StockThis, marks: PublishedMark[]): void {
		for (const [arming, ms] of Map.groupBy(marks, m => m.arming)) {
			void this.markMany(
				arming,
				ms.map(m => m.orderNo),
				"P",
				ms.map(m => m.bucket)
			).catch(err => this.logger.debug(`seckill: P marks of ${ms.length} not written (${(err as Error).message})`));
		}
	}
} satisfies ReservationMethods;
