import { QueryTypes } from "sequelize";
import { getConfig } from "../../config";
import { bizError } from "../../lib/contract/errors";
import { centsToDecimal, toCents } from "../../lib/domain/money";
import { ActivityStatus, OrderStatus } from "../../lib/domain/order";
import {
	activityKeys,
	parseReservation,
	productActivityKey,
	Reservation,
	RESERVATION_STATES,
	ReservationState
} from "../../lib/domain/seckill";
import { bucketKeys, homeBucket, parseBucketTags } from "../../lib/domain/seckill-buckets";
import { names } from "../../lib/messaging/topology";
import { RedisLease, withLease } from "../../lib/storage/lease";
import type {
	ActivityMeta,
	ActivityStatusRow,
	ReconcileActivityRow,
	ReconcileOrderRow,
	ReconcileReport,
	ReconciliationMethods,
	ReservationRepair,
	StockThis
} from "./types";

/** One reconciliation at a time across every stock node; the holder renews it while it runs. */
const RECONCILE_LEASE_KEY = "seckill:reconcile:lease";
const LEASE_TTL_MS = 30000;

/** The activities reconciliation and gomall-status look at: the armed ones and the last day's. */
const RECENT_ACTIVITIES = `status = ${ActivityStatus.LIVE} OR updated_at > NOW(3) - INTERVAL 1 DAY`;

function emptyReport(activityId: number, activity: ReconcileActivityRow): ReconcileReport {
	return {
		activity_id: activityId,
		product_id: Number(activity.product_id),
		initial: Number(activity.total_stock),
		redis: { remaining: 0, reservations: 0, lends: 0 },
		db: { stock: 0, live_orders: 0 },
		republished: [],
		requeued: [],
		unconfirmed: 0,
		failed: 0,
		marked_ordered: 0,
		released_closed: 0,
		rebuilt: false,
		restored: [],
		orphan_orders: [],
		lends_returned: 0,
		lends_settled: 0,
		consistent: false
	};
}

/**
 * What to do with one reservation, from its order's status (undefined: no order), its state and
 * its age: release it if its order was closed, mark it ordered if its order lives. With no order
 * after seckill.reconcile_age: an unconfirmed one (R: the node died, or the confirm was lost) is
 * published again; a confirmed one (P, C) never is while messages wait in the queue (a backlog,
 * a consumer stopped), only when the queue is empty and so lost it; a failed one (F) is the
 * operator's. No reservation without an order is ever released here (failure mode 8).
 */
function decideRepair(
	r: Reservation,
	status: number | undefined,
	redisNowMs: number,
	ageLimitMs: number,
	queueEmpty: boolean
): ReservationRepair {
	if (status === OrderStatus.CLOSED) return "release_closed";
	if (status !== undefined) return r.state !== "O" ? "mark_ordered" : null;
	if (r.state === "F") return "failed";
	if (redisNowMs - r.reserved_at < ageLimitMs) return null;
	if (r.state === "R") return "republish";
	return queueEmpty ? "requeue" : null;
}

/** How many reservations one HSCAN page asks for: the live sale's Redis is never blocked for long. */
const SCAN_PAGE = 500;

