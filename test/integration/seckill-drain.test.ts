import crypto from "node:crypto";
import amqp from "amqplib";
import { ALL_SERVICES, GomallNode, startNode } from "../../bootstrap/node";
import { names, SECKILL_ROUTING_KEY } from "../../lib/messaging/topology";
import { dropDatabase, startMall, startMallWith, TestMall } from "../helpers/node";
import { eventually } from "../helpers/proc";
import { arm, buy, Buyer, counts, drained, expectInvariant, makeBuyers, newProduct, sql } from "../helpers/seckill";
import { TcpProxy } from "../helpers/tcp-proxy";

/**
 * The order drain under failure. Each test runs the sale on a mall without the order actor,
 * so the winners' messages wait in the queue, then starts an order node and watches it drain.
 */

const WITHOUT_ORDERS = ALL_SERVICES.filter(s => s !== "order");

// The poison test compares two drain rates measured once each on two cores shared with every
// server (1.01 to 1.07 over four runs alone, but 0.78 once in a CI run with the window of
// 2,000 it had then). A second try measures both again (its own buyers, an emptied
// dead-letter queue); a drain that blocks behind poison (failure mode 4) fails both.
jest.retryTimes(1, { logErrorsBeforeRetry: true });

type Cfg = TestMall["cfg"];

async function orderNode(
	mall: TestMall,
	tag: string,
	{ db = {}, amqp = {} }: { db?: Partial<Cfg["db"]>; amqp?: Partial<Cfg["amqp"]> } = {}
): Promise<GomallNode> {
	const cfg = { ...mall.cfg, db: { ...mall.cfg.db, ...db }, amqp: { ...mall.cfg.amqp, ...amqp } };
	return startNode(cfg, ["order"], { nodeID: `${mall.cfg.node_id}-${tag}` });
}

/** Every buyer once, all at once; returns the winners' order numbers. */
async function sell(mall: TestMall, buyers: Buyer[], pid: number): Promise<string[]> {
	const results = await Promise.all(buyers.map(b => buy(mall, b, pid)));
	const refused = results.filter(r => r.status !== 200);
	if (refused.length) throw new Error(`${refused.length} buyers refused, first: ${JSON.stringify(refused[0].body)}`);
	return results.map(r => r.body.data.order_no);
}

/** Empties the flash-sale dead-letter queue, then publishes `bodies` to the flash-sale queue. */
async function publishRaw(mall: TestMall, bodies: (string | object)[]): Promise<void> {
	const conn = await amqp.connect(mall.cfg.amqp.url);
	try {
		const ch = await conn.createConfirmChannel();
		const n = names(mall.cfg.namespace);
		await ch.purgeQueue(n.seckillDlq);
		bodies.forEach((b, i) =>
			ch.publish(n.orderExchange, SECKILL_ROUTING_KEY, Buffer.from(typeof b === "string" ? b : JSON.stringify(b)), {
				persistent: true,
				messageId: `poison-${i}`
			})
		);
		await ch.waitForConfirms();
	} finally {
		await conn.close();
	}
}

async function deadLetters(node: GomallNode): Promise<{ message_id: string; reason: string; attempts: number }[]> {
	return ((await node.broker.call("order.deadLetters", { queue: "seckill", limit: 10000 })) as any).messages;
}

