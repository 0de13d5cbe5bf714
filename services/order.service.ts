import type { Context, Service, ServiceSchema, ServiceSettingSchema } from "moleculer";
import { DataTypes, QueryTypes, Sequelize, Transaction, UniqueConstraintError } from "sequelize";
import { getConfig } from "../config";
import {
	ATTEMPTS_HEADER,
	ConfirmPublisher,
	ConsumerOptions,
	MessageOutcome,
	PermanentMessageError,
	QueueConsumer,
	REASON_HEADER
} from "../lib/messaging/amqp";
import { CodeKey } from "../lib/contract/codes";
import { bizError } from "../lib/contract/errors";
import { AuthUser, ROLE_ADMIN } from "../lib/auth/jwt";
import { centsToDecimal, toCents } from "../lib/domain/money";
import { counter, labelSets } from "../lib/observability/metrics";
import { acquireWorkerId, OrderNoGenerator } from "../lib/domain/order-no";
import { pageParams, paged } from "../lib/contract/paging";
import { isSeckillOrderMessage, SeckillOrderMessage } from "../lib/domain/seckill";
import {
	assertCloseTopology,
	assertDelayQueue,
	assertSeckillTopology,
	CLOSE_ROUTING_KEY,
	deliveryPolicy,
	names,
	parking,
	SECKILL_ROUTING_KEY
} from "../lib/messaging/topology";
import { inTransaction } from "../lib/storage/tx";
import { AmqpMixin, AmqpThis } from "../mixins/amqp.mixin";
import { DbMixin, DbThis } from "../mixins/db.mixin";
import { RedisMixin, RedisThis } from "../mixins/redis.mixin";
import { PRODUCT_ON_SHELF } from "../lib/domain/product";
import { ClaimResult, CloseResult, Order, OrderRow, OrderStatus, PAY_TYPES } from "../lib/domain/order";

interface Line {
	product_id: number;
	quantity: number;
}

/** Which business codes a failed line maps to: a single order and a checkout speak differently. */
const FAILURES = {
	create: { offShelf: "PRODUCT_OFF_SHELF", soldOut: "PRODUCT_OUT_OF_STOCK", short: "PRODUCT_NOT_ENOUGH_STOCK" },
	checkout: { offShelf: "CART_PRODUCT_OFF_SHELF", soldOut: "CART_NOT_ENOUGH_STOCK", short: "CART_NOT_ENOUGH_STOCK" }
} as const satisfies Record<string, Record<string, CodeKey>>;

type UserCtx<P = unknown> = Context<P, { user: AuthUser }>;

interface OrderThis extends Service, DbThis, AmqpThis, RedisThis {
	orderNos: OrderNoGenerator;
	publisher: ConfirmPublisher;
	delayQueue: string;
	sweepTimer: NodeJS.Timeout | null;
	consumers: QueueConsumer[];
	db(): Sequelize;
	toOrder(row: OrderRow): Order;
	payTimeoutMs(): number;
	placeOrders(
		ctx: Context,
		userId: number,
		lines: Line[],
		kind: keyof typeof FAILURES,
		cartLineIds?: number[]
	): Promise<Order[]>;
	lockOrder(orderNo: string, t: Transaction): Promise<(OrderRow & { expired: number }) | undefined>;
	payOrder(userId: number, orderNo: string, payType: number): Promise<Order>;
	closeOrder(orderNo: string, opts: { userId?: number; reason: "cancel" | "timeout" }): Promise<CloseResult>;
	scheduleClose(orderNos: string[]): Promise<void>;
	sweepExpired(limit?: number): Promise<number>;
	createSeckillOrder(m: SeckillOrderMessage): Promise<void>;
	whyUnwritable(m: SeckillOrderMessage, transaction?: Transaction): Promise<string | null>;
	createSeckillOrders(bodies: unknown[]): Promise<boolean[]>;
	writeSeckillGroup(messages: SeckillOrderMessage[]): Promise<void>;
	seckillOrdersWritten(written: SeckillOrderMessage[]): Promise<void>;
	deadLetters(
		queue: DlqName,
		limit: number,
		replay: boolean
	): Promise<{ queue: string; messages: unknown[]; replayed: number }>;
}

type DlqName = "seckill" | "close";

