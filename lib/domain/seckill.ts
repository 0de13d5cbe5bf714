import crypto from "node:crypto";
import type { RedisClient } from "../storage/redis";
import { TickBatcher } from "../storage/tick-batch";
import { SALE_TOKEN_MAX_LENGTH } from "./sale-token";

/**
 * Flash-sale Redis keys and messages, shared by the stock actor (which owns the Redis state)
 * and the order actor (which consumes the reservations).
 *
 * Keys are named by the arming id, not the activity's auto-increment id: a recreated or
 * restored database hands out activity ids again, and the old sale's buyers, stock and
 * reservations must not become the new sale's. Every key of one arming carries the same
 * {hash tag}, so the Lua scripts touch a single Redis Cluster slot.
 */
export function activityKeys(armingId: string, bucketTag?: string) {
	// Stock bucket i > 0 (lib/domain/seckill-buckets.ts) has a tag of its own, chosen at arming so
	// the buckets land on different slots; bucket 0 is the arming's own tag, today's keys.
	const tag = bucketTag ? `{sk:${armingId}:${bucketTag}}` : `{sk:${armingId}}`;
	return {
		info: `seckill:${tag}:info`,
		bought: `seckill:${tag}:bought`,
		seqs: `seckill:${tag}:seqs`,
		resv: `seckill:${tag}:resv`,
		last: `seckill:${tag}:last`,
		/** order_no -> why its message was dead-lettered (state F) */
		failed: `seckill:${tag}:failed`,
		/** stock buckets: order_no -> "home bucket|ms", units this bucket lent to another (lua/seckill_lend.lua) */
		lends: `seckill:${tag}:lends`,
		/** stock buckets: order_no -> lender bucket, reservations made here of a lent unit (lua/seckill_borrow.lua) */
		borrows: `seckill:${tag}:borrows`,
		/** sale tokens: nonce -> the order_no it was spent on (lua/seckill_reserve.lua: each token buys once) */
		tokens: `seckill:${tag}:tokens`
	};
}

/** lua/seckill_reserve.lua's KEYS, in its order, for an arming's keys (or one stock bucket's). */
export function reserveKeys(k: ReturnType<typeof activityKeys>): string[] {
	return [k.info, k.bought, k.seqs, k.resv, k.last, k.tokens];
}

/** A new arming id: 128 random bits, never reused (what `arming_id` holds in MySQL). */
export function newArmingId(): string {
	return crypto.randomBytes(16).toString("hex");
}

export const ARMING_ID = /^[0-9a-f]{32}$/;

/** A product id in an action's params (a query string's text is converted). */
export const PRODUCT_ID_PARAM = { type: "number", integer: true, positive: true, convert: true } as const;

/**
 * POST /api/seckill's params: stock.seckill's schema, and what the gateway checks before it
 * answers "sold out" from its own flag (services/api/lane.ts), so both refuse the same bodies.
 */
export const SECKILL_PARAMS = {
	product_id: PRODUCT_ID_PARAM,
	// Checked only when the activity requires tokens (tokenRefusal); a longer one is no token.
	sale_token: { type: "string", max: SALE_TOKEN_MAX_LENGTH, optional: true }
} as const;

/** product id -> the arming currently live for it */
export const productActivityKey = (productId: number) => `seckill:product:${productId}`;

export const SeckillResult = {
	WON: 1,
	NO_ACTIVITY: -1,
	NOT_STARTED: -2,
	ENDED: -3,
	LIMIT: -4,
	SOLD_OUT: -5,
	/** the order_no is held by another reservation: nothing was written, retry with a new number */
	ORDER_NO_TAKEN: -6,
	/** stock buckets: a lent unit could not be taken safely now (stale lend, lends in flight); retry */
	BUCKET_RETRY: -7,
	/** sale tokens: this token's nonce was already spent on another order_no; nothing was written */
	TOKEN_USED: -8
} as const;

/**
 * R reserved (its message not confirmed yet), P published (the broker confirmed it), C claimed by
 * the order writer, O ordered, F failed (its message was dead-lettered; the operator decides).
 */
export type ReservationState = "R" | "P" | "C" | "O" | "F";
export const RESERVATION_STATES: readonly ReservationState[] = ["R", "P", "C", "O", "F"];

export interface Reservation {
	order_no: string;
	user_id: number;
	seq: number;
	reserved_at: number;
	state: ReservationState;
}

export function parseReservation(orderNo: string, value: string): Reservation | null {
	const m = /^(\d+)\|(\d+)\|(\d+)\|([RPCOF])$/.exec(value);
	if (!m) return null;
	return {
		order_no: orderNo,
		user_id: Number(m[1]),
		seq: Number(m[2]),
		reserved_at: Number(m[3]),
		state: m[4] as ReservationState
	};
}

/** What the stock actor hands to the order actor through RabbitMQ: all it needs to write the order. */
export interface SeckillOrderMessage {
	order_no: string;
	activity_id: number;
	/** the arming the reservation was made in; the order is written only into that arming */
	arming_id: string;
	product_id: number;
	user_id: number;
	seq: number;
	product_name: string;
	product_image: string;
	price: string;
	/** stock buckets: the buyer's home bucket, where the reservation lives (absent: 0) */
	bucket?: number;
}

