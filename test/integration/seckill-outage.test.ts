/**
 * A buyer told "queued" always gets the order, through what operations do to RabbitMQ: an
 * outage while confirmed sales wait in the queue, a long backlog behind a stopped order actor,
 * a memory alarm that blocks publishers, and the consumer's channel closed by the server. Each
 * is made to happen against the real broker; then every answer is checked against MySQL.
 */
import { execFileSync } from "node:child_process";
import amqp from "amqplib";
import { GomallNode, startNode } from "../../bootstrap/node";
import { names } from "../../lib/messaging/topology";
import { startMall, TestMall } from "../helpers/node";
import { eventually } from "../helpers/proc";
import { TcpProxy } from "../helpers/tcp-proxy";
import {
	arm,
	buy,
	Buyer,
	counts,
	drained,
	expectAnswersHold,
	expectInvariant,
	makeBuyers,
	newProduct,
	sql
} from "../helpers/seckill";

// The gateway and the stock actor on one node; the order actor (the consumer) on another,
// started when the test says, so confirmed messages wait in the queue as behind any backlog.
const FRONT = ["user", "product", "cart", "stock", "api"] as const;

const opened: { mall?: TestMall; nodes: GomallNode[]; proxies: TcpProxy[] }[] = [];
// Each test's mall stops when the test ends: the order nodes, then the mall (while its
// broker path is up, so it stops at once), then the proxies.
afterEach(async () => {
	for (const o of opened.splice(0)) {
		for (const p of o.proxies) await p.up().catch(() => undefined);
		for (const n of o.nodes) await n.shutdown().catch(() => undefined);
		await o.mall?.stop().catch(() => undefined);
		for (const p of o.proxies) await p.down().catch(() => undefined);
	}
}, 120000);
afterAll(() => execFileSync("rabbitmqctl", ["-q", "set_vm_memory_high_watermark", "0.4"]));

const metric = (node: GomallNode, name: string, labels: Record<string, string>) =>
	((node.broker.metrics.getMetric(name) as any)?.snapshot() ?? [])
		.filter((s: any) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))
		.reduce((sum: number, s: any) => sum + s.value, 0);

async function queueDepth(mall: TestMall): Promise<number> {
	const conn = await amqp.connect(mall.cfg.amqp.url);
	try {
		const ch = await conn.createChannel();
		return (await ch.checkQueue(names(mall.cfg.namespace).seckillQueue)).messageCount;
	} finally {
		await conn.close();
	}
}

describe.each([
	["at 5 s", 30, { reconcile_interval: 5, reconcile_age: 5 }],
	["at its defaults (30 s)", 90, {}]
])("RabbitMQ unreachable while confirmed sales wait, reconciliation %s", (_label, outageSeconds, seckill) => {
	it(`keeps every queued buyer's order through a ${outageSeconds} s outage`, async () => {
		const proxy = new TcpProxy("127.0.0.1", 5672);
		await proxy.up();
		const mall = await startMall(
			{ amqp: { url: `amqp://guest:guest@127.0.0.1:${proxy.port}` }, seckill: { ...seckill } },
			FRONT
		);
		const o = { mall, nodes: [] as GomallNode[], proxies: [proxy] };
		opened.push(o);
		const admin = await mall.http.adminToken();
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 30 });
		const buyers = await makeBuyers(mall, 60, `outage${outageSeconds}`);
		const answers = await Promise.all(buyers.map(b => buy(mall, b, pid).then(r => ({ b, r }))));
		expect(answers.filter(a => a.r.status === 200)).toHaveLength(30);
		expect(await queueDepth(mall)).toBe(30);

		await proxy.down();
		await new Promise(r => setTimeout(r, outageSeconds * 1000));
		// Nothing was given back while the broker was away: the units are the buyers'.
		const during = await counts(mall, activity.id);
		expect(during).toMatchObject({ reservations: 30, redisRemaining: 0, orders: 0 });
		await proxy.up();

		// The order actor starts only now, straight on the broker.
		o.nodes.push(await startNode(mall.cfg, ["order"], { nodeID: `${mall.cfg.node_id}-order` }));
		const held = await expectAnswersHold(mall, pid, activity.id, answers);
		expect(held).toMatchObject({ queued: 30, refused: 30, counts: { orders: 30, dbStock: 0 } });
	}, 240000);
});

it("holds a 5,000-winner backlog behind a stopped order actor for 60 s without flooding the queue", async () => {
	const mall = await startMall({ seckill: { reconcile_interval: 5, reconcile_age: 5 } }, FRONT);
	opened.push({ mall, nodes: [], proxies: [] });
	const admin = await mall.http.adminToken();
	const pid = await newProduct(mall, admin, { stock: 5000 });
	const activity = await arm(mall, admin, { product_id: pid, stock: 5000 });
	const buyers = await makeBuyers(mall, 5000, "backlog");
	// Straight to the stock actor, 200 at a time: the gateway is not what this measures.
	const answers: { b: Buyer; r: any }[] = [];
	for (let i = 0; i < buyers.length; i += 200) {
		const wave = buyers.slice(i, i + 200);
		const results = await Promise.all(
			wave.map(b =>
				mall.node.broker.call("stock.seckill", { product_id: pid }, { meta: { user: { id: b.id, role: 1 } } })
			)
		);
		answers.push(...results.map((data, j) => ({ b: wave[j], r: { status: 200, body: { data } } })));
	}
	expect(answers.filter(a => (a.r.body.data as any).status === "queued")).toHaveLength(5000);

	await new Promise(r => setTimeout(r, 60000));
	const republished = metric(mall.node, "gomall_seckill_republished_total", {});
	const depth = await queueDepth(mall);
	// Only reservations that never saw their confirm may have gone out twice; here none did.
	expect({ depth, republished }).toEqual({ depth: 5000 + republished, republished: 0 });
	expect(metric(mall.node, "gomall_seckill_reconcile_runs_total", { result: "ran" })).toBeGreaterThanOrEqual(10);

	const order = await startNode(mall.cfg, ["order"], { nodeID: `${mall.cfg.node_id}-order` });
	opened[opened.length - 1].nodes.push(order);
	const c = await drained(mall, activity.id, 90000);
	expectInvariant(c);
	expect(c).toMatchObject({ orders: 5000, reservations: 5000, redisRemaining: 0, dbStock: 0 });
	expect(c.distinctBuyerSeq).toBe(5000);
}, 240000);