const orderNo = { type: "string", pattern: /^[0-9]{1,32}$/, messages: { stringPattern: "order_no must be digits" } };
const quantity = { type: "number", integer: true, min: 1, max: 999, convert: true };

/**
 * The order actor: orders, checkout, pay, cancel, and closing unpaid orders through a
 * RabbitMQ delay (fixed-TTL queue dead-lettering into the close queue) plus a periodic sweep.
 * Every state change is a row-locked transition inside one transaction, with its stock move.
 */
const OrderService: ServiceSchema<ServiceSettingSchema, Record<string, any>, Record<string, any>, OrderThis> = {
	name: "order",
	// Flash-sale messages are claimed through the stock actor: consuming before it exists
	// would only burn their delivery attempts.
	dependencies: ["stock"],
	mixins: [
		DbMixin({
			name: "order",
			define: {
				id: { type: DataTypes.BIGINT.UNSIGNED, primaryKey: true, autoIncrement: true },
				order_no: DataTypes.STRING(32),
				user_id: DataTypes.BIGINT.UNSIGNED,
				product_id: DataTypes.BIGINT.UNSIGNED,
				status: DataTypes.TINYINT,
				created_at: DataTypes.DATE(3)
			},
			options: { tableName: "orders", timestamps: false }
		}),
		AmqpMixin("gomall-order"),
		RedisMixin("gomall-order")
	],

	actions: {
		create: {
			auth: "user",
			retryPolicy: { enabled: false },
			params: {
				$$strict: "remove",
				product_id: { type: "number", integer: true, positive: true, convert: true },
				quantity
			},
			async handler(this: OrderThis, ctx: UserCtx<Line>) {
				const [order] = await this.placeOrders(
					ctx,
					ctx.meta.user.id,
					[{ product_id: ctx.params.product_id, quantity: ctx.params.quantity }],
					"create"
				);
				return order;
			}
		},

		checkout: {
			auth: "user",
			retryPolicy: { enabled: false },
			async handler(this: OrderThis, ctx: UserCtx) {
				const lines = (await ctx.call("cart.lines", { user_id: ctx.meta.user.id })) as (Line & { id: number })[];
				if (!lines.length) throw bizError("CART_EMPTY");
				const orders = await this.placeOrders(
					ctx,
					ctx.meta.user.id,
					lines,
					"checkout",
					lines.map(l => l.id)
				);
				return { orders, total_price: orders.reduce((sum, o) => sum + toCents(o.total_price), 0) / 100 };
			}
		},

		list: {
			auth: "user",
			params: {
				$$strict: "remove",
				...pageParams,
				status: { type: "number", integer: true, min: 0, max: 5, convert: true, optional: true }
			},
			async handler(this: OrderThis, ctx: UserCtx<{ page: number; page_size: number; status?: number }>) {
				const { page, page_size, status } = ctx.params;
				const filter = status === undefined ? "" : " AND status = :status";
				const repl = { user: ctx.meta.user.id, status, limit: page_size, offset: (page - 1) * page_size };
				const rows = (await this.db().query(
					`SELECT * FROM orders WHERE user_id = :user${filter} ORDER BY created_at DESC, id DESC LIMIT :limit OFFSET :offset`,
					{ replacements: repl, type: QueryTypes.SELECT }
				)) as OrderRow[];
				const [{ total }] = (await this.db().query(
					`SELECT COUNT(*) AS total FROM orders WHERE user_id = :user${filter}`,
					{ replacements: repl, type: QueryTypes.SELECT }
				)) as { total: number }[];
				return paged(
					rows.map(r => this.toOrder(r)),
					Number(total),
					page,
					page_size
				);
			}
		},

		get: {
			auth: "user",
			params: { order_no: orderNo },
			async handler(this: OrderThis, ctx: UserCtx<{ order_no: string }>) {
				const [row] = (await this.db().query("SELECT * FROM orders WHERE order_no = ?", {
					replacements: [ctx.params.order_no],
					type: QueryTypes.SELECT
				})) as OrderRow[];
				// Someone else's order does not exist for you: 404, not 403.
				if (!row || (Number(row.user_id) !== ctx.meta.user.id && ctx.meta.user.role !== ROLE_ADMIN))
					throw bizError("ORDER_NOT_FOUND");
				return this.toOrder(row);
			}
		},

		pay: {
			auth: "user",
			params: { $$strict: "remove", order_no: orderNo, pay_type: { type: "enum", values: PAY_TYPES } },
			handler(this: OrderThis, ctx: UserCtx<{ order_no: string; pay_type: number }>) {
				return this.payOrder(ctx.meta.user.id, ctx.params.order_no, ctx.params.pay_type);
			}
		},

		cancel: {
			auth: "user",
			params: { order_no: orderNo },
			async handler(this: OrderThis, ctx: UserCtx<{ order_no: string }>) {
				const { order } = await this.closeOrder(ctx.params.order_no, { userId: ctx.meta.user.id, reason: "cancel" });
				return this.toOrder(order!);
			}
		},

		/** Operators: close every expired unpaid order now (the periodic sweep, on demand). */
		sweep: {
			visibility: "public",
			async handler(this: OrderThis) {
				return { closed: await this.sweepExpired(1000) };
			}
		},

		/** Operators: what is in a dead-letter queue ("seckill" or "close"). */
		deadLetters: {
			visibility: "public",
			params: {
				queue: { type: "enum", values: ["seckill", "close"] },
				limit: { type: "number", integer: true, min: 1, max: 10000, default: 100, convert: true }
			},
			handler(this: OrderThis, ctx: Context<{ queue: DlqName; limit: number }>) {
				return this.deadLetters(ctx.params.queue, ctx.params.limit, false);
			}
		},

		/** Operators: send dead letters back to their work queue, once the cause is fixed. */
		replayDeadLetters: {
			visibility: "public",
			params: {
				queue: { type: "enum", values: ["seckill", "close"] },
				limit: { type: "number", integer: true, min: 1, max: 10000, default: 100, convert: true }
			},
			handler(this: OrderThis, ctx: Context<{ queue: DlqName; limit: number }>) {
				return this.deadLetters(ctx.params.queue, ctx.params.limit, true);
			}
		}
	},

	events: {
		// The node is draining: take no new message; those in hand finish before stop.
		async "$gomall.draining"(this: OrderThis) {
			await Promise.all(this.consumers.map(c => c.stop()));
		},
		"$config.changed": {
			async handler(this: OrderThis) {
				// A new pay timeout gets its own fixed-TTL delay queue; the old one drains by itself.
				const ch = this.publisher.current;
				if (ch) this.delayQueue = await assertDelayQueue(ch, getConfig().namespace, this.payTimeoutMs());
			}
		}
	},

	methods: {
		db() {
			return this.adapter.db;
		},

		payTimeoutMs() {
			return Math.round(getConfig().order.pay_timeout * 1000);
		},

		toOrder(row: OrderRow): Order {
			return {
				id: Number(row.id),
				order_no: row.order_no,
				user_id: Number(row.user_id),
				product_id: Number(row.product_id),
				product_name: row.product_name,
				product_image: row.product_image,
				quantity: row.quantity,
				total_price: Number(row.total_price),
				status: row.status,
				pay_type: row.pay_type,
				created_at: row.created_at,
				updated_at: row.updated_at
			};
		},

		/**
		 * All lines become orders in one transaction, or none does. Stock moves by a guarded
		 * `UPDATE … WHERE stock >= n` whose affected-row count is the verdict: no read-modify-
		 * write, no interleaving can oversell (failure mode 2). Products are locked in id order
		 * so two checkouts cannot deadlock on each other's lines.
		 */
		async placeOrders(
			this: OrderThis,
			ctx: Context,
			userId: number,
			lines: Line[],
			kind: keyof typeof FAILURES,
			cartLineIds?: number[]
		) {
			const codes = FAILURES[kind];
			const sorted = [...lines].sort((a, b) => a.product_id - b.product_id);
			const timeoutUs = this.payTimeoutMs() * 1000;
			const db = this.db();
			const orderNos = await inTransaction(db, async transaction => {
				const products = (await db.query("SELECT id, name, price, image_url, status FROM products WHERE id IN (:ids)", {
					replacements: { ids: sorted.map(l => l.product_id) },
					type: QueryTypes.SELECT,
					transaction
				})) as { id: number; name: string; price: string; image_url: string; status: number }[];
				const byId = new Map(products.map(p => [Number(p.id), p]));
				const made: string[] = [];
				for (const line of sorted) {
					const p = byId.get(line.product_id);
					if (!p) throw bizError("PRODUCT_NOT_FOUND", { product_id: line.product_id });
					if (p.status !== PRODUCT_ON_SHELF) throw bizError(codes.offShelf, { product_id: line.product_id });
					const [, affected] = (await db.query(
						"UPDATE products SET stock = stock - :n WHERE id = :id AND stock >= :n",
						{
							replacements: { n: line.quantity, id: line.product_id },
							type: QueryTypes.UPDATE,
							transaction
						}
					)) as unknown as [unknown, number];
					if (affected !== 1) {
						const [{ stock }] = (await db.query("SELECT stock FROM products WHERE id = ?", {
							replacements: [line.product_id],
							type: QueryTypes.SELECT,
							transaction
						})) as { stock: number }[];
						throw bizError(stock === 0 ? codes.soldOut : codes.short, { product_id: line.product_id, stock });
					}
					const no = this.orderNos.next();
					await db.query(
						`INSERT INTO orders (order_no, user_id, product_id, product_name, product_image, quantity, unit_price, total_price, status, expires_at)
						 VALUES (:no, :user, :product, :name, :image, :qty, :unit, :total, :status, NOW(3) + INTERVAL :us MICROSECOND)`,
						{
							replacements: {
								no,
								user: userId,
								product: p.id,
								name: p.name,
								image: p.image_url,
								qty: line.quantity,
								unit: p.price,
								total: centsToDecimal(toCents(p.price) * line.quantity),
								status: OrderStatus.PENDING_PAYMENT,
								us: timeoutUs
							},
							transaction
						}
					);
					made.push(no);
				}
				if (cartLineIds?.length) {
					await db.query("DELETE FROM cart_items WHERE user_id = :user AND id IN (:ids)", {
						replacements: { user: userId, ids: cartLineIds },
						transaction
					});
				}
				return made;
			});

			const rows = (await db.query("SELECT * FROM orders WHERE order_no IN (:nos) ORDER BY id", {
				replacements: { nos: orderNos },
				type: QueryTypes.SELECT
			})) as OrderRow[];
			const orders = rows.map(r => this.toOrder(r));
			await this.scheduleClose(orderNos);
			this.broker.metrics.increment(
				"gomall_orders_created_total",
				{ kind: kind === "create" ? "order" : "checkout" },
				orders.length
			);
			for (const o of orders) {
				ctx.emit("order.created", {
					order_no: o.order_no,
					user_id: o.user_id,
					product_id: o.product_id,
					quantity: o.quantity,
					total_price: o.total_price
				});
				ctx.emit("product.stock.changed", { product_id: o.product_id });
			}
			return orders;
		},

		/** The row, locked until the transaction ends, with whether its payment window has passed. */
		async lockOrder(this: OrderThis, no: string, transaction: Transaction) {
			const [row] = (await this.db().query(
				"SELECT *, expires_at <= NOW(3) AS expired FROM orders WHERE order_no = ? FOR UPDATE",
				{
					replacements: [no],
					type: QueryTypes.SELECT,
					transaction
				}
			)) as (OrderRow & { expired: number })[];
			return row;
		},

		/** Pending → paid, under the row lock: a racing close sees `paid`, or pay sees `closed`. */
		async payOrder(this: OrderThis, userId: number, no: string, payType: number) {
			const row = await inTransaction(this.db(), async t => {
				const order = await this.lockOrder(no, t);
				if (!order || Number(order.user_id) !== userId) throw bizError("ORDER_NOT_FOUND");
				if (order.status === OrderStatus.CLOSED) throw bizError("ORDER_CLOSED");
				if (
					order.status === OrderStatus.PAID ||
					order.status === OrderStatus.SHIPPED ||
					order.status === OrderStatus.COMPLETED
				)
					throw bizError("ORDER_ALREADY_PAID");
				if (order.status !== OrderStatus.PENDING_PAYMENT) throw bizError("ORDER_WRONG_STATUS");
				// Past the deadline the order is as good as closed, even if the closer has not run yet.
				if (order.expired) throw bizError("ORDER_CLOSED");
				await this.db().query("UPDATE orders SET status = ?, pay_type = ?, paid_at = NOW(3) WHERE id = ?", {
					replacements: [OrderStatus.PAID, payType, order.id],
					transaction: t
				});
				return { ...order, status: OrderStatus.PAID, pay_type: payType };
			});
			this.broker.emit("order.paid", { order_no: no, user_id: userId, product_id: Number(row.product_id) });
			return this.toOrder(row);
		},

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
				const [activity] = (await this.db().query("SELECT arming_id FROM seckill_activities WHERE id = ?", {
					replacements: [order.activity_id],
					type: QueryTypes.SELECT,
					transaction: t
				})) as { arming_id: string }[];
				return { closed: true, order: closed, arming: activity?.arming_id };
			});
			if (result.closed && result.order) {
				const o = result.order;
				if (o.activity_id) {
					// Redis gets the unit and the buyer's slot back; the release is idempotent, and
					// if this call is lost, reconciliation finds the closed order and releases it.
					await this.broker.call("stock.release", { arming_id: result.arming, order_no: o.order_no }).catch(err => {
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
			for (const { order_no } of rows) if ((await this.closeOrder(order_no, { reason: "timeout" })).closed) closed++;
			if (closed) this.logger.info(`sweep closed ${closed} expired unpaid order(s)`);
			return closed;
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
					order_nos: [m.order_no]
				})) as ClaimResult[];
				if (claim === "unknown_arming")
					throw new PermanentMessageError(`unknown arming ${m.arming_id}: Redis holds no flash sale of it`);
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
			await this.broker.call("stock.markOrdered", { arming_id: m.arming_id, order_nos: [m.order_no] });
		},

		/**
		 * The drain's fast path: the messages in hand, grouped by arming, each group written in
		 * one transaction (one multi-row INSERT, one guarded UPDATE of the activity's stock by
		 * the group's size), so the hot activity row is locked once per batch rather than once
		 * per order. Anything unusual (a malformed message, an unknown arming, a unique-key
		 * conflict, a refused stock update) leaves its group to createSeckillOrder, one message
		 * at a time, which knows every case. Answers, per message, whether it is done.
		 */
		async createSeckillOrders(this: OrderThis, bodies: unknown[]) {
			const done = bodies.map(() => false);
			const groups = new Map<string, { m: SeckillOrderMessage; i: number }[]>();
			bodies.forEach((m, i) => {
				if (!isSeckillOrderMessage(m)) return;
				const key = `${m.activity_id}:${m.arming_id}`;
				if (!groups.has(key)) groups.set(key, []);
				groups.get(key)!.push({ m, i });
			});
			await Promise.all(
				[...groups.values()].map(async group => {
					try {
						await this.writeSeckillGroup(group.map(g => g.m));
						for (const g of group) done[g.i] = true;
					} catch (err) {
						this.logger.debug(`seckill batch of ${group.length} left to single writes: ${(err as Error).message}`);
					}
				})
			);
			return done;
		},

		/** One arming's messages in one transaction; throws (and writes nothing) unless all is ordinary. */
		async writeSeckillGroup(this: OrderThis, messages: SeckillOrderMessage[]) {
			const db = this.db();
			const { activity_id, arming_id } = messages[0];
			// A redelivered copy may sit in the same batch as its original.
			const unique = [...new Map(messages.map(m => [m.order_no, m])).values()];
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
					order_nos: fresh.map(m => m.order_no)
				})) as ClaimResult[];
				if (claims.includes("unknown_arming")) throw new Error(`unknown arming ${arming_id}`);
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
			if (ordered.length) await this.broker.call("stock.markOrdered", { arming_id, order_nos: ordered });
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
		},

		/**
		 * Lists (replay false) or re-publishes (replay true) what sits in a dead-letter queue.
		 * Listing takes the messages and hands them back unacknowledged, so nothing is lost.
		 */
		async deadLetters(this: OrderThis, queue: DlqName, limit: number, replay: boolean) {
			const conn = this.amqp.connection;
			if (!conn) throw bizError("UNAVAILABLE");
			const n = names(getConfig().namespace);
			const dlq = queue === "seckill" ? n.seckillDlq : n.closeDlq;
			const routingKey = queue === "seckill" ? SECKILL_ROUTING_KEY : CLOSE_ROUTING_KEY;
			const ch = await conn.createConfirmChannel();
			ch.on("error", () => undefined);
			const messages: unknown[] = [];
			let replayed = 0;
			try {
				// Only what is there now: a replayed message that fails again comes back behind
				// these and must not be taken a second time in the same call.
				const { messageCount } = await ch.checkQueue(dlq);
				for (let i = 0; i < Math.min(limit, messageCount); i++) {
					const msg = await ch.get(dlq, { noAck: false });
					if (!msg) break;
					let body: unknown = msg.content.toString();
					try {
						body = JSON.parse(String(body));
					} catch {
						// shown as text
					}
					const death = (msg.properties.headers?.["x-death"] as any[] | undefined)?.[0];
					const headers = msg.properties.headers ?? {};
					messages.push({
						message_id: msg.properties.messageId ?? null,
						body,
						reason: headers[REASON_HEADER] ?? death?.reason ?? null,
						attempts: headers[ATTEMPTS_HEADER] ?? null,
						from_queue: death?.queue ?? null
					});
					if (replay) {
						ch.publish(n.orderExchange, routingKey, msg.content, {
							persistent: true,
							mandatory: true,
							messageId: msg.properties.messageId,
							contentType: "application/json"
						});
						await ch.waitForConfirms();
						ch.ack(msg);
						replayed++;
					}
				}
			} finally {
				// Closing returns every message we took and did not ack to the DLQ.
				await ch.close().catch(() => undefined);
			}
			return { queue: dlq, messages, replayed };
		}
	},

	created(this: OrderThis) {
		const c = getConfig();
		const n = names(c.namespace);
		const policy = deliveryPolicy(c);
		this.sweepTimer = null;
		this.consumers = [];
		this.delayQueue = n.payTimeoutQueue(this.payTimeoutMs());
		this.publisher = new ConfirmPublisher(this.amqp, async ch => {
			this.delayQueue = await assertCloseTopology(ch, c.namespace, this.payTimeoutMs(), policy);
			await assertSeckillTopology(ch, c.namespace, policy);
		});
		const m = this.broker.metrics;
		const outcomes: MessageOutcome[] = ["acked", "retried", "dead_lettered"];
		counter(
			m,
			"gomall_orders_created_total",
			"Orders written, by kind (order, checkout, seckill)",
			labelSets({ kind: ["order", "checkout", "seckill"] })
		);
		counter(
			m,
			"gomall_queue_messages_total",
			"Consumed queue messages by outcome (acked, retried, dead_lettered)",
			labelSets({ queue: ["seckill", "close"], outcome: outcomes })
		);
		const consumer = (
			queue: "seckill" | "close",
			name: string,
			routingKey: string,
			handle: (body: any) => Promise<void>,
			batch?: ConsumerOptions["batch"]
		) => {
			const onOutcome = (outcome: MessageOutcome) => m.increment("gomall_queue_messages_total", { queue, outcome });
			this.consumers.push(
				new QueueConsumer(
					this.amqp,
					name,
					{ prefetch: c.amqp.prefetch, ...parking(c.namespace, name, routingKey, policy), onOutcome, batch },
					handle,
					this.logger
				)
			);
		};
		consumer(
			"seckill",
			n.seckillQueue,
			SECKILL_ROUTING_KEY,
			async body => {
				if (!isSeckillOrderMessage(body)) throw new PermanentMessageError("malformed flash-sale order message");
				await this.createSeckillOrder(body);
			},
			c.seckill.batch_size > 1
				? { maxSize: c.seckill.batch_size, handler: bodies => this.createSeckillOrders(bodies) }
				: undefined
		);
		consumer("close", n.closeQueue, CLOSE_ROUTING_KEY, async body => {
			if (typeof body?.order_no !== "string") throw new PermanentMessageError("close message without order_no");
			await this.closeOrder(body.order_no, { reason: "timeout" });
		});
	},

	async started(this: OrderThis) {
		this.orderNos = new OrderNoGenerator(await acquireWorkerId(this.redis));
		await this.amqp.start();
		const interval = getConfig().order.sweep_interval;
		if (interval > 0) {
			this.sweepTimer = setInterval(() => {
				this.sweepExpired().catch(err => this.logger.warn(`sweep failed: ${err.message}`));
			}, interval * 1000);
		}
	},

	async stopped(this: OrderThis) {
		// Runs before the mixins close RabbitMQ, Redis and MySQL: messages in hand finish first.
		if (this.sweepTimer) clearInterval(this.sweepTimer);
		await Promise.all(this.consumers.map(c => c.stop()));
	}
};

export default OrderService;
