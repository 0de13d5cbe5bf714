import type { KeyObject } from "node:crypto";
import type { Context, Service } from "moleculer";
import type { CodeKey } from "../../lib/contract/codes";
import type { Rejection } from "../../lib/contract/errors";
import type { LeasedOrderNos } from "../../lib/domain/order-no";
import type {
	BatchedReserver,
	ReplicatedReserver,
	Reservation,
	ReservationState,
	ReserveRedis
} from "../../lib/domain/seckill";
import type { ConfirmPublisher } from "../../lib/messaging/amqp";
import type { AmqpThis } from "../../mixins/amqp.mixin";
import type { DbThis } from "../../mixins/db.mixin";
import type { Product } from "../../lib/domain/product";
import type { BucketTags, ReplicatedBuckets } from "../../lib/domain/seckill-buckets";
import type { QueuedItem, StreamState, TurnBatch } from "../../lib/domain/seckill-results";
import type { SoldOutFlags } from "../../lib/domain/sold-out-flags";

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
	/** stock buckets (lib/domain/seckill-buckets.ts): one entry per bucket, ONE_BUCKET when unbucketed */
	tags: BucketTags;
	/** sale tokens (README "Sale tokens"): POST /api/seckill needs one; captcha: fetching one needs an answer */
	require_token: boolean;
	captcha: boolean;
	loadedAt: number;
}

/** The fields of an arming's Redis info hash (KEYS[1] of the Lua scripts). */
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
	/** sale tokens; written as 1 or 0, absent (an arming from before them) read as off */
	require_token: boolean;
	captcha: boolean;
}

export type SeckillRedis = ReserveRedis & {
	seckillRelease(...args: (string | number)[]): Promise<[number, number]>;
	seckillMark(...args: (string | number)[]): Promise<(1 | 0 | -1)[]>;
	seckillRestore(...args: (string | number)[]): Promise<[number, number]>;
	seckillFailed(...args: (string | number)[]): Promise<1 | 0>;
	seckillLend(...args: (string | number)[]): Promise<[number, number, number]>;
	seckillBorrow(...args: (string | number)[]): Promise<[number, number, number]>;
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
	/** stock buckets: how many, and units lent by one bucket not yet reserved in another */
	buckets: number;
	lends: number;
	consistent: boolean;
}

export interface ReconcileReport {
	activity_id: number;
	product_id: number;
	initial: number;
	/** lends: stock buckets' units lent and not yet reserved (0 when unbucketed) */
	redis: { remaining: number; reservations: number; lends: number };
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
	/** stock buckets: stale lends given back to their bucket (no reservation was made of them) */
	lends_returned: number;
	/** stock buckets: stale lends whose reservation was made (the lend record forgotten) */
	lends_settled: number;
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
	buckets: number;
	bucket_tags: string;
	/** sale tokens (0 or 1) */
	require_token: number;
	captcha: number;
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
	/** stock buckets (default 1) */
	buckets?: number;
	/** sale tokens (default false); captcha implies require_token */
	require_token?: boolean;
	captcha?: boolean;
}

/** A reservation whose message was dead-lettered, as the REPL lists it. */
export interface FailedReservation {
	order_no: string;
	user_id: number;
	reserved_at: Date;
	reason: string;
	bucket: number;
}

/** lua/seckill_release.lua's modes: what each may give back. */
export type ReleaseMode = "unconfirmed" | "failed" | "any";

export type SaleTokenOut = { token: string; expires_at: Date };

export type Queued = { order_no: string; success: true; status: "queued"; message: string };

/** services/stock/arming.ts */
export interface ArmingMethods {
	armActivity(ctx: Context, p: InitParams): Promise<unknown>;
	armLocked(
		p: InitParams,
		product: Product,
		window: { start: number; end: number; price: string; limit: number; requireToken?: boolean; captcha?: boolean }
	): Promise<Record<string, unknown>>;
	writeActivityInfo(arming: string, info: ActivityInfo, tags?: BucketTags, bucket?: number): Promise<unknown>;
	activityFor(productId: number): Promise<ActivityMeta | null>;
	forgetActivity(productId: number): void;
	readActivity(productId: number): Promise<ActivityMeta | null>;
	recheckSoldOut(): Promise<void>;
	stillSoldOut(pids: number[]): Promise<number[]>;
}

/** A buyer's reservation in flight: the order_no its script was last sent with, and whether its caller was answered already. */
export interface ReserveAttempt {
	orderNo: string;
	late: boolean;
}

/** A confirmed reservation waiting for its P mark (bucket 0: the sale is not bucketed). */
export interface PublishedMark {
	arming: string;
	orderNo: string;
	bucket: number;
}

/** services/stock/reservation.ts */
export interface ReservationMethods {
	reject(result: string, key: CodeKey): Rejection;
	countResult(result: string): void;
	reserveWithin(msLeft: number, productId: number, userId: number, saleToken?: string): Promise<Rejection | Queued>;
	reserve(productId: number, userId: number, saleToken?: string, attempt?: ReserveAttempt): Promise<Rejection | Queued>;
	runReserve(
		arming: string,
		userId: number,
		orderNo: string,
		nonce?: string,
		attempt?: number
	): Promise<[number, number, number, number]>;