/** Operators and the periodic timer: reconciliation, and the invariant's terms as they are now. */
export const reconciliationMethods = {
	/**
	 * The given activity, or every armed (or last day's) one, one after the other, while this
	 * node holds the cluster's reconciliation lease: two runs at once would both republish the
	 * same reservations. Refused with SECKILL_RECONCILE_BUSY while another node holds it.
	 */
	async reconcileAll(this: StockThis, activityId?: number) {
		const lease = new RedisLease(this.redis, RECONCILE_LEASE_KEY, `${this.broker.nodeID}:${process.pid}`, LEASE_TTL_MS);
		const done = await withLease(lease, async () => {
			const ids = activityId
				? [activityId]
				: (
						(await this.adapter.db.query(`SELECT id FROM seckill_activities WHERE ${RECENT_ACTIVITIES} ORDER BY id`, {
							type: QueryTypes.SELECT
						})) as { id: number }[]
					).map(r => Number(r.id));
			const queueEmpty = await this.seckillQueueEmpty();
			const activities: ReconcileReport[] = [];
			for (const id of ids) {
				try {
					activities.push(await this.reconcileActivity(id, queueEmpty));
				} catch (err) {
					// One activity's failure (its row gone, a Redis hiccup) does not stop the others.
					if (activityId) throw err;
					this.logger.warn(`reconcile activity ${id} failed: ${(err as Error).message}`);
				}
			}
			return { activities };
		});
		this.broker.metrics.increment("gomall_seckill_reconcile_runs_total", { result: done ? "ran" : "busy" });
		if (!done) throw bizError("SECKILL_RECONCILE_BUSY");
		return done;
	},

	/** The periodic run: one at a time on this node, skipped while another node holds the lease. */
	scheduleReconcile(this: StockThis, intervalMs: number) {
		const timer = setTimeout(async () => {
			try {
				await this.reconcileAll();
			} catch (err) {
				if ((err as { type?: string }).type !== "SECKILL_RECONCILE_BUSY")
					this.logger.warn(`reconcile failed: ${(err as Error).message}`);
			}
			if (this.timers.includes(timer)) {
				this.timers.splice(this.timers.indexOf(timer), 1);
				this.scheduleReconcile(intervalMs);
			}
		}, intervalMs);
		this.timers.push(timer);
	},

	/**
	 * Whether the flash-sale queue and its retry queues hold no message now. Unknown (the broker
	 * away) counts as not empty: then no confirmed reservation is published again.
	 */
	async seckillQueueEmpty(this: StockThis): Promise<boolean> {
		const conn = this.amqp.connection;
		if (!conn) return false;
		const c = getConfig();
		const n = names(c.namespace);
		const queues = [n.seckillQueue, ...c.amqp.retry_delays_ms.map(ms => n.retryQueue(n.seckillQueue, ms))];
		try {
			const ch = await conn.createChannel();
			ch.on("error", () => undefined);
			try {
				for (const q of queues) if ((await ch.checkQueue(q)).messageCount > 0) return false;
				return true;
			} finally {
				await ch.close().catch(() => undefined);
			}
		} catch {
			return false;
		}
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
	async reconcileActivity(this: StockThis, activityId: number, queueEmpty = false): Promise<ReconcileReport> {
		const activity = await this.readReconcileActivity(activityId);
		const arming = activity.arming_id;
		const report = emptyReport(activityId, activity);
		const rows = await this.readReconcileOrders(activityId);
		const orders = new Map(rows.map(o => [o.order_no, Number(o.status)]));
		const price = centsToDecimal(toCents(activity.seckill_price));
		const tags = parseBucketTags(activity.buckets, activity.bucket_tags);
		if (tags.length > 1) await this.rebuildLostBuckets(activity, tags, report, price);
		else await this.rebuildLostArming(activity, report, price);
		const ageLimitMs = getConfig().seckill.reconcile_age * 1000;
		const meta: ActivityMeta = {
			id: activityId,
			arming,
			product_id: report.product_id,
			price,
			name: activity.name ?? "",
			image: activity.image_url ?? "",
			tags,
			start: 0,
			end: 0,
			require_token: Number(activity.require_token) === 1,
			captcha: Number(activity.captcha) === 1,
			loadedAt: 0
		};
		const held = new Set<string>();
		// Every bucket's reservations (one, the arming's own keys, when unbucketed).
		for (let bucket = 0; bucket < tags.length; bucket++)
			await this.scanReservations(
				arming,
				async (page, redisNowMs) => {
					for (const r of page) {
						held.add(r.order_no);
						const repair = decideRepair(r, orders.get(r.order_no), redisNowMs, ageLimitMs, queueEmpty);
						await this.repairReservation(meta, r, repair, report, bucket);
					}
				},
				bucket
			);
		await this.restoreLostReservations(arming, rows, held, report);
		await this.reconcileLends(arming, tags, report);
		await this.measureReconciled(arming, orders, report);
		this.logReconciled(report);
		return report;
	},

	async readReconcileActivity(this: StockThis, activityId: number): Promise<ReconcileActivityRow> {
		const [activity] = (await this.adapter.db.query(
			`SELECT a.id, a.arming_id, a.product_id, a.total_stock, a.seckill_price, a.limit_per_user, a.start_time, a.end_time, a.status, a.buckets, a.bucket_tags, a.require_token, a.captcha, p.name, p.image_url
			   FROM seckill_activities a LEFT JOIN products p ON p.id = a.product_id WHERE a.id = ?`,
			{ replacements: [activityId], type: QueryTypes.SELECT }
		)) as ReconcileActivityRow[];
		if (!activity) throw bizError("SECKILL_NO_ACTIVITY");
		return activity;
	},

	async readReconcileOrders(this: StockThis, activityId: number): Promise<ReconcileOrderRow[]> {
		return (await this.adapter.db.query(
			"SELECT order_no, status, user_id, seckill_seq, created_at FROM orders WHERE activity_id = ?",
			{ replacements: [activityId], type: QueryTypes.SELECT }
		)) as ReconcileOrderRow[];
	},

	/** The arming's info hash gone from Redis: rebuilt from its row, with the initial stock. */
	async rebuildLostArming(this: StockThis, activity: ReconcileActivityRow, report: ReconcileReport, price: string) {
		const arming = activity.arming_id;
		const activityId = report.activity_id;
		if (await this.redis.exists(activityKeys(arming).info)) return;
		const armed = Number(activity.status) === ActivityStatus.LIVE;
		const start = new Date(activity.start_time).getTime();
		const end = new Date(activity.end_time).getTime();
		await this.writeActivityInfo(arming, {
			stock: report.initial,
			start,
			end,
			limit: Number(activity.limit_per_user),
			active: armed,
			activity_id: activityId,
			product_id: report.product_id,
			price,
			name: activity.name ?? "",
			image: activity.image_url ?? "",
			require_token: Number(activity.require_token) === 1,
			captcha: Number(activity.captcha) === 1
		});
		if (armed) await this.redis.set(productActivityKey(report.product_id), arming);
		report.rebuilt = true;
		this.logger.warn(`reconcile activity ${activityId}: its Redis keys were gone; rebuilt from the database`);
		this.broker.broadcast("seckill.armed", {
			product_id: report.product_id,
			activity_id: activityId,
			arming_id: arming
		});
	},

	/**
	 * The arming's reservations, a page at a time (HSCAN, not HGETALL: the hash of a large sale
	 * is read without blocking the Redis that serves it), each page with Redis's clock (their
	 * reserved_at is Redis time too).
	 */
	async scanReservations(
		this: StockThis,
		arming: string,
		onPage: (page: Reservation[], redisNowMs: number) => Promise<void>,
		bucket = 0
	) {
		const key = bucket ? bucketKeys(arming, await this.bucketTagsOf(arming), bucket).resv : activityKeys(arming).resv;
		let cursor = "0";
		do {
			const [next, flat] = await this.redis.hscan(key, cursor, "COUNT", SCAN_PAGE);
			cursor = next;
			const page: Reservation[] = [];
			for (let i = 0; i < flat.length; i += 2) {
				const r = parseReservation(flat[i], flat[i + 1]);
				if (r) page.push(r);
			}
			const [redisNow] = await this.redis.time();
			if (page.length) await onPage(page, Number(redisNow) * 1000);
		} while (cursor !== "0");
	},

	async repairReservation(
		this: StockThis,
		meta: ActivityMeta,
		r: Reservation,
		repair: ReservationRepair,
		report: ReconcileReport,
		bucket = 0
	) {
		const arming = meta.arming;
		const k = bucketKeys(arming, meta.tags, bucket);
		if (repair === "release_closed") {
			if ((await this.release(arming, r.order_no, "any", bucket)) === 1) report.released_closed++;
		} else if (repair === "mark_ordered") {
			await this.redis.seckillMark(k.resv, k.info, "O", r.order_no);
			report.marked_ordered++;
		} else if (repair === "failed") {
			report.failed++;
		} else if (repair === "republish" || repair === "requeue") {
			try {
				await this.handOff(meta, r.user_id, r.seq, r.order_no, bucket);
				// Confirmed now: not published again while it waits in the queue.
				await this.markMany(arming, [r.order_no], "P", [bucket]);
				(repair === "republish" ? report.republished : report.requeued).push(r.order_no);
				this.broker.metrics.increment("gomall_seckill_republished_total", {
					reason: repair === "republish" ? "unconfirmed" : "lost"
				});
			} catch {
				// Kept: the next run tries again once the broker answers.
				report.unconfirmed++;
			}
		}
	},

	/**
	 * Live orders whose reservation Redis no longer holds: put back as ordered (seckill_restore.lua).
	 * Their status is read again first: an order closed after the first read has had its
	 * reservation released by its close, and putting it back would take its unit a second time.
	 * A close that commits after this read releases what is restored here (its release follows
	 * its commit).
	 */
	async restoreLostReservations(
		this: StockThis,
		arming: string,
		rows: ReconcileOrderRow[],
		held: Set<string>,
		report: ReconcileReport
	) {
		const tags = await this.bucketTagsOf(arming);
		const missing = rows.filter(o => Number(o.status) !== OrderStatus.CLOSED && !held.has(o.order_no));
		if (!missing.length) return;
		const still = (await this.adapter.db.query("SELECT order_no FROM orders WHERE order_no IN (?) AND status <> ?", {
			replacements: [missing.map(o => o.order_no), OrderStatus.CLOSED],
			type: QueryTypes.SELECT
		})) as { order_no: string }[];
		const live = new Set(still.map(o => o.order_no));
		for (const o of missing) {
			if (!live.has(o.order_no)) continue;
			// Into its buyer's home bucket, whose stock may go below 0 (its unit may have been lent
			// from another bucket): the sum over the buckets is what the invariant holds.
			const k = bucketKeys(arming, tags, homeBucket(Number(o.user_id), tags.length));
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
	},

	/** The invariant's terms after the repairs, and whether they hold. */
	async measureReconciled(this: StockThis, arming: string, orders: Map<string, number>, report: ReconcileReport) {
		const tags = await this.bucketTagsOf(arming);
		const [dbRow] = (await this.adapter.db.query("SELECT stock FROM seckill_activities WHERE id = ?", {
			replacements: [report.activity_id],
			type: QueryTypes.SELECT
		})) as { stock: number }[];
		report.redis.remaining = 0;
		report.redis.reservations = 0;
		for (let b = 0; b < tags.length; b++) {
			const k = bucketKeys(arming, tags, b);
			report.redis.remaining += Number((await this.redis.hget(k.info, "stock")) ?? 0);
			report.redis.reservations += await this.redis.hlen(k.resv);
		}
		report.redis.lends = await this.lendsInFlight(arming, tags);
		report.db.stock = Number(dbRow.stock);
		report.db.live_orders = [...orders.values()].filter(s => s !== OrderStatus.CLOSED).length;
		report.consistent =
			report.initial === report.redis.remaining + report.redis.reservations + report.redis.lends &&
			report.initial === report.db.stock + report.db.live_orders;
	},

	logReconciled(this: StockThis, report: ReconcileReport) {
		const activityId = report.activity_id;
		if (
			report.republished.length ||
			report.requeued.length ||
			report.unconfirmed ||
			report.released_closed ||
			report.restored.length ||
			report.orphan_orders.length
		) {
			this.logger.warn(
				`reconcile activity ${activityId}: republished ${report.republished.length} unconfirmed, requeued ${report.requeued.length} lost from an empty queue, ${report.unconfirmed} still unconfirmed, released after close ${report.released_closed}, restored from orders ${report.restored.length}, orphan orders ${report.orphan_orders.length}, failed ${report.failed}`
			);
		}
		// More units held in Redis than it had: the same unit was sold twice in Redis (a
		// reservation lost to a failover, its unit sold again). The database's guarded UPDATE
		// kept MySQL exact; say it loudly, because a buyer told "queued" may have no order.
		if (report.redis.remaining < 0)
			this.logger.error(
				`reconcile activity ${activityId}: Redis holds ${-report.redis.remaining} more reservations than stock (lost writes; see redis.wait_replicas)`
			);
	},

	/** The SPEC invariant's terms for the armed (or last day's) activities, as they are now. */
	async activityStatus(this: StockThis, productId?: number): Promise<ActivityStatusRow[]> {
		const db = this.adapter.db;
		const rows = (await db.query(
			`SELECT id, arming_id, product_id, total_stock, stock, limit_per_user, status, buckets, bucket_tags FROM seckill_activities
			  WHERE ${productId ? "product_id = ?" : RECENT_ACTIVITIES} ORDER BY id`,
			{ replacements: productId ? [productId] : [], type: QueryTypes.SELECT }
		)) as Record<string, any>[];
		const out: ActivityStatusRow[] = [];
		for (const a of rows) {
			const tags = parseBucketTags(a.buckets, a.bucket_tags);
			const states: Record<ReservationState, number> = { R: 0, P: 0, C: 0, O: 0, F: 0 };
			let remaining = 0;
			let buyers = 0;
			// Every bucket: a buyer is counted once (all of a buyer lives in its home bucket).
			for (let b = 0; b < tags.length; b++) {
				const k = bucketKeys(a.arming_id, tags, b);
				const [left, held] = await Promise.all([this.redis.hget(k.info, "stock"), this.redis.hlen(k.bought)]);
				remaining += Number(left ?? 0);
				buyers += held;
				await this.scanReservations(
					a.arming_id,
					async page => {
						for (const r of page) states[r.state]++;
					},
					b
				);
			}
			const lends = await this.lendsInFlight(a.arming_id, tags);
			const [o] = (await db.query(
				`SELECT COUNT(*) AS orders, COALESCE(SUM(status = ${OrderStatus.CLOSED}), 0) AS closed FROM orders WHERE activity_id = ?`,
				{ replacements: [a.id], type: QueryTypes.SELECT }
			)) as Record<string, any>[];
			const initial = Number(a.total_stock);
			const reservations = RESERVATION_STATES.reduce((sum, st) => sum + states[st], 0);
			const orders = Number(o.orders);
			const closed = Number(o.closed);
			const redisRemaining = remaining;
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
				buckets: tags.length,
				lends,
				consistent: initial === redisRemaining + reservations + lends && initial === Number(a.stock) + orders - closed
			});
		}
		return out;
	}
} satisfies ReconciliationMethods;
