import type { Context, ServiceSchema, ServiceSettingSchema } from "moleculer";
import { DataTypes } from "sequelize";
import { getConfig } from "../config";
import { ConfirmPublisher } from "../lib/messaging/amqp";
import { AuthUser } from "../lib/auth/jwt";
import { bizError } from "../lib/contract/errors";
import { counter, labelSets } from "../lib/observability/metrics";
import { LeasedOrderNos } from "../lib/domain/order-no";
import { NEVER_RAN_ONLY } from "../lib/messaging/retry";
import { msLeft } from "../lib/messaging/deadline";
import {
	ARMING_ID,
	BatchedReserver,
	PRODUCT_ID_PARAM,
	ReplicatedReserver,
	SECKILL_PARAMS
} from "../lib/domain/seckill";
import { ReplicatedBuckets } from "../lib/domain/seckill-buckets";
import { QueuedItem, SECKILL_QUEUED_EVENT, TurnBatch } from "../lib/domain/seckill-results";
import { captchaKey, saleTokenKey } from "../lib/domain/sale-token";
import { SaleFlagEvent, SOLD_OUT_RECHECK_MAX, SoldOutFlags } from "../lib/domain/sold-out-flags";
import { assertSeckillTopology, deliveryPolicy } from "../lib/messaging/topology";
import { AmqpMixin } from "../mixins/amqp.mixin";
import { DbMixin } from "../mixins/db.mixin";
import { RedisMixin } from "../mixins/redis.mixin";
import { ClaimResult } from "../lib/domain/order";
import { armingMethods } from "./stock/arming";
import { bucketMethods } from "./stock/buckets";
import { listingMethods } from "./stock/listing";
import { reconciliationMethods } from "./stock/reconciliation";
import { reservationMethods, RESULT_BY_CODE } from "./stock/reservation";
import { tokenMethods } from "./stock/tokens";
import type { InitParams, PublishedMark, StockThis } from "./stock/types";

const productId = PRODUCT_ID_PARAM;
const armingId = { type: "string", pattern: ARMING_ID };
/** A stock bucket (lib/domain/seckill-buckets.ts); absent: 0, the only one of an unbucketed sale. */
const bucketParam = { type: "number", integer: true, min: 0, max: 255, optional: true };
const reservationRef = { arming_id: armingId, order_no: "string", bucket: bucketParam };
/** Several reservations of one arming: the order actor writes its orders in batches. */
const reservationsRef = {
	arming_id: armingId,
	order_nos: { type: "array", items: "string", min: 1, max: 1000 },
	/** each order_no's bucket, in the same order (absent: all 0) */
	buckets: { type: "array", items: { type: "number", integer: true, min: 0, max: 255 }, max: 1000, optional: true }
};
type ReservationsParams = { arming_id: string; order_nos: string[]; buckets?: number[] };
type ReservationParams = { arming_id: string; order_no: string; bucket?: number };

/** What a claim found: the consumer writes the order only for "claimed". */
const CLAIM_RESULTS: Record<number, ClaimResult> = { 1: "claimed", 0: "released", [-1]: "unknown_arming" };

/** Moleculer's `merged` hook (its docs' lifecycle events; its typings leave it out). */
type MergedHook = { merged(schema: ServiceSchema): void };

/**
 * The stock actor: flash-sale activities, their stock in Redis, the Lua decision, the
 * confirmed RabbitMQ handoff to the order actor, releases and reconciliation. The methods
 * live in services/stock/ by concern: arming, reservation (the hot path, claim and release),
 * listing (what buyers read) and reconciliation (with the operators' status report).
 */
