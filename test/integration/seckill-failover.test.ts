import { execFileSync } from "node:child_process";
import { GomallNode, startNode } from "../../lib/node";
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
	await eventually(async () => {
		const report = (await mall.node.broker.call("stock.reconcile", { activity_id: activity.id })) as any;
		const c = await counts(mall, activity.id);
		last = { report: report.activities[0], c };
		return report.activities[0].consistent && c.ordered === c.reservations;
	}, 60000, 1000).catch(err => {
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
