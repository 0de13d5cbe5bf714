import crypto from "node:crypto";
import { RedisLease } from "../storage/lease";
import type { RedisClient } from "../storage/redis";

/**
 * Order numbers: 24 digits, `YYYYMMDDHHmmssSSS` (UTC) + a 4-digit worker id + a 3-digit
 * sequence within the millisecond. Fixed width, so they sort by time as strings; made in
 * memory (no database round trip); unique across nodes because each process takes its own
 * worker id from Redis at start (see `LeasedWorkerId`).
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

/** Counts starts, so each process tries a different worker id first. */
export const WORKER_ID_KEY = "order-no:worker-seq";
const WORKER_IDS = 10000;
export const workerLeaseKey = (id: number) => `order-no:worker:${id}`;

/**
 * A worker id of this process's own, leased in Redis (SET NX with an expiry, renewed while the
 * process lives), so no two live processes hold one: a counter alone (INCR % 10000) gave two
 * processes the same id after a Redis restore, a lossy failover or 10,000 starts. A lease lost
 * anyway (a pause longer than its ttl) is replaced by a new id, announced through `onChange`;
 * the reservation script refuses an order_no already held, so a collision in that gap is
 * retried, never overwrites.
 */
export class LeasedWorkerId {
	private lease: RedisLease | null = null;
	private leasedId = -1;
	private timer: NodeJS.Timeout | null = null;
	onChange: (id: number) => void = () => undefined;

	constructor(
		private readonly redis: RedisClient,
		private readonly owner = crypto.randomBytes(12).toString("hex"),
		private readonly ttlMs = 30000
	) {}

	get id(): number {
		if (!this.lease) throw new Error("no worker id leased");
		return this.leasedId;
	}

	/** Leases an id and keeps it; resolves with the id. */
	async start(): Promise<number> {
		await this.acquire();
		this.timer = setInterval(() => void this.keep(), Math.max(100, this.ttlMs / 3));
		this.timer.unref();
		return this.id;
	}

	private async acquire(): Promise<void> {
		const first = (await this.redis.incr(WORKER_ID_KEY)) % WORKER_IDS;
		for (let i = 0; i < WORKER_IDS; i++) {
			const id = (first + i) % WORKER_IDS;
			const lease = new RedisLease(this.redis, workerLeaseKey(id), this.owner, this.ttlMs);
			if (await lease.acquire()) {
				this.lease = lease;
				this.leasedId = id;
				return;
			}
		}
		throw new Error(`all ${WORKER_IDS} worker ids are leased`);
	}

	private async keep(): Promise<void> {
		try {
			if (await this.lease!.renew()) return;
			await this.acquire();
			this.onChange(this.id);
		} catch {
			// Redis away: the lease is renewed at the next tick, or replaced once it has expired.
		}
	}

	async stop(): Promise<void> {
		if (this.timer) clearInterval(this.timer);
		this.timer = null;
		await this.lease?.release().catch(() => undefined);
	}
}

/** Order numbers on a leased worker id: what an actor that makes order numbers holds. */
export class LeasedOrderNos {
	private generator: OrderNoGenerator;

	private constructor(
		private readonly worker: LeasedWorkerId,
		workerId: number
	) {
		this.generator = new OrderNoGenerator(workerId);
		worker.onChange = id => (this.generator = new OrderNoGenerator(id));
	}

	static async start(redis: RedisClient): Promise<LeasedOrderNos> {
		const worker = new LeasedWorkerId(redis);
		return new LeasedOrderNos(worker, await worker.start());
	}

	next(): string {
		return this.generator.next();
	}

	stop(): Promise<void> {
		return this.worker.stop();
	}
}
