import type { Context, ServiceSchema, ServiceSettingSchema } from "moleculer";
import { DataTypes } from "sequelize";
import { getConfig } from "../config";
import {
	ConfirmPublisher,
	ConsumerOptions,
	MessageOutcome,
	PermanentMessageError,
	QueueConsumer
} from "../lib/messaging/amqp";
import { counter, gauge, labelSets } from "../lib/observability/metrics";
import { LeasedOrderNos } from "../lib/domain/order-no";
import { pageParams } from "../lib/contract/paging";
import { isSeckillOrderMessage } from "../lib/domain/seckill";
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
import { AmqpMixin } from "../mixins/amqp.mixin";
import { DbMixin } from "../mixins/db.mixin";
import { RedisMixin } from "../mixins/redis.mixin";
import { PAY_TYPES } from "../lib/domain/order";
import { closingMethods } from "./order/closing";
import { commonMethods } from "./order/common";
import { deadLetterMethods } from "./order/dead-letters";
import { drainMethods } from "./order/drain";
import { paymentMethods } from "./order/payment";
import { readingMethods } from "./order/reading";
import type { DlqName, Line, OrderMethods, OrderThis, UserCtx } from "./order/types";
import { writingMethods } from "./order/writing";
import { NEVER_RAN_ONLY } from "../lib/messaging/retry";

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
			handler(this: OrderThis, ctx: UserCtx) {
				return this.checkoutCart(ctx);
			}
		},

		list: {
			auth: "user",
			params: {
				$$strict: "remove",
				...pageParams,
				status: { type: "number", integer: true, min: 0, max: 5, convert: true, optional: true }
			},
			handler(this: OrderThis, ctx: UserCtx<{ page: number; page_size: number; status?: number }>) {
				const { page, page_size, status } = ctx.params;
				return this.listOrders(ctx.meta.user.id, page, page_size, status);
			}
		},

		get: {
			auth: "user",
			params: { order_no: orderNo },
			handler(this: OrderThis, ctx: UserCtx<{ order_no: string }>) {
				return this.findOrder(ctx.meta.user, ctx.params.order_no);
			}
		},

		pay: {
			auth: "user",
			// A retry after a timeout would answer "already paid" for a pay that succeeded: only
			// errors proving it never ran are retried (lib/messaging/retry.ts).
			retryPolicy: NEVER_RAN_ONLY,
			params: { $$strict: "remove", order_no: orderNo, pay_type: { type: "enum", values: PAY_TYPES } },
			handler(this: OrderThis, ctx: UserCtx<{ order_no: string; pay_type: number }>) {
				return this.payOrder(ctx.meta.user.id, ctx.params.order_no, ctx.params.pay_type);
			}
		},

		cancel: {
			auth: "user",
			retryPolicy: NEVER_RAN_ONLY,
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

		/** Health: whether each of this node's queue consumers receives messages now. */
		consumers: {
			visibility: "public",
			handler(this: OrderThis) {
				return this.consumers.map(c => ({ queue: c.queue, consuming: c.consuming }));
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
		...commonMethods,
		...readingMethods,
		...writingMethods,
		...paymentMethods,
		...closingMethods,
		...drainMethods,
		...deadLetterMethods
	} satisfies OrderMethods,

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
		gauge(
			m,
			"gomall_amqp_consumers",
			"This node's queue consumers receiving messages now (1), or not (0: between a channel's close and its next subscription)",
			labelSets({ queue: ["seckill", "close"] })
		);
		const consumer = (
			queue: "seckill" | "close",
			name: string,
			routingKey: string,
			handle: (body: any) => Promise<void>,
			extra: Pick<ConsumerOptions, "batch" | "onDeadLetter"> = {}
		) => {
			const onOutcome = (outcome: MessageOutcome) => m.increment("gomall_queue_messages_total", { queue, outcome });
			const onConsuming = (consuming: boolean) => m.set("gomall_amqp_consumers", consuming ? 1 : 0, { queue });
			this.consumers.push(
				new QueueConsumer(
					this.amqp,
					name,
					{
						prefetch: c.amqp.prefetch,
						...parking(c.namespace, name, routingKey, policy),
						onOutcome,
						onConsuming,
						...extra
					},
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
			{
				batch:
					c.seckill.batch_size > 1
						? { maxSize: c.seckill.batch_size, handler: bodies => this.createSeckillOrders(bodies) }
						: undefined,
				// The buyer's poll stops saying "queued": the reservation is marked failed, its unit
				// kept until an operator replays or releases it.
				onDeadLetter: (body, reason) => this.seckillDeadLettered(body, reason)
			}
		);
		consumer("close", n.closeQueue, CLOSE_ROUTING_KEY, async body => {
			if (typeof body?.order_no !== "string") throw new PermanentMessageError("close message without order_no");
			await this.closeOrder(body.order_no, { reason: "timeout" });
		});
	},

	async started(this: OrderThis) {
		this.orderNos = await LeasedOrderNos.start(this.redis);
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
		await this.orderNos?.stop();
	}
};

export default OrderService;
