import type { Context } from "moleculer";
import { QueryTypes, UniqueConstraintError } from "sequelize";
import { bizError } from "../../lib/contract/errors";
import { centsToDecimal, toCents } from "../../lib/domain/money";
import { ActivityStatus } from "../../lib/domain/order";
import type { Product } from "../../lib/domain/product";
import { activityKeys, newArmingId, productActivityKey } from "../../lib/domain/seckill";
import { RedisLease, withLease } from "../../lib/storage/lease";
import type { ActivityInfo, ActivityMeta, ArmingMethods, InitParams, StockThis } from "./types";

/** How long an arming may hold its product's lease (it is renewed while it runs). */
const ARMING_LEASE_MS = 30000;
const armingLeaseKey = (productId: number) => `seckill:arming:${productId}`;

/** How stale a node's copy of an activity's window may be; re-arming also clears it at once. */
const META_TTL_MS = 5000;
const DEFAULT_DURATION_MS = 3600_000;

/** Arming a flash sale: its row, its Redis info hash, and each node's cached view of it. */
export const armingMethods = {
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
		// One arming of a product at a time across the cluster: two at once would each retire
		// what they saw and both go live. The others are refused at once (409), not queued: an
		// admin's double click must not arm twice. The database's unique live key backs this.
		const lease = new RedisLease(this.redis, armingLeaseKey(p.product_id), newArmingId(), ARMING_LEASE_MS);
		const armed = await withLease(lease, () => this.armLocked(p, product, { start, end, price, limit }));
		if (!armed) throw bizError("SECKILL_ARMING_BUSY");
		return armed;
	},

	async armLocked(
		this: StockThis,
		p: InitParams,
		product: Product,
		{ start, end, price, limit }: { start: number; end: number; price: string; limit: number }
	) {
		const db = this.adapter.db;
		const arming = newArmingId();
		let previous: { arming_id: string }[] = [];
		const id = await db
			.transaction(async transaction => {
				// Read under the rows' locks: what this transaction retires is what was live.
				previous = (await db.query(
					`SELECT arming_id FROM seckill_activities WHERE product_id = ? AND status = ${ActivityStatus.LIVE} FOR UPDATE`,
					{ replacements: [p.product_id], type: QueryTypes.SELECT, transaction }
				)) as { arming_id: string }[];
				await db.query(
					`UPDATE seckill_activities SET status = ${ActivityStatus.RETIRED} WHERE product_id = ? AND status = ${ActivityStatus.LIVE}`,
					{ replacements: [p.product_id], transaction }
				);
				const [insertId] = (await db.query(
					`INSERT INTO seckill_activities (arming_id, product_id, seckill_price, total_stock, stock, limit_per_user, start_time, end_time, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ${ActivityStatus.LIVE})`,
					{
						replacements: [arming, p.product_id, price, p.stock, p.stock, limit, new Date(start), new Date(end)],
						transaction,
						type: QueryTypes.INSERT
					}
				)) as unknown as [number];
				return Number(insertId);
			})
			.catch(err => {
				if (err instanceof UniqueConstraintError) throw bizError("SECKILL_ARMING_BUSY");
				throw err;
			});
		// Three steps, not one MULTI: on a Redis Cluster the old armings, the new one and the
		// product's pointer live in different slots. The order keeps every moment safe: the old
		// sale stops first, then the new one exists, and only then do buyers find it (between
		// the first and the last step a buyer is told "no activity" for a few milliseconds).
		await Promise.all(previous.map(old => this.redis.hset(activityKeys(old.arming_id).info, "active", "0")));
		await this.writeActivityInfo(arming, {
			stock: p.stock,
			start,
			end,
			limit,
			active: true,
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
	 * Writes an arming's Redis info hash, all ten fields in one HSET: when it is armed, and
	 * when reconciliation rebuilds an arming Redis lost.
	 */
	writeActivityInfo(this: StockThis, arming: string, info: ActivityInfo) {
		return this.redis.hset(activityKeys(arming).info, {
			stock: info.stock,
			start: info.start,
			end: info.end,
			limit: info.limit,
			active: info.active ? 1 : 0,
			activity_id: info.activity_id,
			product_id: info.product_id,
			price: info.price,
			name: info.name,
			image: info.image
		});
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

	/** A sold-out flag whose stock came back (a release raced the broadcast) is dropped. */
	async recheckSoldOut(this: StockThis) {
		for (const pid of this.soldOut) {
			const meta = await this.activityFor(pid);
			if (!meta) continue;
			const left = Number(await this.redis.hget(activityKeys(meta.arming).info, "stock"));
			if (left > 0) this.soldOut.delete(pid);
		}
	}
} satisfies ArmingMethods;
