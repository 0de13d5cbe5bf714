/**
 * A real cluster of node processes losing nodes to SIGKILL mid-sale: a gateway, a
 * user+product+cart node, an order node and two stock nodes, then a third stock node joining.
 */
import { counts, drained, expectInvariant, sql } from "../helpers/seckill";
import { eventually, freePort } from "../helpers/proc";
import { ProcCluster, Tally, drive } from "./nodes";

let cluster: ProcCluster;
let admin: string;

beforeAll(async () => {
	cluster = new ProcCluster();
	await cluster.open();
	await cluster.start("gateway", ["api"]);
	await cluster.start("catalogue", ["user", "product", "cart"]); // applies the migrations
	await Promise.all([
		cluster.start("orders", ["order"]),
		cluster.start("stock-1", ["stock"]),
		cluster.start("stock-2", ["stock"])
	]);
	admin = await cluster.http.adminToken();
}, 120000);

afterAll(async () => {
	await cluster?.close();
}, 60000);

async function newSale(stock: number, limit = 1): Promise<{ pid: number; activityId: number }> {
	const p = await cluster.http.post("/api/product", { name: "Flash phone", price: 999, stock: 100000 }, admin);
	expect(p.status).toBe(200);
	const a = await cluster.http.post(
		"/api/seckill/init",
		{ product_id: p.body.data.id, stock, limit_per_user: limit },
		admin
	);
	expect(a.status).toBe(200);
	return { pid: p.body.data.id, activityId: a.body.data.id };
}

/** What one stock node says it served (flash-sale answers by result), asked by nodeID. */
async function served(node: string): Promise<number> {
	const r = await cluster.observer.call<any, any>("stock.node", {}, { nodeID: node, timeout: 3000 });
	return Object.values(r.seckill as Record<string, number>).reduce((a, b) => a + b, 0);
}

/** Repairs what the dead node left (a reservation whose publish died with it), then waits for the queue. */
async function settle(activityId: number) {
	const mall = cluster.asMall();
	await eventually(
		async () => {
			const report = await cluster.observer.call<any, any>("stock.reconcile", { activity_id: activityId });
			const c = await counts(mall, activityId);
			return (
				report.activities[0].orphan_orders.length === 0 &&
				c.ordered === c.reservations &&
				c.liveOrders === c.reservations
			);
		},
		60000,
		1000
	);
	return drained(mall, activityId);
}

/** Each buyer told "queued" has exactly one order with that order_no; nobody holds two. */
async function expectOneOrderPerWinner(activityId: number, wins: Map<number, string>) {
	const orders = await sql(cluster.asMall(), "SELECT order_no, user_id FROM orders WHERE activity_id = ?", [
		activityId
	]);
	const byNo = new Map(orders.map(o => [o.order_no, Number(o.user_id)]));
	expect(byNo.size).toBe(orders.length);
	for (const [user, orderNo] of wins) expect([orderNo, byNo.get(orderNo)]).toEqual([orderNo, user]);
	const perUser = new Map<number, number>();
	for (const o of orders) perUser.set(Number(o.user_id), (perUser.get(Number(o.user_id)) ?? 0) + 1);
	expect(Math.max(0, ...perUser.values())).toBeLessThanOrEqual(1);
	return orders.length;
}

/** Whether the gateway's own registry has the node among stock.seckill's endpoints. */
async function gatewayRoutesTo(nodeID: string): Promise<boolean> {
	const actions = (await cluster.observer.call(
		"$node.actions",
		{ onlyAvailable: true, withEndpoints: true, skipInternal: true },
		{ nodeID: "gateway" }
	)) as any[];
	return actions.some(
		a => a.name === "stock.seckill" && a.endpoints?.some((e: any) => e.nodeID === nodeID && e.available !== false)
	);
}

