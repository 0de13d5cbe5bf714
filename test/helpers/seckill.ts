import { QueryTypes } from "sequelize";
import { TokenService } from "../../lib/auth/jwt";
import { newSessionId } from "../../lib/auth/sessions";
import { parseReservation } from "../../lib/domain/seckill";
import { bucketKeys, parseBucketTags } from "../../lib/domain/seckill-buckets";
import { createRedis } from "../../lib/storage/redis";
import type { TestMall } from "./node";
import { eventually } from "./proc";

export interface Buyer {
	id: number;
	token: string;
}

const db = (mall: TestMall) => (mall.node.broker.getLocalService("user") as any).adapter.db;

export async function sql<T = any>(mall: TestMall, query: string, replacements: unknown[] = []): Promise<T[]> {
	return db(mall).query(query, { replacements, type: QueryTypes.SELECT });
}

export async function exec(mall: TestMall, query: string, replacements: unknown[] = []): Promise<void> {
	await db(mall).query(query, { replacements });
}

/**
 * Many buyers at once: rows written directly, tokens signed with the mall's own secret, each with
 * a session id of its own (a session that was never ended; no row needed, gateways only refuse ended ones).
 */
export async function makeBuyers(mall: TestMall, n: number, prefix: string): Promise<Buyer[]> {
	const values = Array.from({ length: n }, (_, i) => `('${prefix}_${i}', 'x', 1, 1)`).join(",");
	await db(mall).query(`INSERT INTO users (username, password_hash, role, status) VALUES ${values}`);
	const rows = await sql<{ id: number }>(mall, "SELECT id FROM users WHERE username LIKE ? ORDER BY id", [
		`${prefix}\\_%`
	]);
	const tokens = new TokenService(mall.cfg.jwt.secret, 3600);
	return rows.map(r => ({ id: Number(r.id), token: tokens.sign({ id: Number(r.id), role: 1 }, newSessionId()) }));
}

export async function arm(mall: TestMall, admin: string, body: Record<string, unknown>) {
	const r = await mall.http.post("/api/seckill/init", body, admin);
	if (r.status !== 200) throw new Error(`arm failed: ${JSON.stringify(r.body)}`);
	return r.body.data as { id: number; arming_id: string; product_id: number };
}

export async function newProduct(mall: TestMall, admin: string, body: Record<string, unknown> = {}): Promise<number> {
	const r = await mall.http.post("/api/product", { name: "Flash phone", price: 999, stock: 1000, ...body }, admin);
	if (r.status !== 200) throw new Error(`product create failed: ${r.status} ${JSON.stringify(r.body)}`);
	return r.body.data.id;
}

export interface Counts {
	initial: number;
	redisRemaining: number;
	reservations: number;
	ordered: number;
	dbStock: number;
	liveOrders: number;
	orders: number;
	distinctBuyerSeq: number;
	/** stock buckets: units lent by one bucket and not reserved in another (0 when quiet) */
	lends: number;
}

/** Everything the SPEC invariant speaks of, read straight from Redis and MySQL. */
export async function counts(mall: TestMall, activityId: number): Promise<Counts> {
	const redis = createRedis(mall.cfg.redis, mall.cfg.namespace);
	try {
		// One statement, so the activity's stock and its orders are one snapshot while orders commit.
		const [a] = await sql(
			mall,
			`SELECT a.arming_id, a.buckets, a.bucket_tags, a.total_stock, a.stock, COUNT(o.id) AS orders, SUM(o.status <> 5) AS live, COUNT(DISTINCT o.user_id, o.seckill_seq) AS distinct_seq
			   FROM seckill_activities a LEFT JOIN orders o ON o.activity_id = a.id WHERE a.id = ? GROUP BY a.id`,
			[activityId]
		);
		// Every stock bucket (one when the sale is not bucketed).
		const tags = parseBucketTags(a.buckets, a.bucket_tags);
		const resv = [];
		let remaining = 0;
		let lends = 0;
		for (let b = 0; b < tags.length; b++) {
			const k = bucketKeys(a.arming_id, tags, b);
			resv.push(...Object.entries(await redis.hgetall(k.resv)).map(([no, v]) => parseReservation(no, v)!));
			remaining += Number(await redis.hget(k.info, "stock"));
			for (const [no, v] of Object.entries(await redis.hgetall(k.lends))) {
				const home = bucketKeys(a.arming_id, tags, Number(v.split("|")[0]));
				if (!(await redis.hexists(home.borrows, no))) lends++;
			}
		}
		return {
			initial: Number(a.total_stock),
			lends,
			redisRemaining: remaining,
			reservations: resv.length,
			ordered: resv.filter(r => r.state === "O").length,
			dbStock: Number(a.stock),
			liveOrders: Number(a.live ?? 0),
			orders: Number(a.orders),
			distinctBuyerSeq: Number(a.distinct_seq)
		};
	} finally {
		redis.disconnect();
	}
}

/** Waits until every live reservation has become an order. */
export async function drained(mall: TestMall, activityId: number, timeoutMs = 30000): Promise<Counts> {
	let last: Counts | undefined;
	await eventually(
		async () => {
			last = await counts(mall, activityId);
			return last.ordered === last.reservations && last.liveOrders === last.reservations;
		},
		timeoutMs,
		200
	);
	return last!;
}

export function expectInvariant(c: Counts): void {
	expect(c.redisRemaining + c.reservations + c.lends).toBe(c.initial);
	expect(c.dbStock + c.liveOrders).toBe(c.initial);
}

export function buy(mall: TestMall, b: Buyer, productId: number) {
	return mall.http.post("/api/seckill", { product_id: productId }, b.token);
}

/** Every buyer's answer against the database: "queued" has exactly one order and polls success; a refusal has none. */
export async function expectAnswersHold(
	mall: TestMall,
	pid: number,
	activityId: number,
	answers: { b: Buyer; r: any }[]
) {
	const queued = answers.filter(a => a.r.status === 200);
	const refused = answers.filter(a => a.r.status !== 200);
	const c = await drained(mall, activityId, 60000);
	expectInvariant(c);
	const orders = await sql(mall, "SELECT order_no, user_id FROM orders WHERE activity_id = ?", [activityId]);
	expect(orders.map(o => o.order_no).sort()).toEqual(queued.map(a => a.r.body.data.order_no).sort());
	expect(new Set(orders.map(o => Number(o.user_id))).size).toBe(orders.length);
	const refusedIds = new Set(refused.map(a => a.b.id));
	expect(orders.filter(o => refusedIds.has(Number(o.user_id)))).toEqual([]);
	for (const { b } of queued.slice(0, 20))
		expect((await mall.http.get(`/api/seckill/result?product_id=${pid}`, b.token)).body.data).toMatchObject({
			status: "success"
		});
	return { queued: queued.length, refused: refused.length, counts: c };
}

/**
 * Records each command of a Lua script that `redis` defined (ioredis runs every one through its
 * Script's execute, auto-pipelined or not) until `restore`.
 */
export function spyScript(
	redis: { scriptsSet: Record<string, { execute: (...args: any[]) => unknown }> },
	name: string
) {
	const script = redis.scriptsSet[name];
	const execute = script.execute;
	const calls: unknown[][] = [];
	script.execute = function (this: unknown, container: unknown, args: unknown[], ...rest: unknown[]) {
		calls.push([...args]);
		return execute.call(this, container, args, ...rest);
	};
	return { calls, restore: () => (script.execute = execute) };
}
