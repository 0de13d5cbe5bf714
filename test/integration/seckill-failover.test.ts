import { execFileSync } from "node:child_process";
import { GomallNode, startNode } from "../../bootstrap/node";
import { createRedis } from "../../lib/storage/redis";
import { activityKeys, parseReservation, productActivityKey } from "../../lib/domain/seckill";
import { startMall, TestMall } from "../helpers/node";
import { eventually } from "../helpers/proc";
import { arm, buy, Buyer, counts, drained, expectInvariant, makeBuyers, newProduct, sql } from "../helpers/seckill";

// The gateway, stock and the other actors run on one node; the order actor (the queue
// consumer) runs on nodes of its own that the tests stop and start.
const FRONT = ["user", "product", "cart", "stock", "api"] as const;

let mall: TestMall;
let admin: string;
const consumers: GomallNode[] = [];

beforeAll(async () => {
	// A small prefetch keeps the consumer busy long enough to be stopped in the middle.
	mall = await startMall({ seckill: { reconcile_age: 1 }, amqp: { prefetch: 2 } }, FRONT);
	admin = await mall.http.adminToken();
});
afterAll(async () => {
	for (const c of consumers) await c.shutdown();
	await mall?.stop();
});

function startConsumer(name: string): Promise<GomallNode> {
	return startNode(mall.cfg, ["order"], { nodeID: `${mall.cfg.node_id}-${name}` }).then(n => (consumers.push(n), n));
}

/** 2,000 requests from 500 buyers in four waves; `during` runs while the first wave is in flight. */
async function saleInWaves(pid: number, buyers: Buyer[], during: () => Promise<void>) {
	const results: { status: number; body: any }[] = [];
	for (let wave = 0; wave < 4; wave++) {
		const requests = Promise.all(buyers.map(b => buy(mall, b, pid)));
		if (wave === 0) await during();
		results.push(...(await requests));
	}
	return results;
}

async function ordersOf(activityId: number): Promise<string[]> {
	return (await sql(mall, "SELECT order_no FROM orders WHERE activity_id = ?", [activityId])).map(r => r.order_no);
}

it("keeps exactly the winners' orders, none twice, when the consuming node is stopped mid-sale and another started", async () => {
	const first = await startConsumer("c1");
	const pid = await newProduct(mall, admin);
	const activity = await arm(mall, admin, { product_id: pid, stock: 100 });
	const buyers = await makeBuyers(mall, 500, "failover");
	let atStop = 0;
	const results = await saleInWaves(pid, buyers, async () => {
		await eventually(async () => (await ordersOf(activity.id)).length > 0, 10000, 20);
		await first.shutdown(); // unacknowledged deliveries go back to the queue
		atStop = (await ordersOf(activity.id)).length;
	});
	const wins = results.filter(r => r.status === 200).map(r => r.body.data.order_no);
	expect(wins).toHaveLength(100);
	expect(atStop).toBeGreaterThan(0);
	expect(atStop).toBeLessThan(100); // the stopped node did not finish the job...

	await startConsumer("c2"); // ...the new one does
	const c = await drained(mall, activity.id);
	const orders = await ordersOf(activity.id);
	expect(orders.sort()).toEqual(wins.sort());
	expect(c).toMatchObject({ orders: 100, reservations: 100, distinctBuyerSeq: 100, redisRemaining: 0, dbStock: 0 });
	expectInvariant(c);
});

