import type { Context, Service, ServiceSchema, ServiceSettingSchema } from "moleculer";
import { DataTypes, QueryTypes } from "sequelize";
import { getConfig } from "../config";
import { ConfirmPublisher } from "../lib/messaging/amqp";
import { CodeKey } from "../lib/contract/codes";
import { bizError, rejection, Rejection } from "../lib/contract/errors";
import { AuthUser } from "../lib/auth/jwt";
import { centsToDecimal, toCents } from "../lib/domain/money";
import { counter, labelSets } from "../lib/observability/metrics";
import { acquireWorkerId, OrderNoGenerator } from "../lib/domain/order-no";
import {
	activityKeys,
	ARMING_ID,
	newArmingId,
	parseReservation,
	productActivityKey,
	ReplicatedReserver,
	Reservation,
	ReserveRedis,
	SeckillOrderMessage,
	SeckillResult
} from "../lib/domain/seckill";
import { assertSeckillTopology, deliveryPolicy, names, SECKILL_ROUTING_KEY } from "../lib/messaging/topology";
import { AmqpMixin, AmqpThis } from "../mixins/amqp.mixin";
import { DbMixin, DbThis } from "../mixins/db.mixin";
import { RedisMixin } from "../mixins/redis.mixin";
import type { Product } from "../lib/domain/product";
import { ActivityStatus, ClaimResult, OrderStatus } from "../lib/domain/order";

/** What a node remembers about the activity armed for a product (cheap rejections). */
interface ActivityMeta {
	id: number;
	arming: string;
	product_id: number;
	start: number;
	end: number;
	price: string;
	name: string;
	image: string;
	loadedAt: number;
}

type SeckillRedis = ReserveRedis & {
	seckillRelease(...args: (string | number)[]): Promise<[number, number]>;
	seckillMark(...args: (string | number)[]): Promise<1 | 0 | -1>;
	seckillRestore(...args: (string | number)[]): Promise<[number, number]>;
};

/** One activity as gomall-status shows it (SPEC invariant terms). */
interface ActivityStatus {
	activity_id: number;
	product_id: number;
	armed: boolean;
	initial: number;
	redis_remaining: number;
	/** R reserved, C claimed by the order writer, O ordered */
	reservations: { R: number; C: number; O: number };
	buyers: number;
	orders: number;
	closed: number;
	db_stock: number;
	consistent: boolean;
}

interface ReconcileReport {
	activity_id: number;
	product_id: number;
	initial: number;
	redis: { remaining: number; reservations: number };
	db: { stock: number; live_orders: number };
	republished: string[];
	released: string[];
	marked_ordered: number;
	released_closed: number;
	/** Redis had lost the arming itself; rebuilt from its row */
	rebuilt: boolean;
	/** live orders whose lost reservation was put back */
	restored: string[];
	/** live orders that could not be put back (see the log) */
	orphan_orders: string[];
	consistent: boolean;
}

interface StockThis extends Service, DbThis, AmqpThis {
	redis: SeckillRedis;
	publisher: ConfirmPublisher;
	orderNos: OrderNoGenerator;
	soldOut: Set<number>;
	metas: Map<number, ActivityMeta | null>;
	timers: NodeJS.Timeout[];
	rejections: Record<string, Rejection>;
	activityFor(productId: number): Promise<ActivityMeta | null>;
	reject(result: string, key: CodeKey): Rejection;
	reserve(
		productId: number,
		userId: number
	): Promise<Rejection | { order_no: string; success: true; status: "queued"; message: string }>;
	handOff(meta: ActivityMeta, userId: number, seq: number, orderNo: string): Promise<void>;
	runReserve(
		arming: string,
		userId: number,
		orderNo: string,
		attempt?: number
	): Promise<[number, number, number, number]>;
	replicated: ReplicatedReserver | null;
	release(arming: string, orderNo: string, mode: "unclaimed" | "any"): Promise<number>;
	markMany(arming: string, orderNos: string[], state: "C" | "O"): Promise<(1 | 0 | -1)[]>;
	armActivity(ctx: Context, p: InitParams): Promise<unknown>;
	reconcileActivity(activityId: number): Promise<ReconcileReport>;
	activityStatus(productId?: number): Promise<ActivityStatus[]>;
	recheckSoldOut(): Promise<void>;
}

