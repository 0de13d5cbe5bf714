import type { Context, Service } from "moleculer";
import type { CodeKey } from "../../lib/contract/codes";
import type { Rejection } from "../../lib/contract/errors";
import type { LeasedOrderNos } from "../../lib/domain/order-no";
import type { ReplicatedReserver, Reservation, ReservationState, ReserveRedis } from "../../lib/domain/seckill";
import type { ConfirmPublisher } from "../../lib/messaging/amqp";
import type { AmqpThis } from "../../mixins/amqp.mixin";
import type { DbThis } from "../../mixins/db.mixin";
import type { Product } from "../../lib/domain/product";

/** What a node remembers about the activity armed for a product (cheap rejections). */
export interface ActivityMeta {
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

/** The ten fields of an arming's Redis info hash (KEYS[1] of the Lua scripts). */
export interface ActivityInfo {
	stock: number;
	start: number;
	end: number;
	limit: number;
	/** written as 1 or 0: the Lua scripts take only "1" as a live sale */
	active: boolean;
	activity_id: number;
	product_id: number;
	price: string;
	name: string;
	image: string;
}

export type SeckillRedis = ReserveRedis & {
	seckillRelease(...args: (string | number)[]): Promise<[number, number]>;
	seckillMark(...args: (string | number)[]): Promise<1 | 0 | -1>;
	seckillRestore(...args: (string | number)[]): Promise<[number, number]>;
	seckillFailed(...args: (string | number)[]): Promise<1 | 0>;
};

/** One activity as gomall-status shows it (SPEC invariant terms). */
export interface ActivityStatusRow {
	activity_id: number;
	product_id: number;
	armed: boolean;
	initial: number;
	redis_remaining: number;
	/** R reserved, P published, C claimed by the order writer, O ordered, F failed (lib/domain/seckill) */
	reservations: Record<ReservationState, number>;
	buyers: number;
	orders: number;
	closed: number;
	db_stock: number;
	consistent: boolean;
}

export interface ReconcileReport {
	activity_id: number;
	product_id: number;
	initial: number;
	redis: { remaining: number; reservations: number };
	db: { stock: number; live_orders: number };
	/** unconfirmed reservations (R) published again and confirmed now */
	republished: string[];
	/** confirmed reservations published again because the queue was empty, so had lost them */
	requeued: string[];
	/** unconfirmed reservations the broker still did not confirm: kept, tried again next run */
	unconfirmed: number;
	/** reservations whose message was dead-lettered: the operator's to replay or release */
	failed: number;
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

/** The activity's row as reconciliation reads it (with its product's name and image). */
export interface ReconcileActivityRow {
	id: number;
	arming_id: string;
	product_id: number;
	total_stock: number;
	seckill_price: string;
	limit_per_user: number;
	start_time: Date;
	end_time: Date;
	status: number;
	name: string | null;
	image_url: string | null;
}

/** One of the activity's orders as reconciliation reads it. */
export interface ReconcileOrderRow {
	order_no: string;
	status: number;
	user_id: number;
	seckill_seq: number;
	created_at: Date;
}

export interface InitParams {
	product_id: number;
	stock: number;
	seckill_price?: number;
	start_time?: Date;
	end_time?: Date;
	limit_per_user?: number;
}

/** A reservation whose message was dead-lettered, as the REPL lists it. */
export interface FailedReservation {
	order_no: string;
	user_id: number;
	reserved_at: Date;
	reason: string;
}

/** lua/seckill_release.lua's modes: what each may give back. */
export type ReleaseMode = "unconfirmed" | "failed" | "any";

export type Queued = { order_no: string; success: true; status: "queued"; message: string };

/** services/stock/arming.ts */
export interface ArmingMethods {
	armActivity(ctx: Context, p: InitParams): Promise<unknown>;
	armLocked(
		p: InitParams,
		product: Product,
		window: { start: number; end: number; price: string; limit: number }
	): Promise<Record<string, unknown>>;
	writeActivityInfo(arming: string, info: ActivityInfo): Promise<unknown>;
	activityFor(productId: number): Promise<ActivityMeta | null>;
	recheckSoldOut(): Promise<void>;
}

/** services/stock/reservation.ts */
export interface ReservationMethods {
	reject(result: string, key: CodeKey): Rejection;
	reserve(productId: number, userId: number): Promise<Rejection | Queued>;
	runReserve(
		arming: string,
		userId: number,
		orderNo: string,
		attempt?: number
	): Promise<[number, number, number, number]>;
	handOff(meta: ActivityMeta, userId: number, seq: number, orderNo: string): Promise<void>;
	queued(orderNo: string, handoff: "confirmed" | "unknown"): Queued;
	release(arming: string, orderNo: string, mode: ReleaseMode): Promise<number>;
	markMany(arming: string, orderNos: string[], state: "P" | "C" | "O"): Promise<(1 | 0 | -1)[]>;
	failedTransition(arming: string, orderNo: string, op: "fail" | "replay", reason: string): Promise<1 | 0>;
	failedReservations(activityId: number): Promise<FailedReservation[]>;
}

/** services/stock/listing.ts */
export interface ListingMethods {
	listActivities(): Promise<Record<string, unknown>[]>;
	seckillResult(
		productId: number,
		userId: number
	): Promise<{ status: "success" | "queued" | "failed"; order_no: string | null; reason?: string }>;
}

/** services/stock/reconciliation.ts */
export interface ReconciliationMethods {
	reconcileAll(activityId?: number): Promise<{ activities: ReconcileReport[] }>;
	scheduleReconcile(intervalMs: number): void;
	seckillQueueEmpty(): Promise<boolean>;
	reconcileActivity(activityId: number, queueEmpty?: boolean): Promise<ReconcileReport>;
	readReconcileActivity(activityId: number): Promise<ReconcileActivityRow>;
	readReconcileOrders(activityId: number): Promise<ReconcileOrderRow[]>;
	rebuildLostArming(activity: ReconcileActivityRow, report: ReconcileReport, price: string): Promise<void>;
	scanReservations(arming: string, onPage: (page: Reservation[], redisNowMs: number) => Promise<void>): Promise<void>;
	repairReservation(
		meta: ActivityMeta,
		r: Reservation,
		repair: ReservationRepair,
		report: ReconcileReport
	): Promise<void>;
	restoreLostReservations(
		arming: string,
		rows: ReconcileOrderRow[],
		held: Set<string>,
		report: ReconcileReport
	): Promise<void>;
	measureReconciled(arming: string, orders: Map<string, number>, report: ReconcileReport): Promise<void>;
	logReconciled(report: ReconcileReport): void;
	activityStatus(productId?: number): Promise<ActivityStatusRow[]>;
}

/** What reconciliation does with one Redis reservation (see reconcileActivity). */
export type ReservationRepair = "release_closed" | "mark_ordered" | "republish" | "requeue" | "failed" | null;

/** The stock actor's `this`: the mixins' members, its own fields, and every method group. */
export interface StockThis
	extends Service, DbThis, AmqpThis, ArmingMethods, ReservationMethods, ListingMethods, ReconciliationMethods {
	redis: SeckillRedis;
	publisher: ConfirmPublisher;
	orderNos: Pick<LeasedOrderNos, "next" | "stop">;
	/** products this node believes sold out (seckill.soldout / seckill.available / seckill.armed) */
	soldOut: Set<number>;
	/** product id -> its activity as last read from Redis, or null for a remembered miss */
	metas: Map<number, ActivityMeta | null>;
	timers: NodeJS.Timeout[];
	/** set in `started` when redis.wait_replicas > 0 */
	replicated: ReplicatedReserver | null;
}
