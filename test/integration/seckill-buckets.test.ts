/**
 * Stock buckets on the single Redis (README "One hot product across Redis shards"): each path a
 * bucketed sale adds, counted exactly: a dry home bucket borrowing from the others, a borrow
 * refused by the limit giving its lend back, reconciliation returning (or settling) a stale lend,
 * and the release of a borrowed reservation.
 */
import { bucketKeys, homeBucket, parseBucketTags } from "../../lib/domain/seckill-buckets";
import { SeckillResult } from "../../lib/domain/seckill";
import { startMall, TestMall } from "../helpers/node";
import { eventually } from "../helpers/proc";
import {
	arm,
	buy,
	Buyer,
	counts,
	drained,
	expectInvariant,
	makeBuyers,
	newProduct,
	spyScript,
	sql
} from "../helpers/seckill";

let mall: TestMall;
let admin: string;

beforeAll(async () => {
	// reconcile_age 1: a borrow takes lends up to 1 s old, reconciliation returns them after 2 s.
	mall = await startMall({ seckill: { reconcile_age: 1 } });
	admin = await mall.http.adminToken();
});
afterAll(() => mall?.stop());

const stock = () => mall.node.broker.getLocalService("stock") as any;

async function bucketed(units: number, limit = 1) {
	const pid = await newProduct(mall, admin);
	const activity = await arm(mall, admin, { product_id: pid, stock: units, buckets: 4, limit_per_user: limit });
	const [row] = await sql(mall, "SELECT buckets, bucket_tags FROM seckill_activities WHERE id = ?", [activity.id]);
	const tags = parseBucketTags(row.buckets, row.bucket_tags);
	const keys = (b: number) => bucketKeys(activity.arming_id, tags, b);
	const left = async () =>
		Promise.all(tags.map(async (_, b) => Number(await stock().redis.hget(keys(b).info, "stock"))));
	return { pid, activity, tags, keys, left };
}

/** Buyers whose home bucket (of 4) is `bucket`. */
async function buyersAt(bucket: number, n: number, prefix: string): Promise<Buyer[]> {
	const all = await makeBuyers(mall, n * 8, prefix);
	const at = all.filter(b => homeBucket(b.id, 4) === bucket).slice(0, n);
	expect(at).toHaveLength(n);
	return at;
}

it("refuses more buckets than the Redis has masters x 4", async () => {
	const pid = await newProduct(mall, admin);
	const r = await mall.http.post("/api/seckill/init", { product_id: pid, stock: 10, buckets: 5 }, admin);
	expect([r.status, r.body.code]).toEqual([400, 400]);
});

it("splits the stock evenly and, when the home bucket is dry, sells the others' units to its buyers; then sold out", async () => {
	const s = await bucketed(10);
	expect(s.tags).toHaveLength(4);
	expect(await s.left()).toEqual([3, 3, 2, 2]);
	const buyers = await buyersAt(0, 11, "bkborrow");
	const answers = [];
	for (const b of buyers.slice(0, 9)) answers.push(await buy(mall, b, s.pid));
	// Bucket 0 ran dry at the 3rd: not sold out while the others hold units.
	await new Promise(resolve => setTimeout(resolve, 100));
	expect(stock().soldOut.has(s.pid)).toBe(false);
	answers.push(await buy(mall, buyers[9], s.pid));
	expect(answers.map(r => r.status)).toEqual(Array(10).fill(200));
	expect(await s.left()).toEqual([0, 0, 0, 0]);
	// Every reservation is in the buyers' home bucket; 7 of them were lent by the other buckets.
	const redis = stock().redis;
	expect(await redis.hlen(s.keys(0).resv)).toBe(10);
	expect(await redis.hlen(s.keys(0).borrows)).toBe(7);
	for (const b of [0, 1, 2, 3]) expect(await redis.hlen(s.keys(b).lends)).toBe(0);
	// The 11th: every bucket empty, so sold out (and the flag set, by the 10th's last unit).
	const last = await buy(mall, buyers[10], s.pid);
	expect([last.status, last.body.code]).toEqual([409, 60003]);
	await eventually(async () => stock().soldOut.has(s.pid), 5000);
	const c = await drained(mall, s.activity.id);
	expect(c).toMatchObject({ initial: 10, redisRemaining: 0, reservations: 10, orders: 10, lends: 0, dbStock: 0 });
	expectInvariant(c);
	// The buyers' polls find their orders in their home bucket.
	const poll = await mall.http.get(`/api/seckill/result?product_id=${s.pid}`, buyers[9].token);
	expect(poll.body.data).toMatchObject({ status: "success", order_no: answers[9].body.data.order_no });
});