interface InitParams {
	product_id: number;
	stock: number;
	seckill_price?: number;
	start_time?: Date;
	end_time?: Date;
	limit_per_user?: number;
}

/** How stale a node's copy of an activity's window may be; re-arming also clears it at once. */
const META_TTL_MS = 5000;
/** Memory pre-checks of the window allow this much clock skew; the Lua script decides exactly. */
const CLOCK_SLACK_MS = 1000;
const DEFAULT_DURATION_MS = 3600_000;

const RESULT_BY_CODE: Record<number, [string, CodeKey]> = {
	[SeckillResult.NO_ACTIVITY]: ["no_activity", "SECKILL_NO_ACTIVITY"],
	[SeckillResult.NOT_STARTED]: ["not_started", "SECKILL_NOT_STARTED"],
	[SeckillResult.ENDED]: ["ended", "SECKILL_ENDED"],
	[SeckillResult.LIMIT]: ["limit", "SECKILL_LIMIT_REACHED"],
	[SeckillResult.SOLD_OUT]: ["sold_out", "SECKILL_SOLD_OUT"]
};

const productId = { type: "number", integer: true, positive: true, convert: true };
const armingId = { type: "string", pattern: ARMING_ID };
const reservationRef = { arming_id: armingId, order_no: "string" };
/** Several reservations of one arming: the order actor writes its orders in batches. */
const reservationsRef = { arming_id: armingId, order_nos: { type: "array", items: "string", min: 1, max: 1000 } };

/** What a claim found: the consumer writes the order only for "claimed". */
const CLAIM_RESULTS: Record<number, ClaimResult> = { 1: "claimed", 0: "released", [-1]: "unknown_arming" };

/**
 * The stock actor: flash-sale activities, their stock in Redis, the Lua decision, the
 * confirmed RabbitMQ handoff to the order actor, releases and reconciliation.
 */
