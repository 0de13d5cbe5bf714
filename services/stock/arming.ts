import type { Context } from "moleculer";
import { QueryTypes, UniqueConstraintError } from "sequelize";
import { bizError } from "../../lib/contract/errors";
import { centsToDecimal, toCents } from "../../lib/domain/money";
import { ActivityStatus } from "../../lib/domain/order";
import type { Product } from "../../lib/domain/product";
import { activityKeys, newArmingId, productActivityKey } from "../../lib/domain/seckill";
import {
	BUCKETS_PER_MASTER,
	bucketKeys,
	bucketShare,
	BucketTags,
	chooseBucketTags,
	formatBucketTags,
	maxBuckets,
	ONE_BUCKET,
	parseBucketTags
} from "../../lib/domain/seckill-buckets";
import { RedisLease, withLease } from "../../lib/storage/lease";
import { inTransaction } from "../../lib/storage/tx";
import { CLOCK_SLACK_MS } from "./reservation";
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
		// A captcha is how a token is earned: asking for one asks for tokens (README "Sale tokens").
		const captcha = p.captcha === true;
		const requireToken = p.require_token === true || captcha;
		// More buckets than BUCKETS_PER_MASTER per master only adds round trips on the same cores.
		const most = maxBuckets(this.redis);
		if ((p.buckets ?? 1) > most)
			throw bizError(
				"BAD_REQUEST",
				[{ field: "buckets", message: `at most ${most} on this Redis (${BUCKETS_PER_MASTER} per master)` }],
				"validation failed"
			);
		// One arming of a product at a time across the cluster: two at once would each retire
		// what they saw and both go live. The others are refused at once (409), not queued: an
		// admin's double click must not arm twice. The database's unique live key backs this.
		const lease = new RedisLease(this.redis, armingLeaseKey(p.product_id), newArmingId(), ARMING_LEASE_MS);
		const armed = await withLease(lease, () =>
			this.armLocked(p, product, { start, end, price, limit, requireToken, captcha })
		);
		if (!armed) throw bizError("SECKILL_ARMING_BUSY");
		return armed;
	},

	async armLocked(
		this: StockThis,
		p: InitParams,
		product: Product,
		{
			start,
			end,
			price,
			limit,
			requireToken = false,
			captcha = false
		}: { start: number; end: number; price: string; limit: number; requireToken?: boolean; captcha?: boolean }
	) {
		const db = this.adapter.db;
		const arming = newArmingId();
		const tags = chooseBucketTags(this.redis, arming, p.buckets ?? 1);
		let previous: { arming_id: string; buckets: number; bucket_tags: string }[] = [];
		// A deadlock victim runs again (inTransaction), as every other transaction on the
		// activities table does, rather than answering the admin 500.
		const id = await inTransaction(db, async transaction => {
			// Read under the rows' locks: what this transaction retires is what was live.
			previous = (await db.query(
				`SELECT arming_id, buckets, bucket_tags FROM seckill_activities WHERE product_id = ? AND status = ${ActivityStatus.LIVE} FOR UPDATE`,
				{ replacements: [p.product_id], type: QueryTypes.SELECT, transaction }
			)) as { arming_id: string; buckets: number; bucket_tags: string }[];
			await db.query(
				`UPDATE seckill_activities SET status = ${ActivityStatus.RETIRED} WHERE product_id = ? AND status = ${ActivityStatus.LIVE}`,
				{ replacements: [p.product_id], transaction }
			);
			const [insertId] = (await db.query(
				`INSERT INTO seckill_activities (arming_id, product_id, seckill_price, total_stock, stock, limit_per_user, start_time, end_time, status, buckets, bucket_tags, require_token, captcha) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ${ActivityStatus.LIVE}, ?, ?, ?, ?)`,
				{
					replacements: [
						arming,
						p.product_id,
						price,
						p.stock,
						p.stock,
						limit,
						new Date(start),
						new Date(end),
						tags.length,
						formatBucketTags(tags),
						requireToken ? 1 : 0,
						captcha ? 1 : 0
					],
					transaction,
					type: QueryTypes.INSERT
				}
			)) as unknown as [number];
			return Number(insertId);
		}).catch(err => {
			if (err instanceof UniqueConstraintError) throw bizError("SECKILL_ARMING_BUSY");
			throw err;
		});
		// Three steps, not one MULTI: on a Redis Cluster the old armings, the new one and the
		// product's pointer live in different slots. The order keeps every moment safe: the old
		// sale stops first, then the new one exists, and only then do buyers find it (between
		// the first and the last step a buyer is told "no activity" for a few milliseconds).
		// Every bucket of the old sale stops (each has its own slot).
		await Promise.all(
			previous.flatMap(old => {
				const oldTags = parseBucketTags(old.buckets, old.bucket_tags);
				return oldTags.map((_, b) => this.redis.hset(bucketKeys(old.arming_id, oldTags, b).info, "active", "0"));
			})
		);
		await Promise.all(
			tags.map((_, b) =>
				this.writeActivityInfo(
					arming,
					{
						stock: bucketShare(p.stock, tags.length, b),
						start,
						end,
						limit,
						active: true,
						activity_id: id,
						product_id: p.product_id,
						price,
						name: product.name,
						image: product.image_url,
						require_token: requireToken,
						captcha
					},
					tags,
					b
				)
			)
		);
		await this.redis.set(productActivityKey(p.product_id), arming);
		this.broker.broadcast("seckill.armed", { product_id: p.product_id, activity_id: id, arming_id: arming });
		return {
			id,
			arming_id: arming,
			product_id: p.product_id,
			stock: p.stock,
			seckill_price: Number(price),
			start_time: new Date(start),
			end_time: new Date(end),
			limit_per_user: limit,
			buckets: tags.length,
			require_token: requireToken,
			captcha
		};
	},

	/**
	 * Writes an arming's Redis info hash, all its fields in one HSET: when it is armed, and
	 * when reconciliation rebuilds an arming Redis lost.
	 */
	writeActivityInfo(this: StockThis, arming: string, info: ActivityInfo, tags: BucketTags = ONE_BUCKET, bucket = 0) {
		// A bucketed arming's every info hash says how many buckets and their tags, so a node that
		// reads bucket 0 (activityFor) knows them all; an unbucketed one's hash is as it always was.
		const buckets = tags.length > 1 ? { buckets: tags.length, bucket_tags: formatBucketTags(tags), bucket } : {};
		return this.redis.hset(bucketKeys(arming, tags, bucket).info, {
			...buckets,
			stock: info.stock,
			start: info.start,
			end: info.end,
			limit: info.limit,
			active: info.active ? 1 : 0,
			activity_id: info.activity_id,
			product_id: info.product_id,
			price: info.price,
			name: info.name,
			image: info.image,
			require_token: info.require_token ? 1 : 0,
			captcha: info.captcha ? 1 : 0
		});
	},

	/**
	 * The activity for a product, from memory when fresh, else from its Redis hash: one read for
	 * every request that asks while it is on its way (a sale's opening begins with a whole turn
	 * of requests that all miss). A re-arming (seckill.armed) drops the read on its way: its
	 * answer is returned to those who asked, and not kept.
	 */
	async activityFor(this: StockThis, pid: number): Promise<ActivityMeta | null> {
		const cached = this.metas.get(pid);
		if (cached === null || (cached && Date.now() - cached.loadedAt < META_TTL_MS)) return cached;
		let read = this.metaReads.get(pid);
		if (read) return read;
		read = this.readActivity(pid);
		this.metaReads.set(pid, read);
		try {
			const meta = await read;
			if (this.metaReads.get(pid) === read) {
				this.metas.set(pid, meta);
				// A miss is remembered too, briefly: unknown products are the cheapest rejection.
				if (!meta) setTimeout(() => this.metas.get(pid) === null && this.metas.delete(pid), META_TTL_MS).unref();
			}
			return meta;
		} finally {
			if (this.metaReads.get(pid) === read) this.metaReads.delete(pid);
		}
	},

	/** Forgets what this node knows of a product's activity, and the read on its way (seckill.armed). */
	forgetActivity(this: StockThis, pid: number): void {
		this.metas.delete(pid);
		this.metaReads.delete(pid);
	},

	async readActivity(this: StockThis, pid: number): Promise<ActivityMeta | null> {
		const arming = await this.redis.get(productActivityKey(pid));
		let meta: ActivityMeta | null = null;
		if (arming) {
			const [id, start, end, price, name, image, active, buckets, bucketTags, requireToken, captcha] =
				await this.redis.hmget(
					activityKeys(arming).info,
					"activity_id",
					"start",
					"end",
					"price",
					"name",
					"image",
					"active",
					"buckets",
					"bucket_tags",
					"require_token",
					"captcha"
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
					tags: parseBucketTags(buckets, bucketTags),
					require_token: requireToken === "1",
					captcha: captcha === "1",
					loadedAt: Date.now()
				};
		}
		return meta;
	},

	/** A sold-out flag whose stock came back (a release raced the broadcast) is dropped. */
	async recheckSoldOut(this: StockThis) {
		const asked = [...this.soldOut];
		const still = new Set(await this.stillSoldOut(asked));
		// Only the flags asked about: one set while this waited is newer than the answer.
		for (const pid of asked) if (!still.has(pid)) this.soldOut.delete(pid);
	},

	/**
	 * Of these products, the ones whose live sale has no stock left in Redis: what
	 * recheckSoldOut and the gateways' own flags (stock.soldOut) are checked against. A product
	 * with no sale, or whose sale has ended, is not sold out: its flag would answer 60003 where
	 * the sale's own answer is 60008 or 60002, and ended sales' flags would pile up.
	 */
	async stillSoldOut(this: StockThis, pids: number[]) {
		const now = Date.now();
		const soldOut = await Promise.all(
			pids.map(async pid => {
				const meta = await this.activityFor(pid);
				if (!meta || now >= meta.end + CLOCK_SLACK_MS) return false;
				const left =
					meta.tags.length > 1
						? await this.bucketsStock(meta.arming, meta.tags)
						: Number(await this.redis.hget(activityKeys(meta.arming).info, "stock"));
				return !(left > 0);
			})
		);
		return pids.filter((_, i) => soldOut[i]);
	}
} satisfies ArmingMethods;
