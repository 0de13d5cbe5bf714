import { Context } from "moleculer";
import { QueryTypes, Transaction } from "sequelize";
import { CodeKey } from "../../lib/contract/codes";
import { bizError } from "../../lib/contract/errors";
import { centsToDecimal, toCents } from "../../lib/domain/money";
import { Order, OrderRow, OrderStatus } from "../../lib/domain/order";
import { PRODUCT_ON_SHELF } from "../../lib/domain/product";
import { parseIdempotencyKey, requestHash } from "../../lib/storage/idempotency";
import { inTransaction } from "../../lib/storage/tx";
import type { Line, OrderMethods, OrderThis, PlaceKind, UserCtx } from "./types";

/** Which business codes a failed line maps to: a single order and a checkout speak differently. */
const FAILURES = {
	create: { offShelf: "PRODUCT_OFF_SHELF", soldOut: "PRODUCT_OUT_OF_STOCK", short: "PRODUCT_NOT_ENOUGH_STOCK" },
	checkout: { offShelf: "CART_PRODUCT_OFF_SHELF", soldOut: "CART_NOT_ENOUGH_STOCK", short: "CART_NOT_ENOUGH_STOCK" }
} as const satisfies Record<PlaceKind, Record<string, CodeKey>>;

/** The operation an Idempotency-Key's request hash names: the action, which has one route. */
const OPERATIONS = { create: "order.create", checkout: "order.checkout" } as const satisfies Record<PlaceKind, string>;

/** How many expired Idempotency-Keys one DELETE removes, and how many such DELETEs one purge runs at most. */
const PURGE_BATCH = 1000;
const PURGE_BATCHES = 100;

/**
 * Placing orders: one product (create) or the whole cart (checkout), stock guarded, in one
 * transaction with the cart lines they empty and the Idempotency-Key answer they store.
 */