it("gives a lend back when the borrow is refused (the buyer's limit reached by a concurrent request)", async () => {
	const s = await bucketed(8);
	const redis = stock().redis;
	// Bucket 0 emptied by other buyers first.
	for (const b of await buyersAt(0, 2, "bkfill")) expect((await buy(mall, b, s.pid)).status).toBe(200);
	const ops: string[] = [];
	const lend = redis.seckillLend;
	// Each lend script call, with whether it did something (a lend may find a bucket dry). Called
	// on whatever it is called on: with auto-pipelining ioredis calls it on the turn's pipeline.
	redis.seckillLend = async function (this: unknown, ...args: unknown[]) {
		const r = await lend.apply(this, args as Parameters<typeof lend>);
		ops.push(`${args[2]}:${r[0]}`);
		return r;
	};
	try {
		const [buyer] = await buyersAt(0, 1, "bklimit");
		const answers = await Promise.all(Array.from({ length: 5 }, () => buy(mall, buyer, s.pid)));
		expect(answers.map(r => `${r.status}/${r.body.code}`).sort()).toEqual([
			"200/0",
			"409/60004",
			"409/60004",
			"409/60004",
			"409/60004"
		]);
	} finally {
		redis.seckillLend = lend;
	}
	// Concurrent requests each borrowed a unit; all but the winner gave theirs back.
	const lent = ops.filter(o => o === "lend:1").length;
	expect(lent).toBeGreaterThan(1);
	expect(ops.filter(o => o === "unlend:1")).toHaveLength(lent - 1);
	expect(ops.filter(o => o === "settle:1")).toHaveLength(1);
	expect((await s.left()).reduce((a, b) => a + b, 0)).toBe(5);
	const c = await drained(mall, s.activity.id);
	expect(c).toMatchObject({ initial: 8, redisRemaining: 5, reservations: 3, lends: 0, dbStock: 5 });
	expectInvariant(c);
});

it("answers a borrow sent twice (a resend of a command its closed connection left unanswered) as the one that ran: the lent unit is not given back", async () => {
	const s = await bucketed(8);
	const redis = stock().redis;
	for (const b of await buyersAt(0, 2, "bkdry")) expect((await buy(mall, b, s.pid)).status).toBe(200);
	// ioredis sends a command again after a reconnect when its answer never came; the first run's
	// answer is lost with the connection, the caller gets the second's.
	const borrow = redis.seckillBorrow;
	const runs: unknown[][] = [];
	redis.seckillBorrow = async function (this: unknown, ...args: unknown[]) {
		// With auto-pipelining ioredis calls it again on the turn's pipeline: only the stock actor's call counts.
		if (this !== redis) return borrow.apply(this, args as Parameters<typeof borrow>);
		runs.push(await borrow.apply(this, args as Parameters<typeof borrow>));
		runs.push(await borrow.apply(this, args as Parameters<typeof borrow>));
		return runs.at(-1);
	};
	let answer: any;
	try {
		const [buyer] = await buyersAt(0, 1, "bkresend");
		answer = await buy(mall, buyer, s.pid);
	} finally {
		redis.seckillBorrow = borrow;
	}
	expect(runs).toHaveLength(2);
	expect(runs[0][0]).toBe(SeckillResult.WON);
	expect(runs[1]).toEqual(runs[0]);
	expect(answer.status).toBe(200);
	expect((await s.left()).reduce((a, b) => a + b, 0)).toBe(5);
	const c = await drained(mall, s.activity.id);
	expect(c).toMatchObject({ initial: 8, redisRemaining: 5, reservations: 3, lends: 0, orders: 3, dbStock: 5 });
	expectInvariant(c);
});

