import { QueryTypes } from "sequelize";
import { bizError } from "../../lib/contract/errors";
import { CloseResult, OrderStatus } from "../../lib/domain/order";
import { homeBucket } from "../../lib/domain/seckill-buckets";
import { inTransaction } from "../../lib/storage/tx";
import type { OrderMethods, OrderThis } from "./types";

/**
 * Closing unpaid orders: the buyer's cancel, the RabbitMQ delay (a fixed-TTL queue
 * dead-lettering into the close queue) and the periodic sweep, each giving the stock back once.
 */
export const closingMethods = {
	/**
	 * Pending → closed, returning the stock in the same transaction: the status transition
	 * happens once, so the stock comes back exactly once, whoever closes (buyer, delay
	 * queue, sweep) and however often a close message is delivered.
	 */
	async closeOrder(
		this: OrderThis,
		no: string,
		opts: { userId?: number; reason: "cancel" | "timeout" }
	): Promise<CloseResult> {
		// With a provider, what it says comes first: paid means paid, else its transaction is closed.
		if (this.payProvider && (await this.mayClose(no, opts)) && (await this.settleBeforeClose(no)) === "paid") {
			if (opts.reason === "cancel") throw bizError("ORDER_ALREADY_PAID");
			return { closed: false };
		}
		const result = await inTransaction(this.db(), async t => {
			const order = await this.lockOrder(no, t);
			if (opts.reason === "cancel") {
				if (!order || Number(order.user_id) !== opts.userId) throw bizError("ORDER_NOT_FOUND");
				if (order.status === OrderStatus.CLOSED) throw bizError("ORDER_CLOSED");
				if (order.status !== OrderStatus.PENDING_PAYMENT) throw bizError("ORDER_WRONG_STATUS");
			} else if (!order || order.status !== OrderStatus.PENDING_PAYMENT || !order.expired) {
				return { closed: false, order };
			}
			await this.db().query("UPDATE orders SET status = ?, closed_at = NOW(3) WHERE id = ?", {
				replacements: [OrderStatus.CLOSED, order.id],
				transaction: t
			});
			const closed = { ...order, status: OrderStatus.CLOSED };
			// A flash-sale unit goes back to its activity; an ordinary one to the product.
			if (!order.activity_id) {
				await this.db().query("UPDATE products SET stock = stock + ? WHERE id = ?", {
					replacements: [order.quantity, order.product_id],
					transaction: t
				});
				return { closed: true, order: closed };
			}
			await this.db().query("UPDATE seckill_activities SET stock = stock + ? WHERE id = ?", {
				replacements: [order.quantity, order.activity_id],
				transaction: t
			});
			const [activity] = (await this.db().query("SELECT arming_id, buckets FROM seckill_activities WHERE id = ?", {
				replacements: [order.activity_id],
				type: QueryTypes.SELECT,
				transaction: t
			})) as { arming_id: string; buckets: number }[];
			// Stock buckets: the reservation lives in its buyer's home bucket.
			const bucket = activity ? homeBucket(Number(order.user_id), Number(activity.buckets)) : 0;
			return { closed: true, order: closed, arming: activity?.arming_id, bucket };
		});
		if (result.closed && result.order) {
			const o = result.order;
			if (o.activity_id) {
				// Redis gets the unit and the buyer's slot back; the release is idempotent, and
				// if this call is lost, reconciliation finds the closed order and releases it.
				const ref = { arming_id: result.arming, order_no: o.order_no, bucket: result.bucket || undefined };
				await this.broker.call("stock.release", ref).catch(err => {
					this.logger.warn(`order ${o.order_no}: Redis release deferred to reconciliation (${err.message})`);
				});
			} else {
				this.broker.emit("product.stock.changed", { product_id: Number(o.product_id) });
			}
			this.broker.emit("order.closed", {
				order_no: o.order_no,
				user_id: Number(o.user_id),
				product_id: Number(o.product_id),
				quantity: o.quantity,
				activity_id: o.activity_id,
				reason: opts.reason
			});
		}
		return result;
	},

	/** Whether a close would act now (read without a lock; the close's transaction checks again). */
	async mayClose(this: OrderThis, no: string, opts: { userId?: number; reason: "cancel" | "timeout" }) {
		const [row] = (await this.db().query(
			"SELECT user_id, status, expires_at <= NOW(3) AS expired FROM orders WHERE order_no = ?",
			{ replacements: [no], type: QueryTypes.SELECT }
		)) as { user_id: number; status: number; expired: number }[];
		if (!row || row.status !== OrderStatus.PENDING_PAYMENT) return false;
		return opts.reason === "cancel" ? Number(row.user_id) === opts.userId : Boolean(row.expired);
	},

	/** One delayed close message per order; a lost one is caught by the sweep. */
	async scheduleClose(this: OrderThis, nos: string[]) {
		await Promise.all(
			nos.map(no =>
				this.publisher.publish("", this.delayQueue, { order_no: no }, `close-${no}`).catch(err => {
					this.logger.warn(`order ${no}: close not scheduled (${err.message}); the sweep will close it`);
				})
			)
		);
	},

	async sweepExpired(this: OrderThis, limit = 500) {
		const rows = (await this.db().query(
			"SELECT order_no FROM orders WHERE status = ? AND expires_at <= NOW(3) ORDER BY expires_at LIMIT ?",
			{
				replacements: [OrderStatus.PENDING_PAYMENT, limit],
				type: QueryTypes.SELECT
			}
		)) as { order_no: string }[];
		let closed = 0;
		for (const { order_no } of rows) {
			// One order the provider cannot answer for waits; the others close.
			const r = await this.closeOrder(order_no, { reason: "timeout" }).catch(err => {
				this.logger.warn(`order ${order_no}: not closed by the sweep (${err.message})`);
				return { closed: false };
			});
			if (r.closed) closed++;
		}
		if (closed) this.logger.info(`sweep closed ${closed} expired unpaid order(s)`);
		return closed;
	}
} satisfies Partial<OrderMethods>;