it("finishes a 3,000-buyer sale when a stock node is SIGKILLed mid-sale; every answer a win, a 409 or a 503; a third stock node joins and serves", async () => {
	// The reserve's retry flag reaches the other nodes with its definition (no function would).
	const seckill = (cluster.observer.registry.getActionList({}) as any[]).find(a => a.name === "stock.seckill");
	expect(seckill.action.retryPolicy).toEqual({ onlyNeverRan: true });

	const STOCK = 2000;
	const { pid, activityId } = await newSale(STOCK);
	const buyers = await cluster.buyers(3000, "failover");
	const tally = new Tally();
	const wins = new Map<number, string>();
	const bad: string[] = [];
	let stock2Before = 0;
	let stock3AtJoin = -1;
	let joining: Promise<unknown> = Promise.resolve();
	const metricsPort = await freePort(); // stock-3 serves its own /metrics (metrics.port)

	await drive(
		buyers,
		24,
		async b => {
			const r = await cluster.http
				.post("/api/seckill", { product_id: pid }, b.token)
				.catch(err => ({ status: 0, body: { code: (err as Error).name } as any }));
			tally.add(r.status, r.body?.code);
			if (r.status === 200) wins.set(b.id, r.body.data.order_no);
			else if (!(r.status === 409 || r.status === 503) && bad.length < 5) bad.push(JSON.stringify(r));
		},
		{
			600: async () => {
				stock2Before = await served("stock-2"); // it was serving...
				void cluster.kill("stock-2", "SIGKILL"); // ...and dies without a goodbye
			},
			1000: () => {
				joining = cluster
					.start("stock-3", ["stock"], { GOMALL_METRICS_PORT: String(metricsPort) })
					// Joined for the gateway too, not only for the test's observer: each node learns of
					// a newcomer from its own INFO packet, so the gateway may route to it a moment later.
					.then(() => eventually(async () => gatewayRoutesTo("stock-3"), 20000, 100))
					.then(async () => (stock3AtJoin = await served("stock-3")));
			},
			// The feeder waits here (traffic in flight) until stock-3 is in, so it joins mid-sale.
			2000: () => joining
		}
	);

	console.log(`seckill answers during the SIGKILL: ${JSON.stringify(tally)}`);
	expect(bad).toEqual([]);
	for (const key of tally.byKey.keys())
		expect(["200/0", "409/60003", "409/60004", "503/503", "503/60005"]).toContain(key);
	expect(tally.total()).toBe(3000);
	expect(tally.get("200/0")).toBe(wins.size);
	expect(stock2Before).toBeGreaterThan(0);
	await cluster.waitGone("stock-2");

	// The third node served (its own counter, read from it), and after it joined.
	expect(stock3AtJoin).toBeGreaterThanOrEqual(0);
	const stock3 = await served("stock-3");
	expect(stock3).toBeGreaterThan(stock3AtJoin);
	// What Prometheus scrapes from that node says the same, under its nodeID.
	const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
	expect(text).toMatch(/^gomall_node_info\{node_id="stock-3",[^}]*services="stock"\} 1$/m);
	const scraped = [...text.matchAll(/^gomall_seckill_requests_total\{[^}]*\} (\d+)$/gm)].reduce(
		(a, m) => a + Number(m[1]),
		0
	);
	expect(scraped).toBe(stock3);

	const c = await settle(activityId);
	expectInvariant(c);
	expect(c.reservations).toBeLessThanOrEqual(STOCK); // nothing oversold
	const orders = await expectOneOrderPerWinner(activityId, wins);
	// Every order is a win some buyer was told of, or a reserve that ran on the dead node
	// whose reply was lost (that buyer got a 503 and was not counted a winner).
	expect(orders).toBeGreaterThanOrEqual(wins.size);
	expect(orders - wins.size).toBeLessThanOrEqual(tally.get("503/503"));
}, 240000);

it("writes each queued winner's order exactly once when the order node is SIGKILLed while the queue drains and started again", async () => {
	const STOCK = 400;
	const { pid, activityId } = await newSale(STOCK);
	const buyers = await cluster.buyers(600, "drain");
	const tally = new Tally();
	const wins = new Map<number, string>();
	const mall = cluster.asMall();
	let killedAt = -1;
	// The killer watches the orders table and strikes once the writer has begun.
	const killer = eventually(async () => (await counts(mall, activityId)).orders > 0, 60000, 20).then(async () => {
		await cluster.kill("orders", "SIGKILL");
		killedAt = (await counts(mall, activityId)).orders;
	});
	await drive(buyers, 24, async b => {
		const r = await cluster.http.post("/api/seckill", { product_id: pid }, b.token);
		tally.add(r.status, r.body?.code);
		if (r.status === 200) wins.set(b.id, r.body.data.order_no);
	});
	await killer;
	console.log(`seckill answers: ${JSON.stringify(tally)}; orders written when the order node died: ${killedAt}`);
	expect(wins.size).toBe(STOCK);
	expect(killedAt).toBeGreaterThan(0);
	expect(killedAt).toBeLessThan(STOCK);
	// Nothing is written while no order node runs: the rest waits in RabbitMQ.
	await new Promise(r => setTimeout(r, 1000));
	expect((await counts(mall, activityId)).orders).toBe(killedAt);

	await cluster.start("orders", ["order"]);
	const c = await settle(activityId);
	expectInvariant(c);
	expect(await expectOneOrderPerWinner(activityId, wins)).toBe(STOCK);
}, 180000);