export const writingMethods = {
	/** POST /api/order: one product. */
	createOrder(this: OrderThis, ctx: UserCtx<Line>) {
		const line = { product_id: ctx.params.product_id, quantity: ctx.params.quantity };
		return this.placeOnce(
			ctx,
			"create",
			async transaction => (await this.placeOrders(ctx.meta.user.id, [line], "create", transaction))[0],
			order => [order]
		);
	},

	/** POST /api/order/checkout: every line of the caller's cart becomes an order, and the cart is emptied. */
	checkoutCart(this: OrderThis, ctx: UserCtx) {
		const userId = ctx.meta.user.id;
		return this.placeOnce(
			ctx,
			"checkout",
			async transaction => {
				const lines = await this.takeCartLines(userId, transaction);
				const orders = await this.placeOrders(userId, lines, "checkout", transaction);
				return { orders, total_price: orders.reduce((sum, o) => sum + toCents(o.total_price), 0) / 100 };
			},
			answer => answer.orders
		);
	},

	/**
	 * Runs `place` in one transaction and answers what it returns; then, after the commit, what
	 * follows new orders (their close, metrics, events). With an Idempotency-Key (SPEC "Repeated
	 * requests"), the same user, key and request within 24 h answer the first answer and place
	 * nothing; the key with another request is refused (422). See lib/storage/idempotency.ts for
	 * what is stored (successes only) and why.
	 */
	async placeOnce<T>(
		this: OrderThis,
		ctx: UserCtx,
		kind: PlaceKind,
		place: (transaction: Transaction) => Promise<T>,
		ordersOf: (answer: T) => Order[]
	): Promise<T> {
		const key = parseIdempotencyKey(ctx.meta.idempotency_key);
		let answer: T;
		if (key === undefined) answer = await inTransaction(this.db(), place);
		else {
			const request = { userId: ctx.meta.user.id, key, hash: requestHash(OPERATIONS[kind], ctx.params) };
			const outcome = await this.idempotencyKeys.once(request, place, a => a);
			if (outcome.replayed) return outcome.answer as T;
			answer = outcome.result;
		}
		await this.ordersPlaced(ctx, kind, ordersOf(answer));
		return answer;
	},

	/**
	 * Reads and empties the caller's cart inside the order's transaction. The cart table is the
	 * cart actor's, but it lives in this database, and only here can taking the lines be atomic
	 * with the orders they become: the rows are locked (SELECT … FOR UPDATE) and deleted in the
	 * orders' transaction. A concurrent checkout of the same cart waits on the lock, then finds
	 * the cart empty (50001); a checkout that fails rolls back and leaves the cart as it was.
	 * (Reading the lines through cart.lines, outside the transaction and unlocked, let ten
	 * double-clicks order one cart ten times: failure mode 9.)
	 */
	async takeCartLines(this: OrderThis, userId: number, transaction: Transaction): Promise<Line[]> {
		const db = this.db();
		const rows = (await db.query(
			"SELECT id, product_id, quantity FROM cart_items WHERE user_id = ? ORDER BY product_id FOR UPDATE",
			{ replacements: [userId], type: QueryTypes.SELECT, transaction }
		)) as { id: number; product_id: number; quantity: number }[];
		if (!rows.length) throw bizError("CART_EMPTY");
		const deleted = (await db.query("DELETE FROM cart_items WHERE user_id = :user AND id IN (:ids)", {
			replacements: { user: userId, ids: rows.map(r => r.id) },
			type: QueryTypes.BULKDELETE,
			transaction
		})) as unknown as number;
		// Locked rows cannot go away; if they did, this rolls back rather than order lines twice.
		if (deleted !== rows.length) throw new Error(`checkout deleted ${deleted} of the ${rows.length} locked cart lines`);
		return rows.map(r => ({ product_id: Number(r.product_id), quantity: r.quantity }));
	},

	/**
	 * All lines become orders in the caller's transaction, or none does. Stock moves by a guarded
	 * `UPDATE … WHERE stock >= n` whose affected-row count is the verdict: no read-modify-
	 * write, no interleaving can oversell (failure mode 2). Products are locked in id order
	 * so two checkouts cannot deadlock on each other's lines.
	 */
	async placeOrders(this: OrderThis, userId: number, lines: Line[], kind: PlaceKind, transaction: Transaction) {
		const codes = FAILURES[kind];
		const sorted = [...lines].sort((a, b) => a.product_id - b.product_id);
		const timeoutUs = this.payTimeoutMs() * 1000;
		const db = this.db();
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
			const [, affected] = (await db.query("UPDATE products SET stock = stock - :n WHERE id = :id AND stock >= :n", {
				replacements: { n: line.quantity, id: line.product_id },
				type: QueryTypes.UPDATE,
				transaction
			})) as unknown as [unknown, number];
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
		// Read in the transaction: the answer (which an Idempotency-Key stores) commits with the orders.
		const rows = (await db.query("SELECT * FROM orders WHERE order_no IN (:nos) ORDER BY id", {
			replacements: { nos: made },
			type: QueryTypes.SELECT,
			transaction
		})) as OrderRow[];
		return rows.map(r => this.toOrder(r));
	},

	/** After the commit of new orders: their close is scheduled, they are counted and announced. */
	async ordersPlaced(this: OrderThis, ctx: Context, kind: PlaceKind, orders: Order[]) {
		await this.scheduleClose(orders.map(o => o.order_no));
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
		}
		// One event for all the products whose stock moved: their cached details are dropped, only theirs.
		ctx.emit("product.stock.changed", { product_ids: [...new Set(orders.map(o => o.product_id))] });
	},

	/** Deletes the expired Idempotency-Keys (a lookup ignores them anyway); returns how many. */
	async purgeIdempotencyKeys(this: OrderThis) {
		let purged = 0;
		for (let i = 0; i < PURGE_BATCHES; i++) {
			const n = await this.idempotencyKeys.purgeExpired(PURGE_BATCH);
			purged += n;
			if (n < PURGE_BATCH) break;
		}
		return purged;
	}
} satisfies Partial<OrderMethods>;
