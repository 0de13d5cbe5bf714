import { Context } from "moleculer";
import { QueryTypes } from "sequelize";
import { CodeKey } from "../../lib/contract/codes";
import { bizError } from "../../lib/contract/errors";
import { centsToDecimal, toCents } from "../../lib/domain/money";
import { OrderRow, OrderStatus } from "../../lib/domain/order";
import { PRODUCT_ON_SHELF } from "../../lib/domain/product";
import { inTransaction } from "../../lib/storage/tx";
import type { Line, OrderMethods, OrderThis, PlaceKind, UserCtx } from "./types";

/** Which business codes a failed line maps to: a single order and a checkout speak differently. */
const FAILURES = {
	create: { offShelf: "PRODUCT_OFF_SHELF", soldOut: "PRODUCT_OUT_OF_STOCK", short: "PRODUCT_NOT_ENOUGH_STOCK" },
	checkout: { offShelf: "CART_PRODUCT_OFF_SHELF", soldOut: "CART_NOT_ENOUGH_STOCK", short: "CART_NOT_ENOUGH_STOCK" }
} as const satisfies Record<PlaceKind, Record<string, CodeKey>>;

/** Placing orders: one product (create) or the whole cart (checkout), stock guarded in the same transaction. */
export const writingMethods = {
	/** Every line of the caller's cart becomes an order; placeOrders deletes those cart lines with them. */
	async checkoutCart(this: OrderThis, ctx: UserCtx) {
		const lines = (await ctx.call("cart.lines", { user_id: ctx.meta.user.id })) as (Line & { id: number })[];
		if (!lines.length) throw bizError("CART_EMPTY");
		const orders = await this.placeOrders(
			ctx,
			ctx.meta.user.id,
			lines,
			"checkout",
			lines.map(l => l.id)
		);
		return { orders, total_price: orders.reduce((sum, o) => sum + toCents(o.total_price), 0) / 100 };
	},

	/**
	 * All lines become orders in one transaction, or none does. Stock moves by a guarded
	 * `UPDATE … WHERE stock >= n` whose affected-row count is the verdict: no read-modify-
	 * write, no interleaving can oversell (failure mode 2). Products are locked in id order
	 * so two checkouts cannot deadlock on each other's lines.
	 */
	async placeOrders(
		this: OrderThis,
		ctx: Context,
		userId: number,
		lines: Line[],
		kind: keyof typeof FAILURES,
		cartLineIds?: number[]
	) {
		const codes = FAILURES[kind];
		const sorted = [...lines].sort((a, b) => a.product_id - b.product_id);
		const timeoutUs = this.payTimeoutMs() * 1000;
		const db = this.db();
		const orderNos = await inTransaction(db, async transaction => {
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
			if (cartLineIds?.length) {
				await db.query("DELETE FROM cart_items WHERE user_id = :user AND id IN (:ids)", {
					replacements: { user: userId, ids: cartLineIds },
					transaction
				});
			}
			return made;
		});

		const rows = (await db.query("SELECT * FROM orders WHERE order_no IN (:nos) ORDER BY id", {
			replacements: { nos: orderNos },
			type: QueryTypes.SELECT
		})) as OrderRow[];
		const orders = rows.map(r => this.toOrder(r));
		await this.scheduleClose(orderNos);
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
			ctx.emit("product.stock.changed", { product_id: o.product_id });
		}
		return orders;
	}
} satisfies Partial<OrderMethods>;
