import { QueryTypes } from "sequelize";
import { getConfig } from "../../config";
import { ActivityStatus } from "../../lib/domain/order";
import { productActivityKey, reserveKeys, SeckillResult } from "../../lib/domain/seckill";
import {
	BucketTags,
	bucketKeys,
	bucketShare,
	homeBucket,
	ONE_BUCKET,
	parseBucketTags
} from "../../lib/domain/seckill-buckets";
import { isRedirection } from "../../lib/storage/redis";
import type { ActivityMeta, BucketMethods, ReconcileActivityRow, ReconcileReport, StockThis } from "./types";

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms));

/**
 * The oldest lend a borrow may take. Reconciliation gives back only lends twice as old, so a
 * reservation never follows a lend that reconciliation returned (that would sell the unit twice).
 * Half of seckill.reconcile_age, at least a second (a lend is borrowed within milliseconds).
 */
export const lendWindowMs = () => Math.max(500 * getConfig().seckill.reconcile_age, 1000);

/** How often a buyer who found every bucket dry but a lend in flight looks again before "retry". */
const IN_FLIGHT_PASSES = 5;

/** Batches (one WAIT each) are per bucket: one slot, one master, one pipeline. */
const slotOf = (arming: string, bucket: number) => `${arming}:${bucket}`;

/** seckill_reserve.lua's KEYS and ARGV for one bucket (the same script as an unbucketed sale's). */
export function reserveArgs(
	arming: string,
	tags: BucketTags,
	bucket: number,
	userId: number,
	orderNo: string,
	nonce = ""
) {
	const k = bucketKeys(arming, tags, bucket);
	// A sale token's nonce is spent in the buyer's home bucket: the token is bound to the buyer, so
	// every try with it meets the same bucket's record (README "Sale tokens").
	return [...reserveKeys(k), userId, orderNo, nonce];
}

/**
 * Stock buckets (README "One hot product across Redis shards"): the buyer's home bucket decides
 * as an unbucketed sale does; when it is dry, a unit is lent by another bucket and reserved in
 * the home bucket; lends a crash left behind are settled or returned by reconciliation.
 */