it("reconciliation returns a stale lend that has no reservation, settles one that has, and a borrow refuses a stale lend", async () => {
	const s = await bucketed(8);
	const redis = stock().redis;
	// A stock node died between lend and reservation: the lend script called alone.
	const [lent, leftAfter, lentAt] = await redis.seckillLend(s.keys(2).info, s.keys(2).lends, "lend", "900000001", 1);
	expect([lent, leftAfter]).toEqual([1, 1]);
	// One that died after its reservation, before the settle: lend, and the borrow made.
	const [buyer, another] = await buyersAt(3, 2, "bkstale");
	const [, , at3] = await redis.seckillLend(s.keys(1).info, s.keys(1).lends, "lend", "900000002", 3);
	const k3 = s.keys(3);
	const borrowed = await redis.seckillBorrow(
		k3.info,
		k3.bought,
		k3.seqs,
		k3.resv,
		k3.last,
		k3.borrows,
		buyer.id,
		"900000002",
		1,
		at3,
		1000
	);
	expect(borrowed[0]).toBe(SeckillResult.WON);
	expect(await s.left()).toEqual([2, 1, 1, 2]);

	// Fresh: counted as in flight, left alone.
	let report = (await stock().reconcileActivity(s.activity.id)) as any;
	expect(report).toMatchObject({
		lends_returned: 0,
		lends_settled: 0,
		redis: { remaining: 6, reservations: 1, lends: 1 },
		consistent: true
	});

	await new Promise(resolve => setTimeout(resolve, 2100));
	// Too old for a borrow now: reconciliation may be giving it back.
	const late = await redis.seckillBorrow(
		k3.info,
		k3.bought,
		k3.seqs,
		k3.resv,
		k3.last,
		k3.borrows,
		another.id,
		"900000003",
		2,
		lentAt,
		1000
	);
	expect(late[0]).toBe(SeckillResult.BUCKET_RETRY);

	report = (await stock().reconcileActivity(s.activity.id)) as any;
	expect(report).toMatchObject({
		lends_returned: 1,
		lends_settled: 1,
		redis: { remaining: 7, reservations: 1, lends: 0 }
	});
	expect(await s.left()).toEqual([2, 1, 2, 2]);
	// The borrowed reservation was republished (R, older than reconcile_age) and becomes its order.
	const c = await drained(mall, s.activity.id);
	expect(c).toMatchObject({ initial: 8, redisRemaining: 7, reservations: 1, orders: 1, lends: 0 });
	expectInvariant(c);
});

