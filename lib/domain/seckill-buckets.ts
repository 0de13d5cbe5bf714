import calculateSlot from "cluster-key-slot";
import { isCluster, RedisClient } from "../storage/redis";
import { activityKeys } from "./seckill";

/**
 * Stock buckets (README "One hot product across Redis shards"): one arming's stock split over n
 * key sets, each under a {hash tag} of its own, so the Lua decisions of one hot product run on
 * several Redis Cluster masters instead of one. Bucket 0 is the arming's own tag (the keys of
 * activityKeys(arming), exactly an unbucketed sale's); bucket i > 0 has tag `{sk:<arming>:<tags[i]>}`.
 */

/** Hash-tag suffix per bucket; tags[0] is "" (bucket 0 has none). n = tags.length. */
export type BucketTags = readonly string[];

/** An unbucketed arming: shared, so the hot path of n = 1 allocates nothing for it. */
export const ONE_BUCKET: BucketTags = Object.freeze([""]);

/** Buckets per Redis master at most: more only adds round trips on the same cores. */
export const BUCKETS_PER_MASTER = 4;

export function bucketKeys(arming: string, tags: BucketTags, bucket: number) {
	return bucket === 0 ? activityKeys(arming) : activityKeys(arming, tags[bucket]);
}

/**
 * The buyer's home bucket: everything about a buyer (bought, seqs, resv, last, failed) lives
 * there, so all of one buyer's attempts run on one slot and the per-user limit is one atomic
 * check. A mixing hash (murmur3's finaliser), not id mod n: consecutive ids spread evenly, and
 * a sale of n buckets never has the buyers of one id stride piled on one bucket.
 */
export function homeBucket(userId: number, n: number): number {
	if (n <= 1) return 0;
	let h = (userId ^ Math.floor(userId / 0x100000000)) | 0;
	h ^= h >>> 16;
	h = Math.imul(h, 0x85ebca6b);
	h ^= h >>> 13;
	h = Math.imul(h, 0xc2b2ae35);
	h ^= h >>> 16;
	return (h >>> 0) % n;
}

/** The tags as the row and the info hash keep them ("a,b,c": buckets 1..n-1). */
export function parseBucketTags(buckets: unknown, stored: unknown): BucketTags {
	const n = Number(buckets ?? 1);
	if (!(n > 1)) return ONE_BUCKET;
	const rest = String(stored ?? "")
		.split(",")
		.filter(Boolean);
	// A row written before its tags (cannot happen: one INSERT) would be read as unbucketed.
	return rest.length === n - 1 ? ["", ...rest] : ONE_BUCKET;
}

export const formatBucketTags = (tags: BucketTags) => tags.slice(1).join(",");

/** The most buckets this Redis is given: BUCKETS_PER_MASTER per master (one Redis: one master). */
export function maxBuckets(redis: RedisClient): number {
	if (!isCluster(redis)) return BUCKETS_PER_MASTER;
	const masters = new Set(redis.slots.map(s => s?.[0]).filter(Boolean));
	return BUCKETS_PER_MASTER * Math.max(1, masters.size || redis.nodes("master").length);
}

/** Unit i's share of `total` over n buckets: even, the remainder to the first buckets. */
export const bucketShare = (total: number, n: number, i: number) => Math.floor(total / n) + (i < total % n ? 1 : 0);

/**
 * The tags of n buckets. On a Redis Cluster each is searched (from the slot map ioredis holds)
 * so that the n buckets have n different slots and go round the masters, starting after the
 * master of bucket 0: bucket i on master (m0 + i) mod M. Placement is only about speed: a later
 * resharding or failover moves slots, never the keys' meaning. On one Redis: "1", "2", ...
 */
export function chooseBucketTags(redis: RedisClient, arming: string, n: number): BucketTags {
	if (n <= 1) return ONE_BUCKET;
	const tags = [""];
	const slotOf = (suffix: string) => calculateSlot(suffix ? `{sk:${arming}:${suffix}}` : `{sk:${arming}}`);
	const slots = isCluster(redis) ? redis.slots : [];
	const masters = [...new Set(slots.map(s => s?.[0]).filter(Boolean))].sort();
	const used = new Set([slotOf("")]);
	const m0 = Math.max(0, masters.indexOf(slots[slotOf("")]?.[0]));
	for (let i = 1; i < n; i++) {
		let chosen = String(i);
		if (masters.length) {
			const want = masters[(m0 + i) % masters.length];
			// About M tries each (a random slot is the wanted master's with odds 1/M).
			for (let k = 0; k < 10000; k++) {
				const suffix = k === 0 ? String(i) : `${i}-${k}`;
				const slot = slotOf(suffix);
				if (!used.has(slot) && slots[slot]?.[0] === want) {
					chosen = suffix;
					break;
				}
			}
		}
		used.add(slotOf(chosen));
		tags.push(chosen);
	}
	return tags;
}

type Pipeline = Record<string, (...args: (string | number)[]) => unknown> & {
	wait(n: number, ms: number): unknown;
	exec(): Promise<[Error | null, unknown][] | null>;
};

interface Waiting {
	cmd: string;
	args: (string | number)[];
	resolve(r: [unknown, number]): void;
	reject(err: Error): void;
}

/**
 * Any script of the stock buckets, answered with how many replicas acknowledged it (Redis WAIT),
 * one WAIT per batch and slot: the ReplicatedReserver's group commit (lib/domain/seckill.ts), for
 * the several slots of a bucketed sale and for lend and borrow as well as reserve.
 */
export class ReplicatedBuckets {
	private readonly queues = new Map<string, Waiting[]>();
	private readonly busy = new Set<string>();

	constructor(
		private readonly redis: RedisClient,
		readonly replicas: number,
		private readonly timeoutMs: number,
		private readonly maxBatch = 500
	) {}

	/** `slot` names the batch: the commands of one batch must share a slot (one master, one pipeline). */
	run(slot: string, cmd: string, args: (string | number)[]): Promise<[unknown, number]> {
		return new Promise((resolve, reject) => {
			let queue = this.queues.get(slot);
			if (!queue) this.queues.set(slot, (queue = []));
			queue.push({ cmd, args, resolve, reject });
			if (!this.busy.has(slot)) void this.flush(slot);
		});
	}

	private async flush(slot: string): Promise<void> {
		const queue = this.queues.get(slot);
		if (!queue?.length) {
			this.queues.delete(slot);
			this.busy.delete(slot);
			return;
		}
		this.busy.add(slot);
		const batch = queue.splice(0, this.maxBatch);
		const pipeline = this.redis.pipeline() as unknown as Pipeline;
		for (const w of batch) pipeline[w.cmd](...w.args);
		pipeline.wait(this.replicas, this.timeoutMs);
		try {
			const results = (await pipeline.exec()) ?? [];
			const [waitErr, acked] = results[batch.length] ?? [new Error("no WAIT reply"), 0];
			batch.forEach((w, i) => {
				const [err, r] = results[i] ?? [new Error("no reply"), null];
				if (err) w.reject(err);
				else if (waitErr) w.reject(waitErr);
				else w.resolve([r, Number(acked)]);
			});
		} catch (err) {
			for (const w of batch) w.reject(err as Error);
		}
		await this.flush(slot);
	}
}