export const bucketMethods = {
	/** An arming's tags, from its row (they never change, so each node reads them once). */
	async bucketTagsOf(this: StockThis, arming: string): Promise<BucketTags> {
		const cached = this.bucketTagCache.get(arming);
		if (cached) return cached;
		const [row] = (await this.adapter.db.query(
			"SELECT buckets, bucket_tags FROM seckill_activities WHERE arming_id = ?",
			{ replacements: [arming], type: QueryTypes.SELECT }
		)) as { buckets: number; bucket_tags: string }[];
		// An arming with no row (a message of a lost database) is looked up as unbucketed, not remembered.
		if (!row) return ONE_BUCKET;
		const tags = parseBucketTags(row.buckets, row.bucket_tags);
		if (this.bucketTagCache.size >= 1000) this.bucketTagCache.clear();
		this.bucketTagCache.set(arming, tags);
		return tags;
	},

	/** One script on one bucket, acknowledged by WAIT when redis.wait_replicas is set. */
	async bucketCall(
		this: StockThis,
		slot: string,
		cmd: "seckillReserve" | "seckillLend" | "seckillBorrow",
		args: (string | number)[]
	): Promise<[[number, number, number], number]> {
		if (!this.replicatedBuckets) return [await this.redis[cmd](...args), 0];
		for (let attempt = 1; ; attempt++) {
			try {
				const [r, acked] = await this.replicatedBuckets.run(slot, cmd, args);
				return [r as [number, number, number], acked];
			} catch (err) {
				// A redirection proves the script did not run (see runReserve).
				if (attempt < 3 && isRedirection(err)) {
					await sleep(100 * attempt);
					continue;
				}
				throw err;
			}
		}
	},

	/**
	 * The bucketed decision: [code, seq, left, replicas, home]. `left` is 0 only when every bucket
	 * was found empty for good (the caller then broadcasts sold-out), SOLD_OUT only after every
	 * bucket's own atomic script found it with no stock and no unit lent out that may come back.
	 */
	async reserveInBuckets(
		this: StockThis,
		meta: ActivityMeta,
		userId: number,
		orderNo: string,
		nonce = ""
	): Promise<[number, number, number, number, number]> {
		const { arming, tags } = meta;
		const n = tags.length;
		const home = homeBucket(userId, n);
		const hk = bucketKeys(arming, tags, home);
		const [first, firstAcked] = await this.bucketCall(
			slotOf(arming, home),
			"seckillReserve",
			reserveArgs(arming, tags, home, userId, orderNo, nonce)
		);
		const lastUnit = async () => !(await this.everyBucketEmpty(arming, tags).catch(() => false));
		if (first[0] === SeckillResult.WON)
			return [first[0], first[1], first[2] === 0 && (await lastUnit()) ? 1 : first[2], firstAcked, home];
		if (first[0] !== SeckillResult.SOLD_OUT) return [first[0], 0, 0, firstAcked, home];

		const maxAge = lendWindowMs();
		for (let pass = 0; pass < IN_FLIGHT_PASSES; pass++) {
			let inFlight = 0;
			let unanswered: Error | null = null;
			// The other buckets in turn, then home again: a unit may have come back to it meanwhile.
			for (let step = 1; step <= n; step++) {
				const j = (home + step) % n;
				const jk = bucketKeys(arming, tags, j);
				const lendOp = (op: string) => [jk.info, jk.lends, op, orderNo, home];
				let lent: [number, number, number];
				let lentAcked: number;
				try {
					[lent, lentAcked] = await this.bucketCall(slotOf(arming, j), "seckillLend", lendOp("lend"));
				} catch (err) {
					// A bucket that does not answer (its master failing over) is skipped, and the buyer
					// is never told "sold out" on its account. Never "queued unknown" for a lend: no
					// reservation exists yet; a lend that did happen is returned by reconciliation.
					unanswered = new Error(`lend from bucket ${j}: ${(err as Error).message}`);
					continue;
				}
				if (lent[0] === -1) continue; // this bucket's keys are gone (reconciliation rebuilds them)
				if (lent[0] === 0) {
					inFlight += lent[2];
					continue;
				}
				const unlend = () => this.bucketCall(slotOf(arming, j), "seckillLend", lendOp("unlend")).catch(() => undefined);
				// A lend a failover may forget would let its unit be sold again: not taken.
				if (this.replicatedBuckets && lentAcked < this.replicatedBuckets.replicas) {
					await unlend();
					return [SeckillResult.BUCKET_RETRY, 0, 0, 0, home];
				}
				let got: [number, number, number];
				let gotAcked: number;
				try {
					[got, gotAcked] = await this.bucketCall(slotOf(arming, home), "seckillBorrow", [
						hk.info,
						hk.bought,
						hk.seqs,
						hk.resv,
						hk.last,
						hk.borrows,
						userId,
						orderNo,
						j,
						lent[2],
						maxAge
					]);
				} catch (err) {
					// Only a redirection proves the borrow did not run; then its unit goes back now. Sent and
					// unanswered (a timeout, or a connection closed under the WAIT after the script's own
					// answer), the reservation may hold the unit: giving it back too would sell it twice.
					// The lend is left to reconciliation, which settles it if the home bucket holds the
					// borrow, else gives it back.
					if (isRedirection(err)) await unlend();
					throw err;
				}
				if (got[0] !== SeckillResult.WON) {
					await unlend();
					return [got[0], 0, 0, gotAcked, home];
				}
				// The lend is now a reservation; forgetting the record can wait for reconciliation if this fails.
				await this.bucketCall(slotOf(arming, j), "seckillLend", lendOp("settle")).catch(() => undefined);
				return [got[0], got[1], lent[1] === 0 && (await lastUnit()) ? 1 : lent[1] || 0, gotAcked, home];
			}
			if (unanswered) throw unanswered;
			if (!inFlight) return [SeckillResult.SOLD_OUT, 0, 0, 0, home];
			// Every bucket dry, but units lent out that a refused borrow may give back within
			// milliseconds: "sold out" now could leave one of them unsold.
			if (pass < IN_FLIGHT_PASSES - 1) await sleep(5 * 2 ** pass);
		}
		return [SeckillResult.BUCKET_RETRY, 0, 0, 0, home];
	},

	/**
	 * Whether every bucket holds no stock and no lend in flight, each seen so by its own atomic
	 * probe. Such a bucket stays empty (only a release brings a unit back): no lend can leave it and
	 * none is out to return, so probes one after the other add up to "every bucket empty now".
	 */
	async everyBucketEmpty(this: StockThis, arming: string, tags: BucketTags): Promise<boolean> {
		const probes = await Promise.all(
			tags.map((_, b) => {
				const k = bucketKeys(arming, tags, b);
				return this.redis.seckillLend(k.info, k.lends, "probe", "", b);
			})
		);
		return probes.every(([found, stock, lends]) => found !== 1 || (stock <= 0 && lends === 0));
	},

	/** Σ of the buckets' stock (what a buyer can still get, units in flight aside). */
	async bucketsStock(this: StockThis, arming: string, tags: BucketTags): Promise<number> {
		const all = await Promise.all(tags.map((_, b) => this.redis.hget(bucketKeys(arming, tags, b).info, "stock")));
		return all.reduce((sum, s) => sum + Number(s ?? 0), 0);
	},

	/**
	 * Units lent and not reserved: lend records whose home bucket holds no borrow of them (a lend
	 * with a borrow is already counted by its reservation, or by the stock its release gave back).
	 */
	async lendsInFlight(this: StockThis, arming: string, tags: BucketTags): Promise<number> {
		if (tags.length === 1) return 0;
		let n = 0;
		for (let j = 0; j < tags.length; j++) {
			const lends = await this.redis.hgetall(bucketKeys(arming, tags, j).lends);
			for (const [orderNo, value] of Object.entries(lends)) {
				const home = Number(value.split("|")[0]);
				if (!(await this.redis.hexists(bucketKeys(arming, tags, home).borrows, orderNo))) n++;
			}
		}
		return n;
	},

	/** The bucket holding a reservation (operators' calls that name only the order_no); 0 if none does. */
	async locateBucket(this: StockThis, arming: string, orderNo: string): Promise<number> {
		const tags = await this.bucketTagsOf(arming);
		for (let b = 0; b < tags.length; b++)
			if (await this.redis.hexists(bucketKeys(arming, tags, b).resv, orderNo)) return b;
		return 0;
	},

	/**
	 * Lends older than twice the borrow window: a crash between lend and reservation, or a lost
	 * settle. With a borrow in the home bucket the reservation was made (and may since have been
	 * released into the home stock): the record is forgotten. Without one, none can be made any
	 * more (the borrow script refuses a lend that old): the unit goes back to its bucket.
	 */
	async reconcileLends(this: StockThis, arming: string, tags: BucketTags, report: ReconcileReport) {
		if (tags.length === 1) return;
		const staleMs = 2 * lendWindowMs();
		for (let j = 0; j < tags.length; j++) {
			const jk = bucketKeys(arming, tags, j);
			let cursor = "0";
			do {
				const [next, flat] = await this.redis.hscan(jk.lends, cursor, "COUNT", 500);
				cursor = next;
				const [sec, micro] = await this.redis.time();
				const now = Number(sec) * 1000 + Math.floor(Number(micro) / 1000);
				for (let i = 0; i < flat.length; i += 2) {
					const [home, at] = flat[i + 1].split("|").map(Number);
					if (now - at < staleMs) continue;
					const borrowed = await this.redis.hexists(bucketKeys(arming, tags, home).borrows, flat[i]);
					const [done, left] = await this.redis.seckillLend(
						jk.info,
						jk.lends,
						borrowed ? "settle" : "unlend",
						flat[i],
						home
					);
					if (done !== 1) continue;
					if (borrowed) report.lends_settled++;
					else {
						report.lends_returned++;
						if (left === 1)
							this.broker.broadcast("seckill.available", {
								product_id: report.product_id,
								activity_id: report.activity_id
							});
					}
				}
			} while (cursor !== "0");
		}
		if (report.lends_returned)
			this.logger.warn(
				`reconcile activity ${report.activity_id}: ${report.lends_returned} stale lend(s) with no reservation given back`
			);
	},

	/**
	 * Buckets whose info hash Redis lost (a failover that dropped writes), rebuilt from the row:
	 * their stock is what the global invariant leaves for them (initial - the other buckets' stock,
	 * reservations and lends in flight), shared among the lost ones; their live orders are then
	 * put back by restoreLostReservations, each taking its unit from its home bucket. Exact when the
	 * sale is quiet; the report's `consistent` says whether it is.
	 */
	async rebuildLostBuckets(
		this: StockThis,
		activity: ReconcileActivityRow,
		tags: BucketTags,
		report: ReconcileReport,
		price: string
	) {
		const arming = activity.arming_id;
		const exists = await Promise.all(tags.map((_, b) => this.redis.exists(bucketKeys(arming, tags, b).info)));
		const lost = tags.map((_, b) => b).filter(b => !exists[b]);
		if (!lost.length) return;
		let left = report.initial;
		if (lost.length < tags.length) {
			for (let b = 0; b < tags.length; b++) {
				if (!exists[b]) continue;
				const k = bucketKeys(arming, tags, b);
				left -= Number((await this.redis.hget(k.info, "stock")) ?? 0) + (await this.redis.hlen(k.resv));
			}
			left -= await this.lendsInFlight(arming, tags);
		}
		const armed = Number(activity.status) === ActivityStatus.LIVE;
		for (const [i, b] of lost.entries())
			await this.writeActivityInfo(
				arming,
				{
					// All lost: the initial split. Some lost: what is left goes to the first of them.
					stock: lost.length === tags.length ? bucketShare(report.initial, tags.length, b) : i === 0 ? left : 0,
					start: new Date(activity.start_time).getTime(),
					end: new Date(activity.end_time).getTime(),
					limit: Number(activity.limit_per_user),
					active: armed,
					activity_id: report.activity_id,
					product_id: report.product_id,
					price,
					name: activity.name ?? "",
					image: activity.image_url ?? "",
					require_token: Number(activity.require_token) === 1,
					captcha: Number(activity.captcha) === 1
				},
				tags,
				b
			);
		if (armed) await this.redis.set(productActivityKey(report.product_id), arming);
		report.rebuilt = true;
		this.logger.warn(
			`reconcile activity ${report.activity_id}: bucket(s) ${lost.join(",")} of ${tags.length} were gone from Redis; rebuilt from the database`
		);
		this.broker.broadcast("seckill.armed", {
			product_id: report.product_id,
			activity_id: report.activity_id,
			arming_id: arming
		});
	}
} satisfies BucketMethods;
