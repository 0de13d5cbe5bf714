import { QueryTypes } from "sequelize";
import { bizError } from "../../lib/contract/errors";
import { ActivityStatus } from "../../lib/domain/order";
import { activityKeys, parseReservation, productActivityKey } from "../../lib/domain/seckill";
import { bucketKeys, homeBucket, parseBucketTags } from "../../lib/domain/seckill-buckets";
import type { StreamState } from "../../lib/domain/seckill-results";
import type { ListingMethods, StockThis } from "./types";

/** What buyers read: the live activities, and what became of their own reservation. */
export const listingMethods = {
	/** The live activities not yet ended, their stock as Redis has it now (else the row's). */
	async listActivities(this: StockThis) {
		const rows = (await this.adapter.db.query(
			`SELECT a.id, a.arming_id, a.product_id, p.name AS product_name, p.image_url AS product_image, p.price AS original_price,
			        a.seckill_price, a.stock AS db_stock, a.start_time, a.end_time, a.buckets, a.bucket_tags
			   FROM seckill_activities a JOIN products p ON p.id = a.product_id
			  WHERE a.status = ${ActivityStatus.LIVE} AND a.end_time > NOW(3)
			  ORDER BY a.start_time, a.id`,
			{ type: QueryTypes.SELECT }
		)) as Record<string, any>[];
		// One command per activity: on a Redis Cluster their keys live in different slots.
		// A bucketed one's stock is the sum of its buckets'.
		const live = await Promise.all(
			rows.map(r => {
				const tags = parseBucketTags(r.buckets, r.bucket_tags);
				return tags.length > 1
					? this.bucketsStock(r.arming_id, tags)
					: this.redis.hget(activityKeys(r.arming_id).info, "stock");
			})
		);
		return rows.map((r, i) => ({
			id: Number(r.id),
			product_id: Number(r.product_id),
			product_name: r.product_name,
			product_image: r.product_image,
			original_price: Number(r.original_price),
			seckill_price: Number(r.seckill_price),
			stock: live[i] != null ? Number(live[i]) : Number(r.db_stock),
			start_time: r.start_time,
			end_time: r.end_time
		}));
	},

	/** The buyer's latest reservation in the product's live arming: queued, success or failed. */
	async seckillResult(this: StockThis, productId: number, userId: number) {
		const arming = await this.redis.get(productActivityKey(productId));
		if (!arming) throw bizError("SECKILL_NO_ACTIVITY");
		// The buyer's reservations live in its home bucket.
		const tags = await this.bucketTagsOf(arming);
		const k = bucketKeys(arming, tags, homeBucket(userId, tags.length));
		const orderNo = await this.redis.hget(k.last, String(userId));
		if (!orderNo) return { status: "failed" as const, order_no: null };
		const value = await this.redis.hget(k.resv, orderNo);
		const r = value ? parseReservation(orderNo, value) : null;
		// Dead-lettered: the wait is over, with the reason; the unit is the operator's to replay or release.
		if (r?.state === "F")
			return { status: "failed" as const, order_no: orderNo, reason: (await this.redis.hget(k.failed, orderNo)) ?? "" };
		if (r) return { status: r.state === "O" ? ("success" as const) : ("queued" as const), order_no: orderNo };
		// Released: either it never became an order, or its order was closed later.
		const rows = await this.adapter.db.query("SELECT 1 FROM orders WHERE order_no = ?", {
			replacements: [orderNo],
			type: QueryTypes.SELECT
		});
		return {
			status: rows.length ? ("success" as const) : ("failed" as const),
			order_no: rows.length ? orderNo : null
		};
	},

	/**
	 * seckillResult for many buyers of one product at once (the result streams' re-check when it
	 * sells out), with the same reading: one pipeline of HGETs on `last`, one on `resv` and
	 * `failed`, per home bucket (a bucket's keys share a slot), and one query for the released.
	 * "none" is a buyer with no reservation. sold_out is read before Redis, so every win that
	 * made it true is in the reservations read after.
	 */
	async seckillResults(this: StockThis, productId: number, userIds: number[]) {
		const soldOut = this.soldOut.has(productId);
		const arming = await this.redis.get(productActivityKey(productId));
		if (!arming) throw bizError("SECKILL_NO_ACTIVITY");
		const tags = await this.bucketTagsOf(arming);
		const states: StreamState[] = userIds.map(() => ({ status: "none", order_no: null }));
		const byBucket = Map.groupBy(userIds.keys(), i => homeBucket(userIds[i], tags.length));
		const released: number[] = [];
		const exec = async (fill: (p: ReturnType<StockThis["redis"]["pipeline"]>) => void) => {
			const p = this.redis.pipeline();
			fill(p);
			return ((await p.exec()) ?? []).map(([err, v]) => {
				if (err) throw err;
				return v as string | null;
			});
		};
		await Promise.all(
			[...byBucket].map(async ([b, idx]) => {
				const k = bucketKeys(arming, tags, b);
				const lasts = await exec(p => idx.forEach(i => p.hget(k.last, String(userIds[i]))));
				idx.forEach((i, j) => (states[i].order_no = lasts[j]));
				const held = idx.filter(i => states[i].order_no);
				if (!held.length) return;
				const got = await exec(p =>
					held.forEach(i => p.hget(k.resv, states[i].order_no!).hget(k.failed, states[i].order_no!))
				);
				held.forEach((i, j) => {
					const value = got[2 * j];
					const r = value ? parseReservation(states[i].order_no!, value) : null;
					if (r?.state === "F") states[i] = { status: "failed", order_no: r.order_no, reason: got[2 * j + 1] ?? "" };
					else if (r) states[i].status = r.state === "O" ? "success" : "queued";
					else released.push(i);
				});
			})
		);
		// Released: either it never became an order (the poll's failed without an order_no: "none",
		// the buyer may buy again), or its order was closed later.
		if (released.length) {
			const rows = (await this.adapter.db.query("SELECT order_no FROM orders WHERE order_no IN (:nos)", {
				replacements: { nos: released.map(i => states[i].order_no) },
				type: QueryTypes.SELECT
			})) as { order_no: string }[];
			const ordered = new Set(rows.map(r => r.order_no));
			for (const i of released)
				states[i] = ordered.has(states[i].order_no!)
					? { status: "success", order_no: states[i].order_no }
					: { status: "none", order_no: null };
		}
		return { sold_out: soldOut, states };
	}
} satisfies ListingMethods;
