import type { RedisClient } from "./redis";

type LeaseRedis = RedisClient & { leaseOwn(key: string, owner: string, op: string, ttlMs: number): Promise<number> };

/**
 * A lease in Redis: a key held by one owner until it expires, taken with SET NX PX and kept or
 * given up only by its owner (lua/lease.lua). What it guards must stay safe if the lease runs
 * out while the owner still works (a long pause): it serialises work, it is not a proof.
 */
export class RedisLease {
	constructor(
		private readonly redis: RedisClient,
		readonly key: string,
		readonly owner: string,
		readonly ttlMs: number
	) {}

	/** True when this owner holds the lease now (taken, or still its own). */
	async acquire(): Promise<boolean> {
		if ((await this.redis.set(this.key, this.owner, "PX", this.ttlMs, "NX")) === "OK") return true;
		return this.renew();
	}

	/** Extends the lease; false when it is no longer this owner's. */
	async renew(): Promise<boolean> {
		return (await (this.redis as LeaseRedis).leaseOwn(this.key, this.owner, "renew", this.ttlMs)) === 1;
	}

	async release(): Promise<void> {
		await (this.redis as LeaseRedis).leaseOwn(this.key, this.owner, "release", 0);
	}
}

/**
 * Runs `work` only while no other owner holds the lease; null when another does. The lease is
 * renewed every third of its ttl while the work runs and released when it ends.
 */
export async function withLease<T>(lease: RedisLease, work: () => Promise<T>): Promise<T | null> {
	if (!(await lease.acquire())) return null;
	const timer = setInterval(() => void lease.renew().catch(() => undefined), Math.max(100, lease.ttlMs / 3));
	timer.unref();
	try {
		return await work();
	} finally {
		clearInterval(timer);
		await lease.release().catch(() => undefined);
	}
}
