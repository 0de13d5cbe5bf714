import { QueryTypes, Transaction, UniqueConstraintError } from "sequelize";
import { PermanentMessageError } from "../../lib/messaging/amqp";
import { ClaimResult, OrderStatus } from "../../lib/domain/order";
import { isSeckillOrderMessage, SeckillOrderMessage } from "../../lib/domain/seckill";
import { inTransaction } from "../../lib/storage/tx";
import { ResultItem, SECKILL_RESULTS_EVENT } from "../../lib/domain/seckill-results";
import type { OrderMethods, OrderThis } from "./types";

const unknownArming = (arming: string) =>
	new PermanentMessageError(`unknown arming ${arming}: Redis holds no flash sale of it`);

const resultItem = (m: SeckillOrderMessage, status: ResultItem["status"], reason?: string): ResultItem => ({
	product_id: m.product_id,
	user_id: m.user_id,
	order_no: m.order_no,
	status,
	...(reason === undefined ? {} : { reason })
});

/**
 * The flash-sale queue's consumer: each reservation's message becomes its order, idempotently,
 * in batches when it can and one at a time when anything is unusual.
 */
export const drainMethods = {
	/**
	 * A flash-sale message is about to go to the dead-letter queue: its reservation is marked
	 * failed with the reason, so the buyer's poll ends and reconciliation leaves it to an
	 * operator. Throws (and the message goes back to the queue) if the stock actor cannot say so.
	 */
	async seckillDeadLettered(this: OrderThis, body: unknown, reason: string) {
		if (!isSeckillOrderMessage(body)) return; // names no reservation
		const { failed } = (await this.broker.call(
			"stock.markFailed",
			{ arming_id: body.arming_id, order_no: body.order_no, bucket: body.bucket, reason },
			{ retries: 2, timeout: 5000 }
		)) as { failed: boolean };
		// Only a reservation that is failed now: one that is ordered or released is not the poll's "failed".
		if (failed) this.announceResults([resultItem(body, "failed", reason)]);
	},

	/**
	 * Writes the order of one flash-sale reservation. Safe to run any number of times for
	 * the same message (failure mode 5): the order_no is unique, the existence check and the
	 * insert are backed by that key, and the claim keeps a released reservation from ever
	 * becoming an order.
	 */
	async createSeckillOrder(this: OrderThis, m: SeckillOrderMessage) {
		const db = this.db();
		const done = await db.query("SELECT 1 FROM orders WHERE order_no = ?", {
			replacements: [m.order_no],
			type: QueryTypes.SELECT
		});
		if (!done.length) {
			const [claim] = (await this.broker.call("stock.claim", {
				arming_id: m.arming_id,
				order_nos: [m.order_no],
				buckets: m.bucket ? [m.bucket] : undefined
			})) as ClaimResult[];
			if (claim === "unknown_arming") throw unknownArming(m.arming_id);
			if (claim === "released") {
				this.logger.info(`seckill ${m.order_no}: reservation was released before its order; nothing to write`);
				return;
			}
			let inserted = true;
			try {
				await inTransaction(db, async transaction => {
					await db.query(
						`INSERT INTO orders (order_no, user_id, product_id, product_name, product_image, quantity, unit_price, total_price, status, activity_id, seckill_seq, expires_at)
						 VALUES (:no, :user, :product, :name, :image, 1, :price, :price, :status, :activity, :seq, NOW(3) + INTERVAL :us MICROSECOND)`,
						{
							replacements: {
								no: m.order_no,
								user: m.user_id,
								product: m.product_id,
								name: m.product_name,
								image: m.product_image,
								price: m.price,
								status: OrderStatus.PENDING_PAYMENT,
								activity: m.activity_id,
								seq: m.seq,
								us: this.payTimeoutMs() * 1000
							},
							transaction
						}
					);
					// The arming in the guard is what keeps a message of another sale (an older
					// database, a restored backup) out of this one: same activity id, other arming.
					const [, affected] = (await db.query(
						"UPDATE seckill_activities SET stock = stock - 1 WHERE id = ? AND arming_id = ? AND stock >= 1",
						{
							replacements: [m.activity_id, m.arming_id],
							type: QueryTypes.UPDATE,
							transaction
						}
					)) as unknown as [unknown, number];
					if (affected !== 1)
						throw new PermanentMessageError(
							(await this.whyUnwritable(m, transaction)) ?? `activity ${m.activity_id} refused the order`
						);
				});
			} catch (err) {
				if (!(err instanceof UniqueConstraintError)) throw err;
				const key = String((err as any).parent?.sqlMessage ?? "");
				// A concurrent delivery of the same message won the insert: that is the order.
				if (key.includes("uk_orders_order_no")) inserted = false;
				else if (key.includes("uk_orders_activity_buyer_seq"))
					throw new PermanentMessageError(
						(await this.whyUnwritable(m)) ??
							`buyer ${m.user_id} already holds reservation #${m.seq} of activity ${m.activity_id} under another order number`
					);
				else throw err;
			}
			if (inserted) await this.seckillOrdersWritten([m]);
		}
		await this.broker.call("stock.markOrdered", {
			arming_id: m.arming_id,
			order_nos: [m.order_no],
			buckets: m.bucket ? [m.bucket] : undefined
		});
		this.announceResults([resultItem(m, "success")]);
	},

	/** Which batch a flash-sale message joins: one per sale arming; a malformed one none. */
	seckillBatchKey(this: OrderThis, body: unknown): string | null {
		return isSeckillOrderMessage(body) ? `${body.activity_id}:${body.arming_id}` : null;
	},

	/**
	 * The drain's fast path: one arming's messages in hand (seckillBatchKey) written in one
	 * transaction (one multi-row INSERT, one guarded UPDATE of the activity's stock by the
	 * batch's size), so the hot activity row is locked once per batch rather than once per
	 * order. Anything unusual (an unknown arming, a unique-key conflict, a refused stock
	 * update) leaves the batch to createSeckillOrder, one message at a time, which knows every
	 * case. Answers, per message, whether it is done.
	 */
	async createSeckillOrders(this: OrderThis, messages: SeckillOrderMessage[]) {
		try {
			const ordered = await this.writeSeckillGroup(messages);
			this.announceResults(ordered.map(m => resultItem(m, "success")));
			return messages.map(() => true);
		} catch (err) {
			// Redis knows no sale of this arming: none of the batch can ever be written, and the
			// single writer would only ask again (a poison message, dead-lettered at once).
			if (err instanceof PermanentMessageError) return messages.map(() => err);
			this.logger.debug(`seckill batch of ${messages.length} left to single writes: ${(err as Error).message}`);
			return messages.map(() => false);
		}
	},

	/**
	 * One arming's messages in one transaction; throws (and writes nothing) unless all is ordinary.
	 * Answers the messages whose orders are committed (written now or found written before).
	 */
	async writeSeckillGroup(this: OrderThis, messages: SeckillOrderMessage[]) {
		const db = this.db();
		const { activity_id, arming_id } = messages[0];
		// A redelivered copy may sit in the same batch as its original.
		const byNo = new Map(messages.map(m => [m.order_no, m]));
		const unique = [...byNo.values()];
		// Stock buckets: each reservation lives in its buyer's home bucket (absent: 0, unbucketed).
		const bucketsOf = (nos: string[]) =>
			nos.some(no => byNo.get(no)?.bucket) ? nos.map(no => byNo.get(no)?.bucket ?? 0) : undefined;
		const existing = new Set(
			(
				(await db.query("SELECT order_no FROM orders WHERE order_no IN (:nos)", {
					replacements: { nos: unique.map(m => m.order_no) },
					type: QueryTypes.SELECT
				})) as { order_no: string }[]
			).map(r => r.order_no)
		);
		const fresh = unique.filter(m => !existing.has(m.order_no));
		let write: SeckillOrderMessage[] = [];
		if (fresh.length) {
			const claims = (await this.broker.call("stock.claim", {
				arming_id,
				order_nos: fresh.map(m => m.order_no),
				buckets: bucketsOf(fresh.map(m => m.order_no))
			})) as ClaimResult[];
			if (claims.includes("unknown_arming")) {
				// None written before: none can be now. Otherwise the single writer acks the written ones.
				if (!existing.size) throw unknownArming(arming_id);
				throw new Error(`unknown arming ${arming_id}`);
			}
			write = fresh.filter((_, i) => claims[i] === "claimed");
		}
		if (write.length) {
			const us = this.payTimeoutMs() * 1000;
			const row = "(?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, NOW(3) + INTERVAL ? MICROSECOND)";
			await inTransaction(db, async transaction => {
				await db.query(
					`INSERT INTO orders (order_no, user_id, product_id, product_name, product_image, quantity, unit_price, total_price, status, activity_id, seckill_seq, expires_at) VALUES ${write.map(() => row).join(", ")}`,
					{
						replacements: write.flatMap(m => [
							m.order_no,
							m.user_id,
							m.product_id,
							m.product_name,
							m.product_image,
							m.price,
							m.price,
							OrderStatus.PENDING_PAYMENT,
							m.activity_id,
							m.seq,
							us
						]),
						transaction
					}
				);
				const [, affected] = (await db.query(
					"UPDATE seckill_activities SET stock = stock - :n WHERE id = :id AND arming_id = :arming AND stock >= :n",
					{
						replacements: { n: write.length, id: activity_id, arming: arming_id },
						type: QueryTypes.UPDATE,
						transaction
					}
				)) as unknown as [unknown, number];
				if (affected !== 1) throw new Error(`activity ${activity_id} refused ${write.length} units`);
			});
			await this.seckillOrdersWritten(write);
		}
		const ordered = [...existing, ...write.map(m => m.order_no)];
		if (ordered.length)
			await this.broker.call("stock.markOrdered", { arming_id, order_nos: ordered, buckets: bucketsOf(ordered) });
		return ordered.map(no => byNo.get(no)!);
	},

	/**
	 * The result streams' news (README "Pushed results (SSE)"): one broadcast per batch, to the
	 * gateways only. After markOrdered, so a stream that re-reads on this news reads "success".
	 */
	announceResults(this: OrderThis, items: ResultItem[]) {
		if (items.length) this.broker.broadcast(SECKILL_RESULTS_EVENT, { items }, { groups: ["api"] });
	},

	/** What follows committed flash-sale orders, however they were written: count, announce, schedule the close. */
	async seckillOrdersWritten(this: OrderThis, written: SeckillOrderMessage[]) {
		this.broker.metrics.increment("gomall_orders_created_total", { kind: "seckill" }, written.length);
		for (const m of written)
			this.broker.emit("order.created", {
				order_no: m.order_no,
				user_id: m.user_id,
				product_id: m.product_id,
				quantity: 1,
				total_price: Number(m.price),
				activity_id: m.activity_id
			});
		await this.scheduleClose(written.map(m => m.order_no));
	},

	/**
	 * Why the database will never take this message's order, or null if it might. Inside a
	 * transaction it must run on that transaction's connection: asking the pool for a
	 * second one while holding the first starves the pool when every handler does it.
	 */
	async whyUnwritable(this: OrderThis, m: SeckillOrderMessage, transaction?: Transaction) {
		const [a] = (await this.db().query("SELECT arming_id, stock FROM seckill_activities WHERE id = ?", {
			replacements: [m.activity_id],
			type: QueryTypes.SELECT,
			transaction
		})) as { arming_id: string; stock: number }[];
		if (!a) return `unknown activity ${m.activity_id}`;
		if (a.arming_id !== m.arming_id)
			return `stale arming: activity ${m.activity_id} is arming ${a.arming_id}, the message is of arming ${m.arming_id}`;
		if (Number(a.stock) < 1) return `activity ${m.activity_id} has no database stock left`;
		return null;
	}
} satisfies Partial<OrderMethods>;
