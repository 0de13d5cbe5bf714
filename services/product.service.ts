import type { ActionSchema, Context, Service, ServiceSchema, ServiceSettingSchema } from "moleculer";
import { col, DataTypes, fn, Op, where, WhereOptions } from "sequelize";
import { getConfig } from "../config";
import { bizError } from "../lib/contract/errors";
import { pageParams, paged, Paged } from "../lib/contract/paging";
import { DbMixin, DbThis } from "../mixins/db.mixin";
import { isMoney } from "../lib/domain/money";
import { Product, PRODUCT_OFF_SHELF, PRODUCT_ON_SHELF } from "../lib/domain/product";
import { NEVER_RAN_ONLY } from "../lib/messaging/retry";

const MAX_PRICE = 9999999999.99;

const productFields = {
	name: { type: "string", min: 1, max: 128, trim: true },
	price: {
		type: "number",
		min: 0,
		max: MAX_PRICE,
		convert: true,
		custom: (v: number, errors: { type: string; actual: unknown }[]) => {
			if (typeof v === "number" && !isMoney(v)) errors.push({ type: "numberMoney", actual: v });
			return v;
		},
		messages: { numberMoney: "The '{field}' field must have at most two decimal places." }
	},
	stock: { type: "number", integer: true, min: 0, max: 2147483647, convert: true },
	description: { type: "string", max: 10000, optional: true },
	category: { type: "string", max: 64, optional: true, trim: true },
	image_url: { type: "string", max: 512, optional: true },
	status: { type: "enum", values: [PRODUCT_OFF_SHELF, PRODUCT_ON_SHELF], optional: true }
};

const optional = (schema: Record<string, any>) =>
	Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, { ...v, optional: true }]));

const idParam = { id: { type: "number", integer: true, positive: true, convert: true } };

/**
 * The detail cache: one key per product, `product.get:<id>`. Moleculer computes the key before
 * the params are validated, so by default a path's "7" and a call's 7 were two keys; the id is
 * keyed as the number the validator makes of it (Number(), as its convert does), so deleting one
 * key drops every cached copy of a product's detail.
 */
const detailCache = {
	keys: ["id"],
	ttl: getConfig().cache.product_ttl,
	keygen(this: KeyMaker, action: ActionSchema, opts: object, ctx: Context) {
		const id = Number((ctx.params as { id?: unknown } | undefined)?.id);
		return this.defaultKeygen({ name: String(action.name) }, opts, { params: { id } });
	}
};

/** Moleculer 0.15's cache-key functions as they are called (its typings still declare the action a name). */
interface KeyMaker {
	defaultKeygen(action: { name: string }, opts: object, ctx: { params: { id: number } }): string;
	getCacheKey(action: { name: string }, opts: object, ctx: { params: { id: number } }): string;
	del(key: string): Promise<unknown>;
}

interface ProductThis extends Service, DbThis {
	toProduct(row: Record<string, any>): Product;
	findProduct(id: number): Promise<Product>;
	forgetDetails(ids: number[]): Promise<void>;
	listProducts(q: {
		page: number;
		page_size: number;
		category?: string;
		keyword?: string;
		include_off_shelf?: boolean;
	}): Promise<Paged<Product>>;
}

function escapeLike(s: string): string {
	return s.replace(/[\\%_]/g, c => "\\" + c);
}

