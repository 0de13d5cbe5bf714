/**
 * Pushed flash-sale results (README "Pushed results (SSE)"): the events by which the actors that
 * decide tell every gateway, whichever node holds a buyer's stream. Each event carries a batch:
 * one broadcast per loop turn or per committed batch of orders, never one per buyer.
 */

/** The stock actor: buyers who won a reservation (their order is queued). */
export const SECKILL_QUEUED_EVENT = "seckill.queued";
/** The order actor: reservations decided for good (the order is committed, or its message dead-lettered). */
export const SECKILL_RESULTS_EVENT = "seckill.results";

export interface QueuedItem {
	product_id: number;
	user_id: number;
	order_no: string;
}

export interface ResultItem extends QueuedItem {
	status: "success" | "failed";
	/** failed only: why (the dead-letter reason) */
	reason?: string;
}

/**
 * One buyer's result as the stream reads it, from the same keys as the poll (stock.result):
 * "none" is a buyer with no reservation in the live arming (the poll says failed with no
 * order_no; for a stream it is "still waiting" until the product sells out).
 */
export interface StreamState {
	status: "none" | "queued" | "success" | "failed";
	order_no: string | null;
	reason?: string;
}

/**
 * Collects items and hands them to `flush` together once per event-loop turn (setImmediate): a
 * turn that wins 500 reservations makes one broadcast. Adding costs an array push.
 */
export class TurnBatch<T> {
	private items: T[] = [];
	private scheduled = false;

	constructor(private readonly flush: (items: T[]) => void) {}

	add(item: T): void {
		this.items.push(item);
		if (this.scheduled) return;
		this.scheduled = true;
		setImmediate(() => {
			const items = this.items;
			this.items = [];
			this.scheduled = false;
			this.flush(items);
		});
	}
}