export function isSeckillOrderMessage(m: any): m is SeckillOrderMessage {
	return (
		typeof m === "object" &&
		m !== null &&
		typeof m.order_no === "string" &&
		/^\d{1,32}$/.test(m.order_no) &&
		typeof m.arming_id === "string" &&
		ARMING_ID.test(m.arming_id) &&
		[m.activity_id, m.product_id, m.user_id, m.seq].every(v => Number.isSafeInteger(v) && v > 0) &&
		typeof m.product_name === "string" &&
		typeof m.product_image === "string" &&
		typeof m.price === "string" &&
		/^\d+(\.\d{1,2})?$/.test(m.price) &&
		(m.bucket === undefined || (Number.isInteger(m.bucket) && m.bucket >= 0 && m.bucket < 256))
	);
}

/**
 * A client with lua/seckill_reserve.lua defined as `seckillReserve` (KEYS info, bought, seqs,
 * resv, last, tokens; ARGV user_id, order_no, token nonce or "", repeated for each reservation),
 * answering [code, seq, stock_left] per reservation, flat.
 */
export type ReserveRedis = RedisClient & {
	seckillReserve(...args: (string | number)[]): Promise<[number, number, number]>;
};

type ReserveResult = [code: number, seq: number, left: number, replicas: number];

interface Waiting {
	userId: number;
	orderNo: string;
	nonce: string;
	resolve(r: ReserveResult): void;
	reject(err: Error): void;
}

/**
 * Reservations that are answered only once `replicas` replicas hold them (Redis WAIT), with
 * one WAIT per batch, not per buyer (group commit). For each arming, one pipeline is in flight
 * at a time: its reservation scripts, then WAIT. A pipeline goes to one master over one
 * connection, so that WAIT covers every script before it; reservations that arrive meanwhile
 * wait and leave together as the next pipeline. WAIT blocks its connection until the replicas
 * answer, so one WAIT per reservation would serialise the sale behind replication round trips.
 */
export class ReplicatedReserver {
	private readonly queues = new Map<string, Waiting[]>();
	private readonly busy = new Set<string>();

	constructor(
		private readonly redis: ReserveRedis,
		readonly replicas: number,
		private readonly timeoutMs: number,
		private readonly maxBatch = 500
	) {}

	/** [code, seq, stock_left] of the script, and how many replicas acknowledged it in time. */
	reserve(arming: string, userId: number, orderNo: string, nonce = ""): Promise<ReserveResult> {
		return new Promise((resolve, reject) => {
			let queue = this.queues.get(arming);
			if (!queue) this.queues.set(arming, (queue = []));
			queue.push({ userId, orderNo, nonce, resolve, reject });
			if (!this.busy.has(arming)) void this.flush(arming);
		});
	}

	private async flush(arming: string): Promise<void> {
		const queue = this.queues.get(arming);
		if (!queue?.length) {
			this.queues.delete(arming);
			this.busy.delete(arming);
			return;
		}
		this.busy.add(arming);
		const batch = queue.splice(0, this.maxBatch);
		const k = activityKeys(arming);
		const pipeline = this.redis.pipeline() as unknown as {
			seckillReserve(...args: (string | number)[]): unknown;
			wait(n: number, ms: number): unknown;
			exec(): Promise<[Error | null, unknown][] | null>;
		};
		for (const w of batch) pipeline.seckillReserve(...reserveKeys(k), w.userId, w.orderNo, w.nonce);
		pipeline.wait(this.replicas, this.timeoutMs);
		try {
			const results = (await pipeline.exec()) ?? [];
			const [waitErr, acked] = results[batch.length] ?? [new Error("no WAIT reply"), 0];
			batch.forEach((w, i) => {
				const [err, r] = results[i] ?? [new Error("no reply"), null];
				if (err) w.reject(err);
				else if (waitErr) w.reject(waitErr);
				else w.resolve([...(r as [number, number, number]), Number(acked)]);
			});
		} catch (err) {
			for (const w of batch) w.reject(err as Error);
		}
		await this.flush(arming);
	}
}

/** The most reservations one script call decides (a long script holds Redis for its whole run). */
const MAX_RESERVE_BATCH = 200;

/**
 * The reservations asked for in one tick of the process, one script call per arming instead
 * of one each (TickBatcher): lua/seckill_reserve.lua decides them one after the other, exactly
 * as that many calls in a row would.
 */
export class BatchedReserver {
	private readonly batcher: TickBatcher<[number, string, string], ReserveResult>;

	constructor(redis: ReserveRedis) {
		this.batcher = new TickBatcher(MAX_RESERVE_BATCH, async (arming, triples) => {
			const flat: number[] = await redis.seckillReserve(...reserveKeys(activityKeys(arming)), ...triples.flat());
			if (flat.length !== 3 * triples.length)
				throw new Error(`${flat.length} values for ${triples.length} reservations`);
			return triples.map((_, i) => [flat[3 * i], flat[3 * i + 1], flat[3 * i + 2], 0] as ReserveResult);
		});
	}

	/** [code, seq, stock_left] of this buyer's reservation, and 0 replicas (none are waited for). */
	reserve(arming: string, userId: number, orderNo: string, nonce = ""): Promise<ReserveResult> {
		return this.batcher.add(arming, [userId, orderNo, nonce]);
	}
}