it("a borrowed reservation's release (its order cancelled) gives the unit to the home bucket; it is sold again", async () => {
	const s = await bucketed(4);
	const buyers = await buyersAt(1, 5, "bkrel");
	const won = [];
	for (const b of buyers.slice(0, 4)) won.push((await buy(mall, b, s.pid)).body.data.order_no);
	expect(await s.left()).toEqual([0, 0, 0, 0]);
	await drained(mall, s.activity.id);
	// The last winner's unit was lent by another bucket (bucket 0: after 2 and 3).
	expect(await stock().redis.hget(s.keys(1).borrows, won[3])).toBe("0");
	const cancel = await mall.http.post(`/api/order/${won[3]}/cancel`, {}, buyers[3].token);
	expect(cancel.status).toBe(200);
	await eventually(async () => (await s.left())[1] === 1, 5000);
	expect(await s.left()).toEqual([0, 1, 0, 0]);
	let c = await counts(mall, s.activity.id);
	expect(c).toMatchObject({ redisRemaining: 1, reservations: 3, liveOrders: 3, dbStock: 1, lends: 0 });
	expectInvariant(c);
	// A buyer of another bucket gets it (lent by bucket 1); then everything is sold.
	const [other] = await buyersAt(2, 1, "bkrel2");
	expect((await buy(mall, other, s.pid)).status).toBe(200);
	expect([(await buy(mall, buyers[4], s.pid)).status]).toEqual([409]);
	c = await drained(mall, s.activity.id);
	expect(c).toMatchObject({ redisRemaining: 0, reservations: 4, liveOrders: 4, dbStock: 0, lends: 0 });
	expectInvariant(c);
	const report = ((await mall.node.broker.call("stock.reconcile", { activity_id: s.activity.id })) as any)
		.activities[0];
	expect(report.consistent).toBe(true);
	const [status] = (await mall.node.broker.call("stock.status", { product_id: s.pid })) as any[];
	expect(status).toMatchObject({ buckets: 4, lends: 0, redis_remaining: 0, consistent: true });
});

describe("reservation marks (lua/seckill_mark.lua over many order_nos)", () => {
	const reservation = (state: string) => `7|1|${Date.now()}|${state}`;
	const spyMarks = () => spyScript(stock().redis, "seckillMark");

	it("claims many order_nos across buckets in one command per bucket, each answered in the callers' order", async () => {
		const s = await bucketed(8);
		const arming = s.activity.arming_id;
		// One reservation per state, spread over the buckets, and one order_no no bucket holds.
		const cases: [string, number, string | null][] = [
			["mk-r0", 0, "R"],
			["mk-p1", 1, "P"],
			["mk-f2", 2, "F"],
			["mk-o3", 3, "O"],
			["mk-gone", 1, null],
			["mk-r3", 3, "R"]
		];
		for (const [no, b, state] of cases) if (state) await stock().redis.hset(s.keys(b).resv, no, reservation(state));
		const spy = spyMarks();
		try {
			const claimed = await stock().markMany(
				arming,
				cases.map(c => c[0]),
				"C",
				cases.map(c => c[1])
			);
			// claimed, claimed, failed is not claimable, past C already, released, claimed
			expect(claimed).toEqual([1, 1, 0, 1, 0, 1]);
		} finally {
			spy.restore();
		}
		expect(spy.calls).toHaveLength(4); // buckets 0, 1, 2 and 3
		const stateOf = async (no: string, b: number) => String(await stock().redis.hget(s.keys(b).resv, no)).slice(-1);
		expect(await Promise.all(cases.filter(c => c[2]).map(([no, b]) => stateOf(no, b)))).toEqual([
			"C",
			"C",
			"F",
			"O",
			"C"
		]);
		// An arming this Redis does not know: -1 for each.
		expect(await stock().markMany("f".repeat(32), ["a", "b"], "C")).toEqual([-1, -1]);
	});

	it("marks a loop turn's confirmed reservations P in one command", async () => {
		const s = await bucketed(8);
		const arming = s.activity.arming_id;
		const nos = ["pm-1", "pm-2", "pm-3"];
		for (const no of nos) await stock().redis.hset(s.keys(0).resv, no, reservation("R"));
		const spy = spyMarks();
		try {
			for (const no of nos) stock().publishedMarks.add({ arming, orderNo: no, bucket: 0 });
			expect(spy.calls).toHaveLength(0); // not before the turn ends
			await eventually(
				async () => (await stock().redis.hmget(s.keys(0).resv, ...nos)).every((v: string) => v.endsWith("|P")),
				5000
			);
		} finally {
			spy.restore();
		}
		expect(spy.calls).toEqual([[s.keys(0).resv, s.keys(0).info, "P", ...nos]]);
	});
});