it("tells no buyer to retry who then gets an order when a memory alarm blocks publishing mid-sale", async () => {
	const mall = await startMall({
		seckill: { reconcile_interval: 5, reconcile_age: 5 },
		amqp: { confirm_timeout_ms: 1000 }
	});
	opened.push({ mall, nodes: [], proxies: [] });
	const admin = await mall.http.adminToken();
	const pid = await newProduct(mall, admin);
	const activity = await arm(mall, admin, { product_id: pid, stock: 40 });
	const buyers = await makeBuyers(mall, 80, "alarm");
	const before = await Promise.all(buyers.slice(0, 10).map(b => buy(mall, b, pid).then(r => ({ b, r }))));

	execFileSync("rabbitmqctl", ["-q", "set_vm_memory_high_watermark", "0.000001"]);
	let during: { b: Buyer; r: any }[];
	try {
		await new Promise(r => setTimeout(r, 1000));
		during = await Promise.all(buyers.slice(10, 60).map(b => buy(mall, b, pid).then(r => ({ b, r }))));
		await new Promise(r => setTimeout(r, 3000));
	} finally {
		execFileSync("rabbitmqctl", ["-q", "set_vm_memory_high_watermark", "0.4"]);
	}
	const after = await Promise.all(buyers.slice(60).map(b => buy(mall, b, pid).then(r => ({ b, r }))));
	const answers = [...before, ...during, ...after];
	// Blocked publishers: no confirm in time, so the outcome is unknown and the buyer hears "queued".
	expect(during.filter(a => a.r.status === 200).length).toBeGreaterThan(0);
	expect(during.filter(a => a.r.body.code === 60005)).toEqual([]);
	expect(metric(mall.node, "gomall_seckill_requests_total", { result: "queued_unconfirmed" })).toBeGreaterThan(0);
	const held = await expectAnswersHold(mall, pid, activity.id, answers);
	expect(held.queued).toBe(40);
	expect(held.counts).toMatchObject({ orders: 40, redisRemaining: 0, dbStock: 0 });
}, 120000);

it("consumes again within 10 s after the server closes the consumer's channel mid-drain", async () => {
	const mall = await startMall({ amqp: { prefetch: 5 }, seckill: { batch_size: 1 } }, FRONT);
	const o = { mall, nodes: [] as GomallNode[], proxies: [] as TcpProxy[] };
	opened.push(o);
	const admin = await mall.http.adminToken();
	const pid = await newProduct(mall, admin, { stock: 2000 });
	const activity = await arm(mall, admin, { product_id: pid, stock: 2000 });
	const buyers = await makeBuyers(mall, 2000, "chanclose");
	for (let i = 0; i < buyers.length; i += 200)
		await Promise.all(
			buyers
				.slice(i, i + 200)
				.map(b =>
					mall.node.broker.call("stock.seckill", { product_id: pid }, { meta: { user: { id: b.id, role: 1 } } })
				)
		);
	const order = await startNode(mall.cfg, ["order"], { nodeID: `${mall.cfg.node_id}-order` });
	o.nodes.push(order);
	const written = async () =>
		Number((await sql(mall, "SELECT COUNT(*) AS n FROM orders WHERE activity_id = ?", [activity.id]))[0].n);
	await eventually(async () => (await written()) > 100, 20000, 20);
	// The gateway knows the order node (NATS discovery can trail the first deliveries).
	await eventually(async () => (await mall.http.get("/health")).body.components?.consumers === "up", 10000, 100);
	await new Promise(r => setTimeout(r, 1100)); // past the health probe's 1 s cache

	// An ack of a delivery tag the channel never had: RabbitMQ closes the channel (406).
	const seckillConsumer = (order.broker.getLocalService("order") as any).consumers.find((c: any) =>
		c.queue.endsWith("seckill.orders")
	);
	seckillConsumer.current.ch.ack({ fields: { deliveryTag: 999999999 } });
	await eventually(async () => !seckillConsumer.consuming, 5000, 5);
	const gap = await order.broker.call("order.consumers", {});
	expect(gap).toContainEqual({ queue: expect.stringMatching(/seckill\.orders$/), consuming: false });
	expect(metric(order, "gomall_amqp_consumers", { queue: "seckill" })).toBe(0);
	// The gap shows on the gateway's /health too (its probe asks every order node), then closes.
	await eventually(async () => (await mall.http.get("/health")).body.components?.consumers === "down", 3000, 50);
	const stalledAt = await written();

	const t0 = Date.now();
	await eventually(async () => seckillConsumer.consuming && (await written()) > stalledAt, 10000, 50);
	expect(Date.now() - t0).toBeLessThan(10000);
	expect(metric(order, "gomall_amqp_consumers", { queue: "seckill" })).toBe(1);
	await eventually(async () => (await mall.http.get("/health")).body.components?.consumers === "up", 5000, 100);
	const c = await drained(mall, activity.id, 60000);
	expectInvariant(c);
	expect(c).toMatchObject({ orders: 2000, reservations: 2000 });
	expect(c.distinctBuyerSeq).toBe(2000);
}, 180000);
