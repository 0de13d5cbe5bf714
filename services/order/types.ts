import type { Context, Service } from "moleculer";
import type { Sequelize, Transaction } from "sequelize";
import type { ConfirmPublisher, PermanentMessageError, QueueConsumer } from "../../lib/messaging/amqp";
import type { AuthUser } from "../../lib/auth/jwt";
import type { Paged } from "../../lib/contract/paging";
import type { LeasedOrderNos } from "../../lib/domain/order-no";
import type { SeckillOrderMessage } from "../../lib/domain/seckill";
import type { ResultItem } from "../../lib/domain/seckill-results";
import type { CloseResult, Order, OrderRow } from "../../lib/domain/order";
import type { IdempotencyKeys } from "../../lib/storage/idempotency";
import type {
	NotifyHeaders,
	NotifyVerdict,
	PaymentProvider,
	ProviderRefund,
	ProviderTransaction
} from "../../lib/domain/payment";
import type { AmqpThis } from "../../mixins/amqp.mixin";
import type { DbThis } from "../../mixins/db.mixin";
import type { RedisThis } from "../../mixins/redis.mixin";

/** One product and how many of it: a line of a single order or of a checkout. */
export interface Line {
	product_id: number;
	quantity: number;
}

/** Which way an order is placed: a single order and a checkout speak differently (FAILURES in writing.ts). */
export type PlaceKind = "create" | "checkout";

/** `idempotency_key`: the request's Idempotency-Key header, as the gateway copied it (not yet checked). */
export type UserCtx<P = unknown> = Context<P, { user: AuthUser; idempotency_key?: unknown }>;

/** What a checkout answers. */
export interface Checkout {
	orders: Order[];
	total_price: number;
}

export type DlqName = "seckill" | "close";

/** What pay answers with a provider: the prepay the buyer completes in the provider's app. */
export interface PrepayAnswer {
	order_no: string;
	code_url: string;
	expires_at: Date;
}

/** What refund answers: the order (status 6) and its refund at the provider. */
export type RefundAnswer = Order & { refund: { out_refund_no: string; status: string } | null };

/** What the gateway sends back for a provider's notify: 204, or 4xx with WeChat's FAIL and the reason. */
export interface NotifyAnswer {
	status: number;
	message?: string;
	verdict?: NotifyVerdict;
}

/** A refunds row. */
export interface RefundRow {
	out_refund_no: string;
	provider: string;
	status: string;
	amount_fen: number;
	refund_id: string | null;
}

/** Every method of the order actor; `methods` in order.service.ts must supply all of them. */
export interface OrderMethods {
	// common.ts
	db(): Sequelize;
	toOrder(row: OrderRow): Order;
	payTimeoutMs(): number;
	lockOrder(orderNo: string, t: Transaction): Promise<(OrderRow & { expired: number }) | undefined>;
	// reading.ts
	listOrders(userId: number, page: number, pageSize: number, status?: number): Promise<Paged<Order>>;
	findOrder(user: AuthUser, orderNo: string): Promise<Order>;
	// writing.ts
	createOrder(ctx: UserCtx<Line>): Promise<Order>;
	checkoutCart(ctx: UserCtx): Promise<Checkout>;
	placeOnce<T>(
		ctx: UserCtx,
		kind: PlaceKind,
		place: (t: Transaction) => Promise<T>,
		ordersOf: (answer: T) => Order[]
	): Promise<T>;
	takeCartLines(userId: number, transaction: Transaction): Promise<Line[]>;
	placeOrders(userId: number, lines: Line[], kind: PlaceKind, transaction: Transaction): Promise<Order[]>;
	ordersPlaced(ctx: Context, kind: PlaceKind, orders: Order[]): Promise<void>;
	purgeIdempotencyKeys(): Promise<number>;
	// payment.ts
	payOrder(userId: number, orderNo: string, payType: number): Promise<Order | PrepayAnswer>;
	assertPayable(order: OrderRow & { expired: number }): void;
	prepayOrder(userId: number, orderNo: string): Promise<PrepayAnswer>;
	validPrepay(orderNo: string, t?: Transaction, marginS?: number): Promise<PrepayAnswer | null>;
	paymentNotify(headers: NotifyHeaders, bodyBase64: string): Promise<NotifyAnswer>;
	applyTransaction(tx: ProviderTransaction, source: "notify" | "query"): Promise<NotifyVerdict>;
	settleBeforeClose(orderNo: string): Promise<"paid" | "open">;
	refundOrder(userId: number, orderNo: string): Promise<RefundAnswer>;
	refundRow(orderNo: string, t?: Transaction): Promise<RefundRow | null>;
	sendRefund(orderNo: string): Promise<RefundRow | null>;
	resendRefunds(limit?: number): Promise<number>;
	settleRefund(r: ProviderRefund): Promise<NotifyVerdict>;
	// closing.ts
	closeOrder(orderNo: string, opts: { userId?: number; reason: "cancel" | "timeout" }): Promise<CloseResult>;
	scheduleClose(orderNos: string[]): Promise<void>;
	mayClose(orderNo: string, opts: { userId?: number; reason: "cancel" | "timeout" }): Promise<boolean>;
	sweepExpired(limit?: number): Promise<number>;
	// drain.ts
	createSeckillOrder(m: SeckillOrderMessage): Promise<void>;
	whyUnwritable(m: SeckillOrderMessage, transaction?: Transaction): Promise<string | null>;
	seckillBatchKey(body: unknown): string | null;
	createSeckillOrders(messages: SeckillOrderMessage[]): Promise<(boolean | PermanentMessageError)[]>;
	seckillDeadLettered(body: unknown, reason: string): Promise<void>;
	writeSeckillGroup(messages: SeckillOrderMessage[]): Promise<SeckillOrderMessage[]>;
	announceResults(items: ResultItem[]): void;
	seckillOrdersWritten(written: SeckillOrderMessage[]): Promise<void>;
	// dead-letters.ts
	deadLetters(
		queue: DlqName,
		limit: number,
		replay: boolean
	): Promise<{ queue: string; messages: unknown[]; replayed: number }>;
}

/** The order actor's `this`: Moleculer's service, the mixins' members, its own fields and methods. */
export interface OrderThis extends Service, DbThis, AmqpThis, RedisThis, OrderMethods {
	orderNos: LeasedOrderNos;
	publisher: ConfirmPublisher;
	delayQueue: string;
	sweepTimer: NodeJS.Timeout | null;
	idempotencyKeys: IdempotencyKeys;
	purgeTimer: NodeJS.Timeout | null;
	consumers: QueueConsumer[];
	/** null: pay.provider direct (paying completes at once) */
	payProvider: PaymentProvider | null;
}
