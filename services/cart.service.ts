import type { Context, Service, ServiceSchema, ServiceSettingSchema } from "moleculer";
import { DataTypes, QueryTypes } from "sequelize";
import { bizError } from "../lib/contract/errors";
import { AuthUser } from "../lib/auth/jwt";
import { toCents, fromCents } from "../lib/domain/money";
import { DbMixin, DbThis } from "../mixins/db.mixin";
import { Product, PRODUCT_ON_SHELF } from "../lib/domain/product";
import { NEVER_RAN_ONLY } from "../lib/messaging/retry";

export const MAX_LINE_QUANTITY = 999;

export interface CartItem {
	id: number;
	product_id: number;
	product_name: string;
	price: number;
	/** The same as price: the Go version's web client reads the line's price under this name. */
	product_price: number;
	product_image: string;
	quantity: number;
	sub_total: number;
}

interface CartLineRow {
	id: number;
	product_id: number;
	quantity: number;
}

type UserCtx<P = unknown> = Context<P, { user: AuthUser }>;

interface CartThis extends Service, DbThis {
	productFor(ctx: Context, productId: number): Promise<Product>;
	setLine(
		ctx: UserCtx,
		productId: number,
		quantity: number,
		mode: "add" | "set"
	): Promise<{ product_id: number; quantity: number }>;
	listCart(ctx: UserCtx): Promise<{ items: CartItem[]; total_count: number; total_price: number }>;
}

const productId = { type: "number", integer: true, positive: true, convert: true };
const quantity = { type: "number", integer: true, min: 1, max: MAX_LINE_QUANTITY, convert: true };

/** The cart actor: one line per (user, product); stock and shelf are checked on every change. */
const CartService: ServiceSchema<ServiceSettingSchema, Record<string, any>, Record<string, any>, CartThis> = {
	name: "cart",
	mixins: [
		DbMixin({
			name: "cart_item",
			define: {
				id: { type: DataTypes.BIGINT.UNSIGNED, primaryKey: true, autoIncrement: true },
				user_id: DataTypes.BIGINT.UNSIGNED,
				product_id: DataTypes.BIGINT.UNSIGNED,
				quantity: DataTypes.INTEGER,
				created_at: DataTypes.DATE(3),
				updated_at: DataTypes.DATE(3)
			},
			options: { tableName: "cart_items", timestamps: false }
		})
	],

	actions: {
		add: {
			auth: "user",
			// Adds to the line, so a replay after a lost reply would add twice: retried only after
			// errors proving it never ran (lib/messaging/retry.ts, retryable()).
			retryPolicy: NEVER_RAN_ONLY,
			params: { $$strict: "remove", product_id: productId, quantity },
			handler(this: CartThis, ctx: UserCtx<{ product_id: number; quantity: number }>) {
				return this.setLine(ctx, ctx.params.product_id, ctx.params.quantity, "add");
			}
		},

		list: {
			auth: "user",
			handler(this: CartThis, ctx: UserCtx) {
				return this.listCart(ctx);
			}
		},

		update: {
			auth: "user",
			params: { $$strict: "remove", product_id: productId, quantity },
			handler(this: CartThis, ctx: UserCtx<{ product_id: number; quantity: number }>) {
				return this.setLine(ctx, ctx.params.product_id, ctx.params.quantity, "set");
			}
		},

		remove: {
			auth: "user",
			params: { $$strict: "remove", product_id: productId },
			async handler(this: CartThis, ctx: UserCtx<{ product_id: number }>) {
				const n = await this.model.destroy({ where: { user_id: ctx.meta.user.id, product_id: ctx.params.product_id } });
				if (!n) throw bizError("CART_ITEM_NOT_FOUND");
				return { product_id: ctx.params.product_id };
			}
		},

		clear: {
			auth: "user",
			async handler(this: CartThis, ctx: UserCtx) {
				const removed = await this.model.destroy({ where: { user_id: ctx.meta.user.id } });
				return { removed };
			}
		}
	},

	methods: {
		async productFor(ctx: Context, id: number): Promise<Product> {
			const product = (await ctx.call("product.get", { id })) as Product;
			if (product.status !== PRODUCT_ON_SHELF) throw bizError("CART_PRODUCT_OFF_SHELF");
			return product;
		},

		/**
		 * Adds to or sets a line. The upsert takes the row lock, so two concurrent adds of the
		 * same product serialise and the limits are checked against the sum.
		 */
		async setLine(this: CartThis, ctx: UserCtx, productId: number, qty: number, mode: "add" | "set") {
			const product = await this.productFor(ctx, productId);
			const userId = ctx.meta.user.id;
			const db = this.adapter.db;
			return db.transaction(async transaction => {
				if (mode === "add") {
					await db.query(
						"INSERT INTO cart_items (user_id, product_id, quantity) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE quantity = quantity + VALUES(quantity)",
						{ replacements: [userId, productId, qty], transaction }
					);
				} else {
					const [, affected] = (await db.query(
						"UPDATE cart_items SET quantity = ? WHERE user_id = ? AND product_id = ?",
						{
							replacements: [qty, userId, productId],
							transaction,
							type: QueryTypes.UPDATE
						}
					)) as unknown as [unknown, number];
					if (!affected) {
						const exists = await db.query("SELECT 1 FROM cart_items WHERE user_id = ? AND product_id = ?", {
							replacements: [userId, productId],
							transaction,
							type: QueryTypes.SELECT
						});
						if (!exists.length) throw bizError("CART_ITEM_NOT_FOUND");
					}
				}
				const [row] = (await db.query("SELECT quantity FROM cart_items WHERE user_id = ? AND product_id = ?", {
					replacements: [userId, productId],
					transaction,
					type: QueryTypes.SELECT
				})) as { quantity: number }[];
				if (row.quantity > MAX_LINE_QUANTITY)
					throw bizError("BAD_REQUEST", null, `a cart line holds at most ${MAX_LINE_QUANTITY}`);
				if (row.quantity > product.stock)
					throw bizError("CART_NOT_ENOUGH_STOCK", { product_id: productId, stock: product.stock });
				return { product_id: productId, quantity: row.quantity };
			});
		},

		async listCart(this: CartThis, ctx: UserCtx) {
			const lines = (await this.model.findAll({
				where: { user_id: ctx.meta.user.id },
				order: [
					["created_at", "ASC"],
					["id", "ASC"]
				],
				raw: true
			})) as unknown as CartLineRow[];
			const products = lines.length
				? ((await ctx.call("product.getMany", { ids: lines.map(l => Number(l.product_id)) })) as Product[])
				: [];
			const byId = new Map(products.map(p => [p.id, p]));
			const items: CartItem[] = [];
			let count = 0;
			let totalCents = 0;
			for (const line of lines) {
				const p = byId.get(Number(line.product_id));
				if (!p) continue; // the product was deleted; the line is dropped below
				const sub = toCents(p.price) * line.quantity;
				count += line.quantity;
				totalCents += sub;
				items.push({
					id: Number(line.id),
					product_id: p.id,
					product_name: p.name,
					price: p.price,
					product_price: p.price,
					product_image: p.image_url,
					quantity: line.quantity,
					sub_total: fromCents(sub)
				});
			}
			const gone = lines.filter(l => !byId.has(Number(l.product_id))).map(l => l.id);
			if (gone.length) await this.model.destroy({ where: { id: gone } });
			return { items, total_count: count, total_price: fromCents(totalCents) };
		}
	}
};

export default CartService;