const StockService: ServiceSchema<ServiceSettingSchema, Record<string, any>, Record<string, any>, StockThis> = {
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
			seckillReserve: { file: "seckill_reserve.lua", numberOfKeys: 5 },
			seckillRelease: { file: "seckill_release.lua", numberOfKeys: 4 },
			seckillMark: { file: "seckill_mark.lua", numberOfKeys: 2 },
			seckillRestore: { file: "seckill_restore.lua", numberOfKeys: 5 }
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
				limit_per_user: { type: "number", integer: true, min: 1, max: 1000, convert: true, optional: true }
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
			retryPolicy: { onlyNeverRan: true } as any,
			params: { product_id: productId },
			handler(this: StockThis, ctx: Context<{ product_id: number }, { user: AuthUser }>) {
				return this.reserve(ctx.params.product_id, ctx.meta.user.id);
			}
		},

		result: {
			auth: "user",
			params: { product_id: productId },
			async handler(this: StockThis, ctx: Context<{ product_id: number }, { user: AuthUser }>) {
				const arming = await this.redis.get(productActivityKey(ctx.params.product_id));
				if (!arming) throw bizError("SECKILL_NO_ACTIVITY");
				const k = activityKeys(arming);
				const orderNo = await this.redis.hget(k.last, String(ctx.meta.user.id));
				if (!orderNo) return { status: "failed", order_no: null };
				const value = await this.redis.hget(k.resv, orderNo);
				const r = value ? parseReservation(orderNo, value) : null;
				if (r) return { status: r.state === "O" ? "success" : "queued", order_no: orderNo };
				// Released: either it never became an order, or its order was closed later.
				const rows = await this.adapter.db.query("SELECT 1 FROM orders WHERE order_no = ?", {
					replacements: [orderNo],
					type: QueryTypes.SELECT
				});
				return { status: rows.length ? "success" : "failed", order_no: rows.length ? orderNo : null };
			}
		},

		list: {
			async handler(this: StockThis) {
				const rows = (await this.adapter.db.query(
					`SELECT a.id, a.arming_id, a.product_id, p.name AS product_name, p.image_url AS product_image, p.price AS original_price,
					        a.seckill_price, a.stock AS db_stock, a.start_time, a.end_time
					   FROM seckill_activities a JOIN products p ON p.id = a.product_id
					  WHERE a.status = 1 AND a.end_time > NOW(3)
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
			}
		},

		/** Internal (order actor): R -> C before the orders are written; one result per order_no. */
		claim: {
			visibility: "public",
			params: reservationsRef,
			async handler(this: StockThis, ctx: Context<{ arming_id: string; order_nos: string[] }>): Promise<ClaimResult[]> {
				return (await this.markMany(ctx.params.arming_id, ctx.params.order_nos, "C")).map(r => CLAIM_RESULTS[r]);
			}
		},

		/** Internal (order actor): the orders are committed. */
		markOrdered: {
			visibility: "public",
			params: reservationsRef,
			async handler(this: StockThis, ctx: Context<{ arming_id: string; order_nos: string[] }>) {
				return (await this.markMany(ctx.params.arming_id, ctx.params.order_nos, "O")).filter(r => r === 1).length;
			}
		},

		/** Internal (order actor): a flash-sale order was closed; give its unit and slot back. */
		release: {
			visibility: "public",
			params: reservationRef,
			async handler(this: StockThis, ctx: Context<{ arming_id: string; order_no: string }>) {
				return (await this.release(ctx.params.arming_id, ctx.params.order_no, "any")) === 1;
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
		 * this node alone has served and which products it believes sold out. Only the
		 * gateway node serves /metrics, so this is how the counters of the others are read.
		 */
		node: {
			visibility: "public",
			handler(this: StockThis) {
				const served: Record<string, number> = {};
				const metric = this.broker.metrics.getMetric("gomall_seckill_requests_total") as any;
				for (const item of metric?.snapshot() ?? []) served[item.labels.result] = item.value;
				return { node_id: this.broker.nodeID, sold_out: [...this.soldOut].sort((a, b) => a - b), seckill: served };
			}
		},

		/** Operators and the periodic timer: repair what a crash left half-done. */
		reconcile: {
			visibility: "public",
			params: { activity_id: { type: "number", integer: true, positive: true, optional: true } },
			async handler(this: StockThis, ctx: Context<{ activity_id?: number }>) {
				const ids = ctx.params.activity_id
					? [ctx.params.activity_id]
					: (
							(await this.adapter.db.query(
								"SELECT id FROM seckill_activities WHERE status = 1 OR updated_at > NOW(3) - INTERVAL 1 DAY ORDER BY id",
								{ type: QueryTypes.SELECT }
							)) as { id: number }[]
						).map(r => Number(r.id));
				const activities: ReconcileReport[] = [];
				for (const id of ids) activities.push(await this.reconcileActivity(id));
				return { activities };
			}
		}
	},

	events: {
		"seckill.soldout"(this: StockThis, ctx: Context<{ product_id: number }>) {
			this.soldOut.add(ctx.params.product_id);
		},
		"seckill.available"(this: StockThis, ctx: Context<{ product_id: number }>) {
			this.soldOut.delete(ctx.params.product_id);
		},
		"seckill.armed"(this: StockThis, ctx: Context<{ product_id: number }>) {
			this.soldOut.delete(ctx.params.product_id);
			this.metas.delete(ctx.params.product_id);
		}
	},

	methods: {
		/** seckill_mark.lua for each order_no, in one round trip (all keys share the arming's slot). */
		async markMany(this: StockThis, arming: string, orderNos: string[], state: "C" | "O"): Promise<(1 | 0 | -1)[]> {
			const k = activityKeys(arming);
			const pipeline = this.redis.pipeline() as unknown as {
				seckillMark(...args: string[]): void;
				exec(): Promise<[Error | null, unknown][] | null>;
			};
			for (const no of orderNos) pipeline.seckillMark(k.resv, k.info, no, state);
			return ((await pipeline.exec()) ?? []).map(([err, r]) => {
				if (err) throw err;
				return r as 1 | 0 | -1;
			});
		},

		reject(result: string, key: CodeKey): Rejection {
			this.broker.metrics.increment("gomall_seckill_requests_total", { result });
			return rejection(key);
		},

		/** The activity for a product, from memory when fresh, else from its Redis hash. */
		async activityFor(this: StockThis, pid: number): Promise<ActivityMeta | null> {
			const cached = this.metas.get(pid);
			if (cached === null || (cached && Date.now() - cached.loadedAt < META_TTL_MS)) return cached;
			const arming = await this.redis.get(productActivityKey(pid));
			let meta: ActivityMeta | null = null;
			if (arming) {
				const [id, start, end, price, name, image, active] = await this.redis.hmget(
					activityKeys(arming).info,
					"activity_id",
					"start",
					"end",
					"price",
					"name",
					"image",
					"active"
				);
				if (active === "1")
					meta = {
						id: Number(id),
						arming,
						product_id: pid,
						start: Number(start),
						end: Number(end),
						price: price!,
						name: name ?? "",
						image: image ?? "",
						loadedAt: Date.now()
					};
			}
			// A miss is remembered too, briefly: unknown products are the cheapest rejection.
			this.metas.set(pid, meta ?? null);
			if (!meta) setTimeout(() => this.metas.get(pid) === null && this.metas.delete(pid), META_TTL_MS).unref();
			return meta;
		},

		async reserve(this: StockThis, pid: number, userId: number) {
			if (this.soldOut.has(pid)) return this.reject("sold_out", "SECKILL_SOLD_OUT");
			const meta = await this.activityFor(pid);
			if (!meta) return this.reject("no_activity", "SECKILL_NO_ACTIVITY");
			const now = Date.now();
			if (now < meta.start - CLOCK_SLACK_MS) return this.reject("not_started", "SECKILL_NOT_STARTED");
			if (now >= meta.end + CLOCK_SLACK_MS) return this.reject("ended", "SECKILL_ENDED");

			const orderNo = this.orderNos.next();
			let reserved: [number, number, number, number];
			try {
				reserved = await this.runReserve(meta.arming, userId, orderNo);
			} catch (err) {
				// Redis unreachable or mid-failover: "retry" (503). If the script did run and only
				// its reply was lost, the reservation has no message yet; reconciliation publishes
				// it after seckill.reconcile_age, so the buyer still gets that order.
				this.logger.warn(`seckill ${orderNo}: Redis did not answer the reservation (${(err as Error).message})`);
				return this.reject("redis_error", "UNAVAILABLE");
			}
			const [code, seq, left, replicas] = reserved;
			if (code !== SeckillResult.WON) {
				if (code === SeckillResult.SOLD_OUT)
					this.broker.broadcast("seckill.soldout", { product_id: pid, activity_id: meta.id });
				const [result, key] = RESULT_BY_CODE[code];
				return this.reject(result, key);
			}
			if (this.replicated && replicas < this.replicated.replicas) {
				// Not on enough replicas in time: a failover now could forget this reservation
				// while its buyer holds a "queued". Give it back instead (the buyer may retry).
				await this.release(meta.arming, orderNo, "unclaimed");
				return this.reject("unreplicated", "SECKILL_ORDER_FAILED");
			}
			if (left === 0) this.broker.broadcast("seckill.soldout", { product_id: pid, activity_id: meta.id });

			try {
				await this.handOff(meta, userId, seq, orderNo);
			} catch (err) {
				// Not confirmed, returned or no channel: give the unit back and say "retry".
				// If the message did reach the queue after all, the consumer's claim finds the
				// reservation gone and writes nothing (claim and release are both atomic).
				this.logger.warn(`seckill ${orderNo}: handoff failed (${(err as Error).message}); reservation released`);
				await this.release(meta.arming, orderNo, "unclaimed");
				return this.reject("handoff_failed", "SECKILL_ORDER_FAILED");
			}
			this.broker.metrics.increment("gomall_seckill_requests_total", { result: "queued" });
			this.broker.metrics.increment("gomall_seckill_success_total");
			return {
				order_no: orderNo,
				success: true as const,
				status: "queued" as const,
				message: "queued: poll /api/seckill/result for the order"
			};
		},

		/** seckill_reserve.lua, acknowledged by WAIT when redis.wait_replicas is set (lib/seckill.ts ReplicatedReserver). */
		async runReserve(
			this: StockThis,
			arming: string,
			userId: number,
			orderNo: string,
			attempt = 1
		): Promise<[number, number, number, number]> {
			if (!this.replicated) {
				const k = activityKeys(arming);
				return [...(await this.redis.seckillReserve(k.info, k.bought, k.seqs, k.resv, k.last, userId, orderNo)), 0];
			}
			try {
				return await this.replicated.reserve(arming, userId, orderNo);
			} catch (err) {
				// A cluster redirection proves the script did not run; ioredis follows it for a
				// lone command but not inside a pipeline whose other command (WAIT) succeeded.
				if (attempt < 3 && /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN) /.test((err as Error).message)) {
					await new Promise(resolve => setTimeout(resolve, 100 * attempt));
					return this.runReserve(arming, userId, orderNo, attempt + 1);
				}
				throw err;
			}
		},

		handOff(this: StockThis, meta: ActivityMeta, userId: number, seq: number, orderNo: string) {
			const msg: SeckillOrderMessage = {
				order_no: orderNo,
				activity_id: meta.id,
				arming_id: meta.arming,
				product_id: meta.product_id,
				user_id: userId,
				seq,
				product_name: meta.name,
				product_image: meta.image,
				price: meta.price
			};
			return this.publisher.publish(names(getConfig().namespace).orderExchange, SECKILL_ROUTING_KEY, msg, orderNo);
		},

		/** Returns 1 released, 0 nothing to release, -1 kept (claimed, mode unclaimed). */
		async release(this: StockThis, arming: string, orderNo: string, mode: "unclaimed" | "any") {
			const k = activityKeys(arming);
			const [released, left] = await this.redis.seckillRelease(k.info, k.bought, k.seqs, k.resv, orderNo, mode);
			if (released === 1 && left === 1) {
				const [pid, activityId] = await this.redis.hmget(k.info, "product_id", "activity_id");
				this.broker.broadcast("seckill.available", { product_id: Number(pid), activity_id: Number(activityId) });
			}
			return released;
		},

		/**
		 * Creates (or re-arms) the product's activity: a new row with a new arming id, the
		 * previous one superseded, stock warmed into Redis under the new arming's keys (nothing
		 * of an earlier sale carries over), and every node told to forget what it knew.
		 */
		async armActivity(this: StockThis, ctx: Context, p: InitParams) {
			const product = (await ctx.call("product.get", { id: p.product_id })) as Product;
			const start = p.start_time ? p.start_time.getTime() : Date.now();
			const end = p.end_time ? p.end_time.getTime() : start + DEFAULT_DURATION_MS;
			if (end <= start)
				throw bizError(
					"BAD_REQUEST",
					[{ field: "end_time", message: "end_time must be after start_time" }],
					"validation failed"
				);
			const price = centsToDecimal(toCents(p.seckill_price ?? product.price));
			const limit = p.limit_per_user ?? 1;
			const db = this.adapter.db;
			const previous = (await db.query("SELECT arming_id FROM seckill_activities WHERE product_id = ? AND status = 1", {
				replacements: [p.product_id],
				type: QueryTypes.SELECT
			})) as { arming_id: string }[];
			const arming = newArmingId();
			const id = await db.transaction(async transaction => {
				await db.query("UPDATE seckill_activities SET status = 0 WHERE product_id = ? AND status = 1", {
					replacements: [p.product_id],
					transaction
				});
				const [insertId] = (await db.query(
					"INSERT INTO seckill_activities (arming_id, product_id, seckill_price, total_stock, stock, limit_per_user, start_time, end_time, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
					{
						replacements: [arming, p.product_id, price, p.stock, p.stock, limit, new Date(start), new Date(end)],
						transaction,
						type: QueryTypes.INSERT
					}
				)) as unknown as [number];
				return Number(insertId);
			});
			// Three steps, not one MULTI: on a Redis Cluster the old armings, the new one and the
			// product's pointer live in different slots. The order keeps every moment safe: the old
			// sale stops first, then the new one exists, and only then do buyers find it (between
			// the first and the last step a buyer is told "no activity" for a few milliseconds).
			await Promise.all(previous.map(old => this.redis.hset(activityKeys(old.arming_id).info, "active", "0")));
			await this.redis.hset(activityKeys(arming).info, {
				stock: p.stock,
				start,
				end,
				limit,
				active: 1,
				activity_id: id,
				product_id: p.product_id,
				price,
				name: product.name,
				image: product.image_url
			});
			await this.redis.set(productActivityKey(p.product_id), arming);
			this.broker.broadcast("seckill.armed", { product_id: p.product_id, activity_id: id });
			return {
				id,
				arming_id: arming,
				product_id: p.product_id,
				stock: p.stock,
				seckill_price: Number(price),
				start_time: new Date(start),
				end_time: new Date(end),
				limit_per_user: limit
			};
		},

		/**
		 * Compares the activity's Redis reservations with its DB orders and repairs:
		 *  - reservation whose order was closed -> released (the close's release was lost);
		 *  - reservation with a live order not marked ordered -> marked;
		 *  - reservation older than seckill.reconcile_age with no order -> re-published (the
		 *    consumer is idempotent), or released if that fails;
		 *  - the arming's keys gone from Redis (a failover or a restore lost them) -> rebuilt from
		 *    its row, stock = the initial stock, so the next step puts every live order back;
		 *  - live order with no reservation -> its reservation restored as ordered (the unit taken
		 *    from Redis stock again), so the invariant is restored from the database.
		 */
		async reconcileActivity(this: StockThis, activityId: number): Promise<ReconcileReport> {
			const db = this.adapter.db;
			const [activity] = (await db.query(
				`SELECT a.id, a.arming_id, a.product_id, a.total_stock, a.seckill_price, a.limit_per_user, a.start_time, a.end_time, a.status, p.name, p.image_url
				   FROM seckill_activities a LEFT JOIN products p ON p.id = a.product_id WHERE a.id = ?`,
				{ replacements: [activityId], type: QueryTypes.SELECT }
			)) as Record<string, any>[];
			if (!activity) throw bizError("SECKILL_NO_ACTIVITY");
			const arming: string = activity.arming_id;
			const k = activityKeys(arming);
			const report: ReconcileReport = {
				activity_id: activityId,
				product_id: Number(activity.product_id),
				initial: Number(activity.total_stock),
				redis: { remaining: 0, reservations: 0 },
				db: { stock: 0, live_orders: 0 },
				republished: [],
				released: [],
				marked_ordered: 0,
				released_closed: 0,
				rebuilt: false,
				restored: [],
				orphan_orders: [],
				consistent: false
			};
			const rows = (await db.query(
				"SELECT order_no, status, user_id, seckill_seq, created_at FROM orders WHERE activity_id = ?",
				{ replacements: [activityId], type: QueryTypes.SELECT }
			)) as {
				order_no: string;
				status: number;
				user_id: number;
				seckill_seq: number;
				created_at: Date;
			}[];
			const orders = new Map(rows.map(o => [o.order_no, Number(o.status)]));
			const price = centsToDecimal(toCents(activity.seckill_price));
			if (!(await this.redis.exists(k.info))) {
				const armed = Number(activity.status) === ActivityStatus.LIVE;
				const start = new Date(activity.start_time).getTime();
				const end = new Date(activity.end_time).getTime();
				await this.redis.hset(k.info, {
					stock: report.initial,
					start,
					end,
					limit: Number(activity.limit_per_user),
					active: armed ? 1 : 0,
					activity_id: activityId,
					product_id: report.product_id,
					price,
					name: activity.name ?? "",
					image: activity.image_url ?? ""
				});
				if (armed) await this.redis.set(productActivityKey(report.product_id), arming);
				report.rebuilt = true;
				this.logger.warn(`reconcile activity ${activityId}: its Redis keys were gone; rebuilt from the database`);
				this.broker.broadcast("seckill.armed", { product_id: report.product_id, activity_id: activityId });
			}
			const raw = await this.redis.hgetall(k.resv);
			const reservations = Object.entries(raw)
				.map(([no, v]) => parseReservation(no, v))
				.filter((r): r is Reservation => r !== null);
			const [redisNow] = await this.redis.time();
			const ageLimitMs = getConfig().seckill.reconcile_age * 1000;
			const meta: ActivityMeta = {
				id: activityId,
				arming,
				product_id: report.product_id,
				price,
				name: activity.name ?? "",
				image: activity.image_url ?? "",
				start: 0,
				end: 0,
				loadedAt: 0
			};

			for (const r of reservations) {
				const status = orders.get(r.order_no);
				if (status === OrderStatus.CLOSED) {
					if ((await this.release(arming, r.order_no, "any")) === 1) report.released_closed++;
				} else if (status !== undefined) {
					if (r.state !== "O") {
						await this.redis.seckillMark(k.resv, k.info, r.order_no, "O");
						report.marked_ordered++;
					}
				} else if (Number(redisNow) * 1000 - r.reserved_at >= ageLimitMs) {
					try {
						await this.handOff(meta, r.user_id, r.seq, r.order_no);
						report.republished.push(r.order_no);
					} catch {
						if ((await this.release(arming, r.order_no, "unclaimed")) === 1) report.released.push(r.order_no);
					}
				}
			}

			const held = new Set(Object.keys(await this.redis.hgetall(k.resv)));
			for (const o of rows) {
				if (Number(o.status) === OrderStatus.CLOSED || held.has(o.order_no)) continue;
				const [restored] = await this.redis.seckillRestore(
					k.info,
					k.bought,
					k.seqs,
					k.resv,
					k.last,
					o.order_no,
					Number(o.user_id),
					Number(o.seckill_seq),
					new Date(o.created_at).getTime()
				);
				if (restored === -1) report.orphan_orders.push(o.order_no);
				else if (restored === 1) report.restored.push(o.order_no);
			}
			const live = new Set(Object.keys(await this.redis.hgetall(k.resv)));
			const [dbRow] = (await db.query("SELECT stock FROM seckill_activities WHERE id = ?", {
				replacements: [activityId],
				type: QueryTypes.SELECT
			})) as { stock: number }[];
			report.redis.remaining = Number((await this.redis.hget(k.info, "stock")) ?? 0);
			report.redis.reservations = live.size;
			report.db.stock = Number(dbRow.stock);
			report.db.live_orders = [...orders.values()].filter(s => s !== OrderStatus.CLOSED).length;
			report.consistent =
				report.initial === report.redis.remaining + report.redis.reservations &&
				report.initial === report.db.stock + report.db.live_orders;
			if (
				report.republished.length ||
				report.released.length ||
				report.released_closed ||
				report.restored.length ||
				report.orphan_orders.length
			) {
				this.logger.warn(
					`reconcile activity ${activityId}: republished ${report.republished.length}, released ${report.released.length}, released after close ${report.released_closed}, restored from orders ${report.restored.length}, orphan orders ${report.orphan_orders.length}`
				);
			}
			// More units held in Redis than it had: the same unit was sold twice in Redis (a
			// reservation lost to a failover, its unit sold again). The database's guarded UPDATE
			// kept MySQL exact; say it loudly, because a buyer told "queued" may have no order.
			if (report.redis.remaining < 0)
				this.logger.error(
					`reconcile activity ${activityId}: Redis holds ${-report.redis.remaining} more reservations than stock (lost writes; see redis.wait_replicas)`
				);
			return report;
		},

		/** The SPEC invariant's terms for the armed (or last day's) activities, as they are now. */
		async activityStatus(this: StockThis, productId?: number): Promise<ActivityStatus[]> {
			const db = this.adapter.db;
			const rows = (await db.query(
				`SELECT id, arming_id, product_id, total_stock, stock, limit_per_user, status FROM seckill_activities
				  WHERE ${productId ? "product_id = ?" : "status = 1 OR updated_at > NOW(3) - INTERVAL 1 DAY"} ORDER BY id`,
				{ replacements: productId ? [productId] : [], type: QueryTypes.SELECT }
			)) as Record<string, any>[];
			const out: ActivityStatus[] = [];
			for (const a of rows) {
				const k = activityKeys(a.arming_id);
				const [remaining, resv, buyers] = await Promise.all([
					this.redis.hget(k.info, "stock"),
					this.redis.hgetall(k.resv),
					this.redis.hlen(k.bought)
				]);
				const states = { R: 0, C: 0, O: 0 };
				for (const [no, v] of Object.entries(resv)) {
					const r = parseReservation(no, v);
					if (r) states[r.state]++;
				}
				const [o] = (await db.query(
					"SELECT COUNT(*) AS orders, COALESCE(SUM(status = 5), 0) AS closed FROM orders WHERE activity_id = ?",
					{ replacements: [a.id], type: QueryTypes.SELECT }
				)) as Record<string, any>[];
				const initial = Number(a.total_stock);
				const reservations = states.R + states.C + states.O;
				const orders = Number(o.orders);
				const closed = Number(o.closed);
				const redisRemaining = Number(remaining ?? 0);
				out.push({
					activity_id: Number(a.id),
					product_id: Number(a.product_id),
					armed: Number(a.status) === ActivityStatus.LIVE,
					initial,
					redis_remaining: redisRemaining,
					reservations: states,
					buyers,
					orders,
					closed,
					db_stock: Number(a.stock),
					consistent: initial === redisRemaining + reservations && initial === Number(a.stock) + orders - closed
				});
			}
			return out;
		},

		/** A sold-out flag whose stock came back (a release raced the broadcast) is dropped. */
		async recheckSoldOut(this: StockThis) {
			for (const pid of this.soldOut) {
				const meta = await this.activityFor(pid);
				if (!meta) continue;
				const left = Number(await this.redis.hget(activityKeys(meta.arming).info, "stock"));
				if (left > 0) this.soldOut.delete(pid);
			}
		}
	},

	created(this: StockThis) {
		const c = getConfig();
		this.soldOut = new Set();
		this.metas = new Map();
		this.timers = [];
		this.publisher = new ConfirmPublisher(this.amqp, ch => assertSeckillTopology(ch, c.namespace, deliveryPolicy(c)));
		const results = [
			"queued",
			"handoff_failed",
			"unreplicated",
			"redis_error",
			...Object.values(RESULT_BY_CODE).map(([result]) => result)
		];
		counter(
			this.broker.metrics,
			"gomall_seckill_requests_total",
			"Flash-sale requests by result",
			labelSets({ result: results })
		);
		counter(this.broker.metrics, "gomall_seckill_success_total", "Flash-sale reservations handed to the order queue");
	},

	async started(this: StockThis) {
		const { wait_replicas: replicas, wait_timeout_ms: timeout } = getConfig().redis;
		this.replicated = replicas > 0 ? new ReplicatedReserver(this.redis, replicas, timeout) : null;
		this.orderNos = new OrderNoGenerator(await acquireWorkerId(this.redis));
		await this.amqp.start();
		this.timers.push(setInterval(() => this.recheckSoldOut().catch(() => undefined), 2000));
		const interval = getConfig().seckill.reconcile_interval;
		if (interval > 0) {
			this.timers.push(
				setInterval(() => {
					this.broker.call("stock.reconcile").catch(err => this.logger.warn(`reconcile failed: ${err.message}`));
				}, interval * 1000)
			);
		}
	},

	stopped(this: StockThis) {
		for (const t of this.timers) clearInterval(t);
	}
};

export default StockService;