describe("poison messages ahead of a sale", () => {
	let mall: TestMall;
	let admin: string;
	beforeAll(async () => {
		mall = await startMall({}, WITHOUT_ORDERS);
		admin = await mall.http.adminToken();
	});
	afterAll(() => mall?.stop());

	let sales = 0;
	/**
	 * Arms 2,000 units, sells them to 2,000 new buyers, then times an order node draining the
	 * queue, from its start to the last order row. Its prefetch window is as big as the poison
	 * (200): a poison message that keeps its slot while it waits (failure mode 4) stops the
	 * drain. In production's window of 2,000 the poison holds a tenth and the rest flows
	 * past it: poison held 1 s each before parking still drained at 0.87 of the clean rate
	 * there, while in this window 300 ms each brought it to 0.74.
	 */
	async function drainedSale(tag: string, before: () => Promise<void>) {
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 2000 });
		const buyers = await makeBuyers(mall, 2000, `${tag}${++sales}`);
		await before();
		const won = await sell(mall, buyers, pid);
		const t0 = Date.now();
		const node = await orderNode(mall, tag, { amqp: { prefetch: 200 } });
		const started = Date.now() - t0;
		try {
			const c = await drained(mall, activity.id, 120000);
			const [{ last }] = await sql(mall, "SELECT MAX(created_at) AS last FROM orders WHERE activity_id = ?", [
				activity.id
			]);
			const seconds = (new Date(last).getTime() - t0) / 1000;
			return { activity, won, c, node, rate: won.length / seconds, seconds, started };
		} catch (err) {
			await node.shutdown();
			throw err;
		}
	}

	it("drains 2,000 winners behind 10% poison at no less than 80% of the clean rate; every poison message is dead-lettered with its reason", async () => {
		const clean = await drainedSale("clean", async () => undefined);
		await clean.node.shutdown();
		expect(clean.c).toMatchObject({
			reservations: 2000,
			orders: 2000,
			liveOrders: 2000,
			dbStock: 0,
			redisRemaining: 0
		});

		const unknownArming = (i: number) => ({
			order_no: String(9e20 + i),
			activity_id: 1,
			arming_id: crypto.randomBytes(16).toString("hex"),
			product_id: 1,
			user_id: 1,
			seq: 1,
			product_name: "x",
			product_image: "",
			price: "1.00"
		});
		const poison = [
			...Array.from({ length: 80 }, () => "{not json"),
			...Array.from({ length: 20 }, (_, i) => ({ order_no: `x${i}`, activity_id: "one" })),
			...Array.from({ length: 100 }, (_, i) => unknownArming(i))
		];
		const dirty = await drainedSale("dirty", () => publishRaw(mall, poison));
		try {
			expect(dirty.c).toMatchObject({
				reservations: 2000,
				orders: 2000,
				liveOrders: 2000,
				dbStock: 0,
				redisRemaining: 0
			});
			expectInvariant(dirty.c);
			const rows = await sql(mall, "SELECT order_no FROM orders WHERE activity_id = ?", [dirty.activity.id]);
			expect(new Set(rows.map(r => r.order_no))).toEqual(new Set(dirty.won));

			console.log(
				`drain: clean ${clean.rate.toFixed(0)} orders/s (${clean.seconds.toFixed(2)} s, ${clean.started} ms of it the node's start), behind ${poison.length} poison messages ${dirty.rate.toFixed(0)} orders/s (${dirty.seconds.toFixed(2)} s, ${dirty.started} ms), ratio ${(dirty.rate / clean.rate).toFixed(2)}`
			);
			expect(dirty.rate).toBeGreaterThanOrEqual(0.8 * clean.rate);

			await eventually(async () => (await deadLetters(dirty.node)).length === poison.length, 20000);
			const dlq = await deadLetters(dirty.node);
			const byReason = new Map<string, number>();
			for (const m of dlq) {
				const reason = m.reason.replace(/[0-9a-f]{32}/, "<arming>");
				byReason.set(reason, (byReason.get(reason) ?? 0) + 1);
				expect(m.attempts).toBe(1);
			}
			expect(Object.fromEntries(byReason)).toEqual({
				"malformed flash-sale order message": 100,
				"unknown arming <arming>: Redis holds no flash sale of it": 100
			});
		} finally {
			await dirty.node.shutdown();
		}
	});

	it("retries through a database outage of the order actor: one order per winner, nothing dead-lettered", async () => {
		const proxy = new TcpProxy(mall.cfg.db.host, mall.cfg.db.port);
		await proxy.up();
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 200 });
		const buyers = await makeBuyers(mall, 200, "outage");
		const node = await orderNode(mall, "outage", { db: { port: proxy.port } });
		try {
			await proxy.down();
			const won = await sell(mall, buyers, pid);
			// The consumer meets a refused database for a few seconds, for every message.
			await eventually(async () => outcomes(node, "retried") >= 100, 10000, 100);
			await new Promise(r => setTimeout(r, 2000));
			await proxy.up();

			const c = await drained(mall, activity.id, 60000);
			expect(c).toMatchObject({ reservations: 200, orders: 200, liveOrders: 200, dbStock: 0, redisRemaining: 0 });
			expectInvariant(c);
			const rows = await sql(mall, "SELECT order_no, user_id FROM orders WHERE activity_id = ?", [activity.id]);
			expect(new Set(rows.map(r => r.order_no))).toEqual(new Set(won));
			expect(new Set(rows.map(r => Number(r.user_id))).size).toBe(200);
			expect(outcomes(node, "dead_lettered")).toBe(0);
			const dlq = new Set((await deadLetters(node)).map(m => m.message_id));
			expect(won.filter(no => dlq.has(no))).toEqual([]);
		} finally {
			await node.shutdown();
			await proxy.down();
		}
	});

	function outcomes(node: GomallNode, outcome: string): number {
		const metric = node.broker.metrics.getMetric("gomall_queue_messages_total") as any;
		return metric.get({ queue: "seckill", outcome })?.value ?? 0;
	}
});