/** The product actor: the catalogue. Detail reads go through Moleculer's Redis cacher. */
const ProductService: ServiceSchema<ServiceSettingSchema, Record<string, any>, Record<string, any>, ProductThis> = {
	name: "product",
	mixins: [
		DbMixin({
			name: "product",
			define: {
				id: { type: DataTypes.BIGINT.UNSIGNED, primaryKey: true, autoIncrement: true },
				name: DataTypes.STRING(128),
				description: DataTypes.TEXT,
				price: DataTypes.DECIMAL(12, 2),
				stock: DataTypes.INTEGER,
				category: DataTypes.STRING(64),
				image_url: DataTypes.STRING(512),
				status: DataTypes.TINYINT,
				created_at: DataTypes.DATE(3),
				updated_at: DataTypes.DATE(3)
			},
			options: { tableName: "products", timestamps: false }
		})
	],

	actions: {
		list: {
			params: {
				$$strict: "remove",
				...pageParams,
				category: { type: "string", max: 64, optional: true },
				keyword: { type: "string", max: 64, optional: true }
			},
			handler(this: ProductThis, ctx: Context<any>) {
				return this.listProducts(ctx.params);
			}
		},

		get: {
			params: idParam,
			cache: detailCache,
			handler(this: ProductThis, ctx: Context<{ id: number }>) {
				return this.findProduct(ctx.params.id);
			}
		},

		/** Internal: several products at once (cart, checkout). Missing ids are simply absent. */
		getMany: {
			visibility: "public",
			params: { ids: { type: "array", items: { type: "number", integer: true, positive: true }, max: 1000 } },
			async handler(this: ProductThis, ctx: Context<{ ids: number[] }>) {
				if (!ctx.params.ids.length) return [];
				const rows = await this.model.findAll({ where: { id: ctx.params.ids }, raw: true });
				return rows.map(r => this.toProduct(r));
			}
		},

		/**
		 * Internal (the upload actor's orphan sweep): which of these stored file names some
		 * product's image_url points at, on or off shelf. A reference is the URL's last path
		 * segment, query and fragment aside, so `/uploads/<name>` and a CDN's
		 * `https://cdn/.../<name>?v=2` both count; matching more than needed only keeps a file.
		 */
		imageRefs: {
			visibility: "public",
			params: { names: { type: "array", max: 1000, items: { type: "string", min: 1, max: 255 } } },
			async handler(this: ProductThis, ctx: Context<{ names: string[] }>): Promise<string[]> {
				const { names } = ctx.params;
				if (!names.length) return [];
				const file = fn(
					"SUBSTRING_INDEX",
					fn("SUBSTRING_INDEX", fn("SUBSTRING_INDEX", col("image_url"), "?", 1), "#", 1),
					"/",
					-1
				);
				// One scan for the whole batch.
				const rows = (await this.model.findAll({
					attributes: [[file, "ref"]],
					where: where(file, { [Op.in]: names }),
					raw: true
				})) as unknown as { ref: string }[];
				// The column's collation may ignore case: answer in the caller's spelling.
				const found = new Set(rows.map(r => String(r.ref).toLowerCase()));
				return [...new Set(names)].filter(n => found.has(n.toLowerCase()));
			}
		},

		create: {
			auth: "admin",
			retryPolicy: { enabled: false },
			params: { $$strict: "remove", ...productFields },
			async handler(this: ProductThis, ctx: Context<Record<string, any>>) {
				const p = ctx.params;
				const created = await this.model.create({
					name: p.name,
					price: Number(p.price).toFixed(2),
					stock: p.stock,
					description: p.description ?? "",
					category: p.category ?? "",
					image_url: p.image_url ?? "",
					status: p.status ?? PRODUCT_ON_SHELF
				});
				const product = await this.findProduct(Number(created.get("id")));
				await this.clearCache();
				return product;
			}
		},

		update: {
			auth: "admin",
			params: { $$strict: "remove", ...idParam, ...optional(productFields) },
			async handler(this: ProductThis, ctx: Context<Record<string, any>>) {
				const { id, ...fields } = ctx.params;
				if (fields.price !== undefined) fields.price = Number(fields.price).toFixed(2);
				await this.findProduct(id);
				if (Object.keys(fields).length) await this.model.update(fields, { where: { id } });
				await this.clearCache();
				return this.findProduct(id);
			}
		},

		remove: {
			auth: "admin",
			// A retry after a timeout would answer "not found" for a remove that succeeded.
			retryPolicy: NEVER_RAN_ONLY,
			params: idParam,
			async handler(this: ProductThis, ctx: Context<{ id: number }>) {
				const n = await this.model.destroy({ where: { id: ctx.params.id } });
				if (!n) throw bizError("PRODUCT_NOT_FOUND");
				await this.clearCache();
				return { id: ctx.params.id };
			}
		}
	},

	events: {
		// Stock moved elsewhere (orders, closes): those products' cached details are stale, and
		// only theirs. An event naming no product clears the whole product cache, as before.
		"product.stock.changed"(this: ProductThis, ctx: Context<{ product_id?: unknown; product_ids?: unknown }>) {
			const { product_id, product_ids } = ctx.params ?? {};
			const ids = (Array.isArray(product_ids) ? product_ids : [product_id]).filter(
				(id): id is number => Number.isSafeInteger(id) && (id as number) > 0
			);
			return ids.length ? this.forgetDetails(ids) : this.clearCache();
		}
	},

	methods: {
		toProduct(row: Record<string, any>): Product {
			return {
				id: Number(row.id),
				name: row.name,
				description: row.description ?? "",
				price: Number(row.price),
				stock: Number(row.stock),
				category: row.category,
				image_url: row.image_url,
				status: Number(row.status),
				created_at: row.created_at,
				updated_at: row.updated_at
			};
		},

		/** Drops the cached details of these products, one DEL per key (Redis Cluster: keys in different slots). */
		async forgetDetails(this: ProductThis, ids: number[]) {
			const cacher = this.broker.cacher as unknown as KeyMaker | undefined;
			if (!cacher) return;
			const action = { name: `${this.fullName}.get` };
			await Promise.all(ids.map(id => cacher.del(cacher.getCacheKey(action, detailCache, { params: { id } }))));
		},

		async findProduct(this: ProductThis, id: number) {
			const row = await this.model.findByPk(id, { raw: true });
			if (!row) throw bizError("PRODUCT_NOT_FOUND");
			return this.toProduct(row);
		},

		async listProducts(this: ProductThis, q) {
			const where: WhereOptions = { status: PRODUCT_ON_SHELF };
			if (q.category) Object.assign(where, { category: q.category });
			if (q.keyword) Object.assign(where, { name: { [Op.like]: `%${escapeLike(q.keyword)}%` } });
			const { rows, count } = await this.model.findAndCountAll({
				where,
				order: [
					["created_at", "DESC"],
					["id", "DESC"]
				],
				limit: q.page_size,
				offset: (q.page - 1) * q.page_size,
				raw: true
			});
			return paged(
				rows.map(r => this.toProduct(r)),
				count,
				q.page,
				q.page_size
			);
		}
	}
};

export default ProductService;