const StockService: ServiceSchema<ServiceSettingSchema, Record<string, any>, Record<string, any>, StockThis> &
	MergedHook = {
	name: "stock",
	mixins: [
		DbMixin({
			name: "seckill_activity",
			define: {
				id: { type: DataTypes.BIGINT.UNSIGNED, primaryKey: true, autoIncrement: true },
				arming_id: DataTypes.CHAR(32),
				product_id: DataTypes.BIGINT.UNSIGNED,
				seckill_price: DataTypes.DECIMAL(12, 2),
				total_stock: DataTypes.INTEGER,
				stock: DataTypes.INTEGER,
				limit_per_user: DataTypes.INTEGER,
				start_time: DataTypes.DATE(3),
				end_time: DataTypes.DATE(3),
				status: DataTypes.TINYINT
			},
			options: { tableName: "seckill_activities", timestamps: false }
		}),
		RedisMixin("gomall-stock", {
			seckillReserve: { file: "seckill_reserve.lua", numberOfKeys: 6 },
			seckillRelease: { file: "seckill_release.lua", numberOfKeys: 4 },
			seckillMark: { file: "seckill_mark.lua", numberOfKeys: 2 },
			seckillRestore: { file: "seckill_restore.lua", numberOfKeys: 5 },
			seckillFailed: { file: "seckill_failed.lua", numberOfKeys: 2 },
			seckillLend: { file: "seckill_lend.lua", numberOfKeys: 2 },
			seckillBorrow: { file: "seckill_borrow.lua", numberOfKeys: 6 }
		}),
		AmqpMixin("gomall-stock")
	],

	actions: {
		init: {
			auth: "admin",
			retryPolicy: { enabled: false },
			params: {
				$$strict: "remove",
				product_id: productId,
				stock: { type: "number", integer: true, min: 1, max: 10_000_000, convert: true },
				seckill_price: { type: "number", min: 0, max: 9999999999.99, convert: true, optional: true },
				start_time: { type: "date", convert: true, optional: true },
				end_time: { type: "date", convert: true, optional: true },
				limit_per_user: { type: "number", integer: true, min: 1, max: 1000, convert: true, optional: true },
				// Stock buckets: at most 4 per Redis master (checked when armed, lib/domain/seckill-buckets.ts).
				buckets: { type: "number", integer: true, min: 1, max: 64, convert: true, optional: true },
				// Sale tokens (README "Sale tokens"); captcha implies require_token.
				require_token: { type: "boolean", convert: true, optional: true },
				captcha: { type: "boolean", convert: true, optional: true }
			},
			handler(this: StockThis, ctx: Context<InitParams>) {
				return this.armActivity(ctx, ctx.params);
			}
		},

		/** The hot path. Rejections are returned, not thrown (no stack trace per request). */
		seckill: {
			auth: "user",
			// Not idempotent (a replay can reserve a second unit): retried, when retries are on,
			// only after errors proving it never ran (lib/messaging/retry.ts, retryable()).
			retryPolicy: NEVER_RAN_ONLY,
			codes: [
				"SECKILL_NOT_STARTED",
				"SECKILL_ENDED",
				"SECKILL_SOLD_OUT",
				"SECKILL_LIMIT_REACHED",
				"SECKILL_ORDER_FAILED",
				"SECKILL_NO_ACTIVITY",
				"SECKILL_TOKEN_INVALID",
				"SECKILL_TOKEN_USED"
			],
			params: SECKILL_PARAMS,
			handler(this: StockThis, ctx: Context<{ product_id: number; sale_token?: string }, { user: AuthUser }>) {
				return this.reserveWithin(msLeft(ctx), ctx.params.product_id, ctx.meta.user.id, ctx.params.sale_token);
			}
		},

		/** GET /api/seckill/token: a sale token, from the sale's start (README "Sale tokens"). */
		saleToken: {
			auth: "user",
			codes: ["SECKILL_NO_ACTIVITY", "SECKILL_NOT_STARTED", "SECKILL_ENDED", "SECKILL_CAPTCHA_WRONG"],
			params: {
				product_id: productId,
				// Required when the activity has a captcha (GET /api/seckill/captcha).
				captcha_id: { type: "string", min: 1, max: 64, optional: true },
				captcha_answer: { type: "string", min: 1, max: 16, optional: true }
			},
			handler(
				this: StockThis,
				ctx: Context<{ product_id: number; captcha_id?: string; captcha_answer?: string }, { user: AuthUser }>
			) {
				const { product_id, captcha_id, captcha_answer } = ctx.params;
				return this.saleToken(product_id, ctx.meta.user.id, captcha_id, captcha_answer);
			}
		},

		/** GET /api/seckill/captcha: an arithmetic image captcha (SVG), answered when fetching a token. */
		captcha: {
			auth: "user",
			codes: ["SECKILL_NO_ACTIVITY", "SECKILL_NOT_STARTED", "SECKILL_ENDED"],
			params: { product_id: productId },
			handler(this: StockThis, ctx: Context<{ product_id: number }, { user: AuthUser }>) {
				return this.saleCaptcha(ctx.params.product_id, ctx.meta.user.id);
			}
		},

		result: {
			auth: "user",
			params: { product_id: productId },
			handler(this: StockThis, ctx: Context<{ product_id: number }, { user: AuthUser }>) {
				return this.seckillResult(ctx.params.product_id, ctx.meta.user.id);
			}
		},

		list: {
			handler(this: StockThis) {
				return this.listActivities();
			}
		},

		/** Internal (gateways' result streams): many buyers' results of one product, in one read. */
		resultStates: {
			visibility: "public",
			params: {
				product_id: productId,
				user_ids: { type: "array", items: { type: "number", integer: true, positive: true }, min: 1, max: 10000 }
			},
			handler(this: StockThis, ctx: Context<{ product_id: number; user_ids: number[] }>) {
				return this.seckillResults(ctx.params.product_id, ctx.params.user_ids);
			}
		},

		/** Internal (order actor): R -> C before the orders are written; one result per order_no. */
		claim: {
			visibility: "public",
			params: reservationsRef,
			async handler(this: StockThis, ctx: Context<ReservationsParams>): Promise<ClaimResult[]> {
				const { arming_id, order_nos, buckets } = ctx.params;
				return (await this.markMany(arming_id, order_nos, "C", buckets)).map(r => CLAIM_RESULTS[r]);
			}
		},

		/** Internal (order actor): the orders are committed. */
		markOrdered: {
			visibility: "public",
			params: reservationsRef,
			async handler(this: StockThis, ctx: Context<ReservationsParams>) {
				const { arming_id, order_nos, buckets } = ctx.params;
				return (await this.markMany(arming_id, order_nos, "O", buckets)).filter(r => r === 1).length;
			}
		},

		/** Internal (order actor): a flash-sale order was closed; give its unit and slot back. */
		release: {
			visibility: "public",
			params: reservationRef,
			async handler(this: StockThis, ctx: Context<ReservationParams>) {
				return (await this.release(ctx.params.arming_id, ctx.params.order_no, "any", ctx.params.bucket)) === 1;
			}
		},

		/** Operators (gomall-status): one row per activity, read only, nothing repaired. */
		status: {
			visibility: "public",
			params: { product_id: { type: "number", integer: true, positive: true, optional: true, convert: true } },
			handler(this: StockThis, ctx: Context<{ product_id?: number }>) {
				return this.activityStatus(ctx.params.product_id);
			}
		},

		/**
		 * Operators (gomall-nodes, gomall-seckill), called on each stock node by nodeID: what
		 * this node's stock actor alone has answered and which products it believes sold out
		 * (api.node gives a gateway's own answers). Only the gateway node serves /metrics, so
		 * this is how the counts of the others are read.
		 */
		node: {
			visibility: "public",
			handler(this: StockThis) {
				return {
					node_id: this.broker.nodeID,
					sold_out: [...this.soldOut].sort((a, b) => a - b),
					seckill: { ...this.served }
				};
			}
		},

		/**
		 * Internal (the gateways, every 2 s while they hold a flag): which of these products are
		 * still sold out. A gateway answers "sold out" from its own flag (services/api/lane.ts)
		 * and drops a flag this no longer lists, as a stock node drops its own (recheckSoldOut),
		 * so a lost "seckill.available" broadcast cannot leave units unsold behind a gateway.
		 */
		soldOut: {
			visibility: "public",
			params: { product_ids: { type: "array", items: PRODUCT_ID_PARAM, max: SOLD_OUT_RECHECK_MAX } },
			handler(this: StockThis, ctx: Context<{ product_ids: number[] }>) {
				return this.stillSoldOut(ctx.params.product_ids);
			}
		},

		/**
		 * Operators (and, directly, the periodic timer): repair what a crash left half-done. Never
		 * retried: a run outlasting the request timeout is still running, and a retry would be a
		 * second run behind it (the lease refuses it anyway).
		 */
		reconcile: {
			visibility: "public",
			retryPolicy: { enabled: false },
			params: { activity_id: { type: "number", integer: true, positive: true, optional: true } },
			handler(this: StockThis, ctx: Context<{ activity_id?: number }>) {
				return this.reconcileAll(ctx.params.activity_id);
			}
		},

		/** Internal (order actor): the reservation's message is going to the dead-letter queue. */
		markFailed: {
			visibility: "public",
			params: { ...reservationRef, reason: { type: "string", max: 1000 } },
			async handler(this: StockThis, ctx: Context<ReservationParams & { reason: string }>) {
				const { arming_id, order_no, reason, bucket } = ctx.params;
				return { failed: (await this.failedTransition(arming_id, order_no, "fail", reason, bucket)) === 1 };
			}
		},

		/** Operators (order.replayDeadLetters): a failed reservation goes back to the queue, once. */
		replayFailed: {
			visibility: "public",
			params: reservationRef,
			async handler(this: StockThis, ctx: Context<ReservationParams>) {
				const { arming_id, order_no, bucket } = ctx.params;
				return (await this.failedTransition(arming_id, order_no, "replay", "", bucket)) === 1;
			}
		},

		/** Operators: a failed reservation's unit and its buyer's slot are given back, once. */
		releaseFailed: {
			visibility: "public",
			params: reservationRef,
			async handler(this: StockThis, ctx: Context<ReservationParams>) {
				const { arming_id, order_no } = ctx.params;
				// An operator may name only the order_no: its bucket is found (a rare, operator's call).
				const b = ctx.params.bucket ?? (await this.locateBucket(arming_id, order_no));
				if ((await this.release(arming_id, order_no, "failed", b)) !== 1) throw bizError("SECKILL_NOT_FAILED");
				return { released: true };
			}
		},

		/** Operators (gomall-failed): the activity's failed reservations with their reasons. */
		failed: {
			visibility: "public",
			params: { activity_id: { type: "number", integer: true, positive: true, convert: true } },
			handler(this: StockThis, ctx: Context<{ activity_id: number }>) {
				return this.failedReservations(ctx.params.activity_id);
			}
		}
	},

	events: {
		"seckill.soldout"(this: StockThis, ctx: Context<SaleFlagEvent>) {
			this.soldOut.soldOut(ctx.params.product_id, ctx.params.arming_id);
		},
		"seckill.available"(this: StockThis, ctx: Context<{ product_id: number }>) {
			this.soldOut.available(ctx.params.product_id);
		},
		"seckill.armed"(this: StockThis, ctx: Context<SaleFlagEvent>) {
			const pid = ctx.params.product_id;
			this.soldOut.armed(pid, ctx.params.arming_id);
			this.forgetActivity(pid);
			// Read now, not when the opening's first requests ask: they would all wait for it.
			this.activityFor(pid).catch(err =>
				this.logger.debug(`seckill.armed: product ${pid}'s sale not read (${(err as Error).message})`)
			);
		}
	},

	methods: {
		...armingMethods,
		...reservationMethods,
		...listingMethods,
		...reconciliationMethods,
		...bucketMethods,
		...tokenMethods
	},

	/**
	 * stock.seckill's bulkhead is its own: the broker's (broker.bulkhead) suits actions that
	 * hold a database connection or the CPU, while a reservation mostly waits for a tick's
	 * script and its publisher's confirm. Under the broker's 100 a sale's opening queued behind
	 * itself: in the bench a win waited 19-21 ms (median) in the queue before its handler ran.
	 * Actions are wrapped before created() runs, so it is set on the merged schema.
	 */
	merged(schema: ServiceSchema) {
		schema.actions!.seckill = {
			...(schema.actions!.seckill as object),
			bulkhead: { concurrency: getConfig().seckill.concurrency }
		};
	},

	created(this: StockThis) {
		const c = getConfig();
		this.soldOut = new SoldOutFlags();
		this.metas = new Map();
		this.metaReads = new Map();
		this.bucketTagCache = new Map();
		// Derived once: the hot path's token check is then one HMAC (lib/domain/sale-token.ts).
		this.saleTokenKey = saleTokenKey(c.jwt.secret);
		this.captchaKey = captchaKey(c.jwt.secret);
		// One broadcast per loop turn of the wins it made, to every gateway's result streams.
		this.served = {};
		this.queuedBatch = new TurnBatch<QueuedItem>(items =>
			this.broker.broadcast(SECKILL_QUEUED_EVENT, { items }, { groups: ["api"] })
		);
		this.publishedMarks = new TurnBatch<PublishedMark>(marks => this.markPublished(marks));
		this.timers = [];
		this.publisher = new ConfirmPublisher(
			this.amqp,
			ch => assertSeckillTopology(ch, c.namespace, deliveryPolicy(c)),
			c.amqp.confirm_timeout_ms
		);
		const results = [
			"queued",
			"queued_unconfirmed",
			"handoff_failed",
			"unreplicated",
			"redis_error",
			// tokenRefusal (services/stock/tokens.ts); token_used is the script's (RESULT_BY_CODE)
			"token_missing",
			"token_malformed",
			"token_mac",
			"token_expired",
			...Object.values(RESULT_BY_CODE).map(([result]) => result)
		];
		counter(
			this.broker.metrics,
			"gomall_seckill_requests_total",
			"Flash-sale requests by result",
			labelSets({ result: results })
		);
		counter(this.broker.metrics, "gomall_seckill_success_total", "Flash-sale reservations handed to the order queue");
		counter(
			this.broker.metrics,
			"gomall_seckill_reconcile_runs_total",
			"Reconciliation runs on this node: ran (it held the cluster's lease) or busy (another node did)",
			labelSets({ result: ["ran", "busy"] })
		);
		counter(
			this.broker.metrics,
			"gomall_seckill_republished_total",
			"Reservations reconciliation published again: unconfirmed (no confirm was seen) or lost (confirmed, the queue empty)",
			labelSets({ reason: ["unconfirmed", "lost"] })
		);
	},

	async started(this: StockThis) {
		const { wait_replicas: replicas, wait_timeout_ms: timeout } = getConfig().redis;
		this.replicated = replicas > 0 ? new ReplicatedReserver(this.redis, replicas, timeout) : null;
		this.batchedReserver = new BatchedReserver(this.redis);
		this.replicatedBuckets = replicas > 0 ? new ReplicatedBuckets(this.redis, replicas, timeout) : null;
		this.orderNos = await LeasedOrderNos.start(this.redis);
		await this.amqp.start();
		this.timers.push(setInterval(() => this.recheckSoldOut().catch(() => undefined), 2000));
		const interval = getConfig().seckill.reconcile_interval;
		if (interval > 0) this.scheduleReconcile(interval * 1000);
	},

	async stopped(this: StockThis) {
		for (const t of this.timers) clearTimeout(t);
		this.timers.length = 0;
		await this.orderNos?.stop();
	}
};

export default StockService;