it("a recreated database does not mix two sales: old messages are dead-lettered, old buyer records refuse nobody", async () => {
	let mall = await startMall({}, WITHOUT_ORDERS);
	const cfg = mall.cfg;
	try {
		// Sale 1: 50 winners whose messages are still queued when the database goes away.
		let admin = await mall.http.adminToken();
		const pid1 = await newProduct(mall, admin);
		const old = await arm(mall, admin, { product_id: pid1, stock: 50 });
		const oldWon = await sell(mall, await makeBuyers(mall, 50, "buyer"), pid1);
		expect(oldWon).toHaveLength(50);
		await mall.node.shutdown();
		await dropDatabase(cfg);

		// Same namespace (Redis keys, queues), a new database: ids start again from 1.
		mall = await startMallWith(cfg, WITHOUT_ORDERS);
		admin = await mall.http.adminToken();
		const pid2 = await newProduct(mall, admin);
		const fresh = await arm(mall, admin, { product_id: pid2, stock: 50 });
		expect([pid2, fresh.id]).toEqual([pid1, old.id]);
		expect(fresh.arming_id).not.toBe(old.arming_id);
		const buyers = await makeBuyers(mall, 50, "buyer");
		// Same user ids as the old sale's buyers; none is refused as "already bought".
		const won = await sell(mall, buyers, pid2);

		const node = await orderNode(mall, "orders");
		try {
			const c = await drained(mall, fresh.id);
			expect(c).toMatchObject({ reservations: 50, orders: 50, liveOrders: 50, dbStock: 0, redisRemaining: 0 });
			expectInvariant(c);
			const rows = await sql(mall, "SELECT order_no FROM orders");
			expect(new Set(rows.map(r => r.order_no))).toEqual(new Set(won));
			await eventually(async () => (await deadLetters(node)).length === 50, 20000);
			const dlq = await deadLetters(node);
			expect(new Set(dlq.map(m => m.message_id))).toEqual(new Set(oldWon));
			for (const m of dlq)
				expect(m.reason).toBe(
					`stale arming: activity ${fresh.id} is arming ${fresh.arming_id}, the message is of arming ${old.arming_id}`
				);
		} finally {
			await node.shutdown();
		}
		expect((await counts(mall, fresh.id)).orders).toBe(50);
	} finally {
		await mall.stop();
	}
});
