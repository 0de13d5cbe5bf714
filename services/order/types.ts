import type { Context, Service } from "moleculer";
import type { Sequelize, Transaction } from "sequelize";
import type { ConfirmPublisher, QueueConsumer } from "../../lib/messaging/amqp";
import type { AuthUser } from "../../lib/auth/jwt";
import type { Paged } from "../../lib/contract/paging";
import type { LeasedOrderNos } from "../../lib/domain/order-no";
import type { SeckillOrderMessage } from "../../lib/domain/seckill";
import type { CloseResult, Order, OrderRow } from "../../lib/domain/order";
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

export type UserCtx<P = unknown> = Context<P, { user: AuthUser }>;

export type DlqName = "seckill" | "close";

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
	checkoutCart(ctx: UserCtx): Promise<{ orders: Order[]; total_price: number }>;
	placeOrders(ctx: Context, userId: number, lines: Line[], kind: PlaceKind, cartLineIds?: number[]): Promise<Order[]>;
	// payment.ts
	payOrder(userId: number, orderNo: string, payType: number): Promise<Order>;
	// closing.ts
	closeOrder(orderNo: string, opts: { userId?: number; reason: "cancel" | "timeout" }): Promise<CloseResult>;
	scheduleClose(orderNos: string[]): Promise<void>;
	sweepExpired(limit?: number): Promise<number>;
	// drain.ts
	createSeckillOrder(m: SeckillOrderMessage): Promise<void>;
	whyUnwritable(m: SeckillOrderMessage, transaction?: Transaction): Promise<string | null>;
	createSeckillOrders(bodies: unknown[]): Promise<boolean[]>;
	seckillDeadLettered(body: unknown, reason: string): Promise<void>;
	writeSeckillGroup(messages: SeckillOrderMessage[]): Promise<void>;
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
	consumers: QueueConsumer[];
}
