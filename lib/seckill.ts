/**
 * Flash-sale Redis keys and messages, shared by the stock actor (which owns the Redis state)
 * and the order actor (which consumes the reservations). Every key of one activity carries
 * the same {hash tag}, so the Lua scripts touch a single Redis Cluster slot.
 */
export function activityKeys(activityId: number) {
	const tag = `{sk:${activityId}}`;
	return {
		info: `seckill:${tag}:info`,
		bought: `seckill:${tag}:bought`,
		seqs: `seckill:${tag}:seqs`,
		resv: `seckill:${tag}:resv`,
		last: `seckill:${tag}:last`
	};
}

/** product id -> the activity currently armed for it */
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
		[m.activity_id, m.product_id, m.user_id, m.seq].every(v => Number.isSafeInteger(v) && v > 0) &&
		typeof m.product_name === "string" && typeof m.product_image === "string" &&
		typeof m.price === "string" && /^\d+(\.\d{1,2})?$/.test(m.price)
	);
}
