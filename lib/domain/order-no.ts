/**
 * Order numbers: 24 digits, `YYYYMMDDHHmmssSSS` (UTC) + a 4-digit worker id + a 3-digit
 * sequence within the millisecond. Fixed width, so they sort by time as strings; made in
 * memory (no database round trip); unique across nodes because each process takes its own
 * worker id from Redis at start (see `acquireWorkerId`).
 */
export class OrderNoGenerator {
	private lastMs = 0;
	private seq = 0;
	private readonly worker: string;

	constructor(
		workerId: number,
		private readonly now: () => number = Date.now
	) {
		if (!Number.isInteger(workerId) || workerId < 0 || workerId > 9999)
			throw new RangeError("worker id must be 0..9999");
		this.worker = String(workerId).padStart(4, "0");
	}

	next(): string {
		// The clock may step back (NTP); never reuse a millisecond already spent.
		let ms = Math.max(this.now(), this.lastMs);
		if (ms === this.lastMs) {
			if (++this.seq > 999) {
				ms = this.lastMs + 1; // borrow the next millisecond rather than wait
				this.seq = 0;
			}
		} else {
			this.seq = 0;
		}
		this.lastMs = ms;
		return stamp(ms) + this.worker + String(this.seq).padStart(3, "0");
	}
}

function stamp(ms: number): string {
	// toISOString: 2026-11-24T08:53:01.123Z -> 20261124085301123
	return new Date(ms).toISOString().replace(/\D/g, "").slice(0, 17);
}

/** The key under which nodes count worker ids (INCR, so no two live nodes share one). */
export const WORKER_ID_KEY = "order-no:worker-seq";

export async function acquireWorkerId(redis: { incr(key: string): Promise<number> }): Promise<number> {
	return (await redis.incr(WORKER_ID_KEY)) % 10000;
}