it("ends every reservation as an order or a release when RabbitMQ drops every connection mid-sale, and reconciliation leaves the invariant exact", async () => {
	if (!consumers.some(c => c.broker.started)) await startConsumer("c3");
	const pid = await newProduct(mall, admin);
	const activity = await arm(mall, admin, { product_id: pid, stock: 300 });
	const buyers = await makeBuyers(mall, 500, "rabbitdown");
	const results = await saleInWaves(pid, buyers, async () => {
		execFileSync("rabbitmqctl", ["close_all_connections", "gomall failure test"], { stdio: "ignore" });
	});
	const wins = results.filter(r => r.status === 200).map(r => r.body.data.order_no);
	const other = new Set(results.filter(r => r.status !== 200).map(r => `${r.status}/${r.body.code}`));
	for (const o of other) expect(["409/60003", "409/60004", "503/60005"]).toContain(o);

	// Let the connections come back and the queue drain, then repair what is left.
	let last: unknown;
	await eventually(
		async () => {
			const report = (await mall.node.broker.call("stock.reconcile", { activity_id: activity.id })) as any;
			const c = await counts(mall, activity.id);
			last = { report: report.activities[0], c };
			return report.activities[0].consistent && c.ordered === c.reservations;
		},
		60000,
		1000
	).catch(err => {
		throw new Error(`${err.message}: ${JSON.stringify(last)}`);
	});

	const c = await counts(mall, activity.id);
	expectInvariant(c);
	expect(c.orders).toBe(c.reservations);
	expect(c.liveOrders).toBe(c.reservations);
	// Every buyer told "queued" has an order; nobody else has one.
	expect((await ordersOf(activity.id)).sort()).toEqual(wins.sort());
	expect(c.distinctBuyerSeq).toBe(c.orders);
}, 120000);

it("repairs Redis from the database when Redis loses reservations, and even the whole arming, behind live orders", async () => {
	if (!consumers.some(c => c.broker.started)) await startConsumer("c4");
	const pid = await newProduct(mall, admin);
	const activity = await arm(mall, admin, { product_id: pid, stock: 20 });
	const buyers = await makeBuyers(mall, 30, "redisloss");
	const results = await Promise.all(buyers.slice(0, 12).map(b => buy(mall, b, pid)));
	expect(results.every(r => r.status === 200)).toBe(true);
	await drained(mall, activity.id);

	// What a failover without replication can do: three reservations gone, their units back
	// in stock and their buyers' counts back, as if the reservations had never been made.
	const redis = createRedis(mall.cfg.redis, mall.cfg.namespace);
	const k = activityKeys(activity.arming_id);
	try {
		const lost = Object.entries(await redis.hgetall(k.resv)).slice(0, 3);
		for (const [no, v] of lost) {
			const r = parseReservation(no, v)!;
			await redis.hdel(k.resv, no);
			await redis.hincrby(k.info, "stock", 1);
			await redis.hdel(k.bought, String(r.user_id));
		}
		let report = ((await mall.node.broker.call("stock.reconcile", { activity_id: activity.id })) as any).activities[0];
		expect(report).toMatchObject({ rebuilt: false, orphan_orders: [], consistent: true });
		expect(report.restored.sort()).toEqual(lost.map(([no]) => no).sort());
		expectInvariant(await counts(mall, activity.id));

		// Everything of the arming gone (a Redis restored from an empty snapshot).
		await redis.del(k.info, k.resv, k.bought, k.seqs, k.last);
		await redis.del(productActivityKey(pid));
		report = ((await mall.node.broker.call("stock.reconcile", { activity_id: activity.id })) as any).activities[0];
		expect(report).toMatchObject({
			rebuilt: true,
			orphan_orders: [],
			consistent: true,
			redis: { remaining: 8, reservations: 12 }
		});
		expect(report.restored).toHaveLength(12);
		const c = await counts(mall, activity.id);
		expectInvariant(c);
		expect(c.ordered).toBe(12);
	} finally {
		redis.disconnect();
	}

	// The sale goes on from the rebuilt state: an earlier winner is still at the limit, new
	// buyers take exactly the 8 units left, and the result poll still finds the old orders.
	await eventually(async () => (await buy(mall, buyers[0], pid)).body.code === 60004, 10000, 200);
	const more = await Promise.all(buyers.slice(12).map(b => buy(mall, b, pid)));
	expect(more.filter(r => r.status === 200)).toHaveLength(8);
	expect((await mall.http.get(`/api/seckill/result?product_id=${pid}`, buyers[1].token)).body.data).toMatchObject({
		status: "success"
	});
	const c = await drained(mall, activity.id);
	expect(c).toMatchObject({ orders: 20, reservations: 20, redisRemaining: 0, dbStock: 0 });
	expectInvariant(c);
}, 60000);
