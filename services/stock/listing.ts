import { QueryTypes } from "sequelize";
import { bizError } from "../../lib/contract/errors";
import { ActivityStatus } from "../../lib/domain/order";
import { activityKeys, parseReservation, productActivityKey } from "../../lib/domain/seckill";
import type { ListingMethods, StockThis } from "./types";

/** What buyers read: the live activities, and what became of their own reservation. */
export const listingMethods = {
	/** The live activities not yet ended, their stock as Redis has it now (else the row's). */
	async listActivities(this: StockThis) {
		const rows = (await this.adapter.db.query(
			`SELECT a.id, a.arming_id, a.product_id, p.name AS product_name, p.image_url AS product_image, p.price AS original_price,
			        a.seckill_price, a.stock AS db_stock, a.start_time, a.end_time
			   FROM seckill_activities a JOIN products p ON p.id = a.product_id
			  WHERE a.status = ${ActivityStatus.LIVE} AND a.end_time > NOW(3)
			  ORDER BY a.start_time, a.id`,
			{ type: QueryTypes.SELECT }
		)) as Record<string, any>[];
		// One command per activity: on a Redis Cluster their keys live in different slots.
		const live = await Promise.all(rows.map(r => this.redis.hget(activityKeys(r.arming_id).info, "stock")));
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
		const k = activityKeys(arming);
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
	}
} satisfies ListingMethods;
