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
import { reservationActivity } from "../lib/domain/reservation-activity";
import { pageParams } from "../lib/contract/paging";
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
import { AmqpMixin } from "../mixins/amqp.mixin";
import { DbMixin } from "../mixins/db.mixin";
import { RedisMixin } from "../mixins/redis.mixin";
import { IdempotencyKeys } from "../lib/storage/idempotency";
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
import { NOTIFY_VERDICTS } from "../lib/domain/payment";
import { paymentProvider } from "./order/providers";

/** How often this node deletes expired Idempotency-Keys (they are ignored anyway once expired). */
const IDEMPOTENCY_PURGE_INTERVAL_MS = 10 * 60 * 1000;
/** The drain's held messages go once this process has reserved nothing for this long (ms). */
const RESERVATIONS_QUIET_MS = 10;

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
			// Accepts an Idempotency-Key (ctx.meta.idempotency_key, copied by the gateway; checked and
			// applied in order/writing.ts placeOnce); the OpenAPI document lists the header.
			idempotent: true,
			retryPolicy: { enabled: false },
			params: {
				$$strict: "remove",
				product_id: { type: "number", integer: true, positive: true, convert: true },
				quantity
			},
			handler(this: OrderThis, ctx: UserCtx<Line>) {
				return this.createOrder(ctx);
			}
		},

		checkout: {
			auth: "user",
			idempotent: true,
			retryPolicy: { enabled: false },
			// Takes no parameter: whatever a body holds is dropped, so an Idempotency-Key's request is the key alone.
			params: { $$strict: "remove" },
			handler(this: OrderThis, ctx: UserCtx) {
				return this.checkoutCart(ctx);
			}
		},

		list: {
			auth: "user",
			params: {
				$$strict: "remove",
				...pageParams,
				status: { type: "number", integer: true, min: 0, max: 6, convert: true, optional: true }
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
			// pay.provider direct: the order, paid. wechat (pay_type 2): {order_no, code_url, expires_at},
			// the order pending until the provider's notify (or the query before its close).
			codes: [
				"ORDER_NOT_FOUND",
				"ORDER_WRONG_STATUS",
				"ORDER_CLOSED",
				"ORDER_ALREADY_PAID",
				"ORDER_PAY_TYPE_UNAVAILABLE",
				"PAYMENT_PROVIDER_REFUSED",
				"PAYMENT_PROVIDER_UNAVAILABLE"
			],
			params: { $$strict: "remove", order_no: orderNo, pay_type: { type: "enum", values: PAY_TYPES } },
			handler(this: OrderThis, ctx: UserCtx<{ order_no: string; pay_type: number }>) {
				return this.payOrder(ctx.meta.user.id, ctx.params.order_no, ctx.params.pay_type);
			}
		},

		/** Paid, not shipped: refunded (6), the stock back once, the money back through the provider. */
		refund: {
			auth: "user",
			// Safe to repeat (the second answers the same refund), but a retry is still not needed.
			retryPolicy: NEVER_RAN_ONLY,
			codes: ["ORDER_NOT_FOUND", "ORDER_NOT_REFUNDABLE"],
			params: { order_no: orderNo },
			handler(this: OrderThis, ctx: UserCtx<{ order_no: string }>) {
				return this.refundOrder(ctx.meta.user.id, ctx.params.order_no);
			}
		},

		/**
		 * The provider's notify, from the gateway's raw-body route (services/api/payments.ts): the
		 * signed headers and the body's exact bytes, base64. Applied once per transaction id.
		 */
		paymentNotify: {
			visibility: "public",
			retryPolicy: { enabled: false },
			params: {
				headers: { type: "record", key: { type: "string", max: 64 }, value: { type: "string", max: 1024 } },
				body: { type: "string", max: 200000 }
			},
			handler(this: OrderThis, ctx: Context<{ headers: Record<string, string>; body: string }>) {
				return this.paymentNotify(ctx.params.headers, ctx.params.body);
			}
		},

		/** Operators: send the refunds the provider has not accepted yet again (the sweep does it too). */
		resendRefunds: {
			visibility: "public",
			async handler(this: OrderThis) {
				return { sent: await this.resendRefunds(1000) };
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
		this.purgeTimer = null;
		this.idempotencyKeys = new IdempotencyKeys(() => this.db());
		// Reads the provider's keys now: a mall misconfigured for WeChat Pay does not start.
		this.payProvider = paymentProvider(c.pay);
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
		counter(
			m,
			"gomall_payments_total",
			"Payment events by provider and outcome (prepay, paid, paid_by_query, paid_after_close, closed, error)",
			labelSets({
				provider: ["direct", "wechat"],
				outcome: ["prepay", "paid", "paid_by_query", "paid_after_close", "closed", "error"]
			})
		);
		counter(
			m,
			"gomall_payment_notifies_total",
			"Provider notifies by verdict (applied, duplicate, ignored: nothing to change, refused: bad, answered 4xx)",
			labelSets({ provider: ["wechat"], verdict: NOTIFY_VERDICTS })
		);
		counter(
			m,
			"gomall_refunds_total",
			"Refunds by provider and outcome (requested, succeeded, failed, error: the provider did not accept it yet)",
			labelSets({ provider: ["direct", "wechat"], outcome: ["requested", "succeeded", "failed", "error"] })
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
						? {
								maxSize: c.seckill.batch_size,
								groupBy: body => this.seckillBatchKey(body),
								handler: bodies => this.createSeckillOrders(bodies as SeckillOrderMessage[]),
								// A stock actor reserving in this process: the sale's opening first (README
								// "The drain gives way to the sale").
								holdWhile: () => reservationActivity.busy(RESERVATIONS_QUIET_MS),
								maxHoldMs: c.seckill.batch_hold_ms
							}
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
				this.resendRefunds().catch(err => this.logger.warn(`refund resend failed: ${err.message}`));
			}, interval * 1000);
		}
		this.purgeTimer = setInterval(() => {
			this.purgeIdempotencyKeys().catch(err => this.logger.warn(`idempotency key purge failed: ${err.message}`));
		}, IDEMPOTENCY_PURGE_INTERVAL_MS);
		this.purgeTimer.unref();
	},

	async stopped(this: OrderThis) {
		// Runs before the mixins close RabbitMQ, Redis and MySQL: messages in hand finish first.
		if (this.sweepTimer) clearInterval(this.sweepTimer);
		if (this.purgeTimer) clearInterval(this.purgeTimer);
		await Promise.all(this.consumers.map(c => c.stop()));
		await this.orderNos?.stop();
	}
};

export default OrderService;
