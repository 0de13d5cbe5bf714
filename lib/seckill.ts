import crypto from "node:crypto";

/**
 * Flash-sale Redis keys and messages, shared by the stock actor (which owns the Redis state)
 * and the order actor (which consumes the reservations).
 *
 * Keys are named by the arming id, not the activity's auto-increment id: a recreated or
 * restored database hands out activity ids again, and the old sale's buyers, stock and
 * reservations must not become the new sale's. Every key of one arming carries the same
 * {hash tag}, so the Lua scripts touch a single Redis Cluster slot.
 */
export function activityKeys(armingId: string) {
	const tag = `{sk:${armingId}}`;
	return {
		info: `seckill:${tag}:info`,
		bought: `seckill:${tag}:bought`,
		seqs: `seckill:${tag}:seqs`,
		resv: `seckill:${tag}:resv`,
		last: `seckill:${tag}:last`
	};
}

/** A new arming id: 128 random bits, never reused (what `arming_id` holds in MySQL). */
export function newArmingId(): string {
	return crypto.randomBytes(16).toString("hex");
}

export const ARMING_ID = /^[0-9a-f]{32}$/;

/** product id -> the arming currently live for it */
export const productActivityKey = (productId: number) => `seckill:product:${productId}`;

export const SeckillResult = { WON: 1, NO_ACTIVITY: -1, NOT_STARTED: -2, ENDED: -3, LIMIT: -4, SOLD_OUT: -5 } as const;

export type ReservationState = "R" | "C" | "O";

export interface Reservation {
	order_no: string;
	user_id: number;
	seq: number;
	reserved_at: number;
	state: ReservationState;
}

export function parseReservation(orderNo: string, value: string): Reservation | null {
	const m = /^(\d+)\|(\d+)\|(\d+)\|([RCO])$/.exec(value);
	if (!m) return null;
	return { order_no: orderNo, user_id: Number(m[1]), seq: Number(m[2]), reserved_at: Number(m[3]), state: m[4] as ReservationState };
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
}

export function isSeckillOrderMessage(m: any): m is SeckillOrderMessage {
	return (
		typeof m === "object" && m !== null &&
		typeof m.order_no === "string" && /^\d{1,32}$/.test(m.order_no) &&
		typeof m.arming_id === "string" && ARMING_ID.test(m.arming_id) &&
		[m.activity_id, m.product_id, m.user_id, m.seq].every(v => Number.isSafeInteger(v) && v > 0) &&
		typeof m.product_name === "string" && typeof m.product_image === "string" &&
		typeof m.price === "string" && /^\d+(\.\d{1,2})?$/.test(m.price)
	);
}