	handOff(meta: ActivityMeta, userId: number, seq: number, orderNo: string, bucket?: number): Promise<void>;
	queued(orderNo: string, handoff: "confirmed" | "unknown", productId?: number, userId?: number): Queued;
	release(arming: string, orderNo: string, mode: ReleaseMode, bucket?: number): Promise<number>;
	markMany(
		arming: string,
		orderNos: string[],
		state: "P" | "C" | "O",
		buckets?: readonly number[]
	): Promise<(1 | 0 | -1)[]>;
	markPublished(marks: PublishedMark[]): void;
	failedTransition(
		arming: string,
		orderNo: string,
		op: "fail" | "replay",
		reason: string,
		bucket?: number
	): Promise<1 | 0>;
	failedReservations(activityId: number): Promise<FailedReservation[]>;
}

/** services/stock/tokens.ts */
export interface TokenMethods {
	saleToken(productId: number, userId: number, captchaId?: string, captchaAnswer?: string): Promise<SaleTokenOut>;
	saleCaptcha(productId: number, userId: number): Promise<{ captcha_id: string; svg: string }>;
	openForTokens(productId: number): Promise<ActivityMeta>;
	tokenRefusal(meta: ActivityMeta, userId: number, saleToken: unknown): Rejection | string;
}

/** services/stock/listing.ts */
export interface ListingMethods {
	listActivities(): Promise<Record<string, unknown>[]>;
	seckillResult(
		productId: number,
		userId: number
	): Promise<{ status: "success" | "queued" | "failed"; order_no: string | null; reason?: string }>;
	seckillResults(productId: number, userIds: number[]): Promise<{ sold_out: boolean; states: StreamState[] }>;
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
	scanReservations(
		arming: string,
		onPage: (page: Reservation[], redisNowMs: number) => Promise<void>,
		bucket?: number
	): Promise<void>;
	repairReservation(
		meta: ActivityMeta,
		r: Reservation,
		repair: ReservationRepair,
		report: ReconcileReport,
		bucket?: number
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

/** services/stock/buckets.ts */
export interface BucketMethods {
	bucketTagsOf(arming: string): Promise<BucketTags>;
	bucketCall(
		slotTag: string,
		cmd: "seckillReserve" | "seckillLend" | "seckillBorrow",
		args: (string | number)[]
	): Promise<[[number, number, number], number]>;
	reserveInBuckets(
		meta: ActivityMeta,
		userId: number,
		orderNo: string,
		nonce?: string
	): Promise<[number, number, number, number, number]>;
	everyBucketEmpty(arming: string, tags: BucketTags): Promise<boolean>;
	bucketsStock(arming: string, tags: BucketTags): Promise<number>;
	locateBucket(arming: string, orderNo: string): Promise<number>;
	reconcileLends(arming: string, tags: BucketTags, report: ReconcileReport): Promise<void>;
	rebuildLostBuckets(
		activity: ReconcileActivityRow,
		tags: BucketTags,
		report: ReconcileReport,
		price: string
	): Promise<void>;
	lendsInFlight(arming: string, tags: BucketTags): Promise<number>;
}

/** What reconciliation does with one Redis reservation (see reconcileActivity). */
export type ReservationRepair = "release_closed" | "mark_ordered" | "republish" | "requeue" | "failed" | null;

/** The stock actor's `this`: the mixins' members, its own fields, and every method group. */
export interface StockThis
	extends
		Service,
		DbThis,
		AmqpThis,
		ArmingMethods,
		ReservationMethods,
		ListingMethods,
		ReconciliationMethods,
		BucketMethods,
		TokenMethods {
	redis: SeckillRedis;
	publisher: ConfirmPublisher;
	orderNos: Pick<LeasedOrderNos, "next" | "stop">;
	/** products this node believes sold out (seckill.soldout / seckill.available / seckill.armed) */
	soldOut: SoldOutFlags;
	/** product id -> its activity as last read from Redis, or null for a remembered miss */
	metas: Map<number, ActivityMeta | null>;
	/** product id -> the read of its activity on its way (activityFor: one for every request that misses) */
	metaReads: Map<number, Promise<ActivityMeta | null>>;
	/** stock.seckill's answers on this node by result (the registry's family also counts a gateway's here) */
	served: Record<string, number>;
	timers: NodeJS.Timeout[];
	/** set in `started` when redis.wait_replicas > 0 */
	replicated: ReplicatedReserver | null;
	/** otherwise: a tick's reservations of an unbucketed sale in one script call (set in `started`) */
	batchedReserver: BatchedReserver;
	/** stock buckets: the same, for every script of a bucketed sale (set with `replicated`) */
	replicatedBuckets: ReplicatedBuckets | null;
	/** stock buckets: arming -> its tags (they never change; read once per node from the row) */
	bucketTagCache: Map<string, BucketTags>;
	/** sale tokens: the MAC key (lib/domain/sale-token.ts), derived once from jwt.secret */
	saleTokenKey: KeyObject;
	/** sale tokens: the captcha answers' key, derived once from jwt.secret */
	captchaKey: KeyObject;
	/** the turn's won reservations, broadcast together to the result streams (seckill.queued) */
	queuedBatch: TurnBatch<QueuedItem>;
	/** the turn's confirmed reservations, marked P together (markPublished) */
	publishedMarks: TurnBatch<PublishedMark>;
}
