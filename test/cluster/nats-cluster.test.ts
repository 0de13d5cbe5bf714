/**
 * The actors' transport on a real 3-server NATS cluster started here: the gateway node and the
 * stock + order node each know every server, and the server the gateway is connected to is
 * SIGKILLed mid-sale.
 */
import type { Config } from "../../config";
import { GomallNode, startNode } from "../../bootstrap/node";
import { startMall, TestMall } from "../helpers/node";
import { eventually } from "../helpers/proc";
import { NatsCluster } from "../helpers/servers";
import { arm, buy, Buyer, counts, drained, expectInvariant, makeBuyers, newProduct, sql } from "../helpers/seckill";
import { drive, Tally } from "./nodes";

let nats: NatsCluster;
let mall: TestMall;
let back: GomallNode;
let admin: string;

/** host:port of the NATS server a node's transporter is connected to now. */
const serverOf = (node: GomallNode) => String((node.broker.transit as any).tx.client.getServer());

beforeAll(async () => {
	nats = await new NatsCluster().start();
	mall = await startMall({ nats: { url: nats.urls(nats.ports[0]) }, seckill: { reconcile_age: 2 } }, [
		"api",
		"user",
		"product",
		"cart"
	]);
	const cfg: Config = { ...mall.cfg, nats: { url: nats.urls(nats.ports[1]) } };
	back = await startNode(cfg, ["stock", "order"], { nodeID: `${mall.cfg.node_id}-back` });
	admin = await mall.http.adminToken();
	await mall.node.broker.waitForServices(["stock", "order"], 20000);
}, 60000);

afterAll(async () => {
	await back?.shutdown();
	await mall?.stop();
	await nats?.stop();
}, 60000);

it("keeps serving a sale when the NATS server the gateway is connected to is SIGKILLed: a short blip of 503, no accepted reservation lost", async () => {
	const STOCK = 600;
	const pid = await newProduct(mall, admin);
	const activity = await arm(mall, admin, { product_id: pid, stock: STOCK });
	const buyers = await makeBuyers(mall, 1500, "natskill");
	const before = serverOf(mall.node);
	const killed = Number(before.split(":")[1]);
	expect(nats.ports).toContain(killed);

	const tally = new Tally();
	const wins = new Map<number, string>();
	const retry: Buyer[] = [];
	const send = async (b: Buyer) => {
		const r = await buy(mall, b, pid);
		tally.add(r.status, r.body?.code);
		if (r.status === 200) wins.set(b.id, r.body.data.order_no);
		else if (r.status >= 500) retry.push(b);
	};
	let killedAt = 0;
	let firstWinAfterKill = 0;
	await drive(
		buyers,
		24,
		async b => {
			await send(b);
			if (killedAt && !firstWinAfterKill && wins.has(b.id)) firstWinAfterKill = Date.now() - killedAt;
		},
		{
			300: () => {
				nats.kill(killed);
				killedAt = Date.now();
			}
		}
	);
	const blip = tally.toJSON();
	for (let round = 0; round < 2 && retry.length; round++) await drive(retry.splice(0), 24, send);

	// The gateway moved to a live member and the sale went on through it.
	expect(serverOf(mall.node)).not.toBe(before);
	expect(firstWinAfterKill).toBeGreaterThan(0);
	for (const key of tally.byKey.keys())
		expect(["200/0", "409/60003", "503/503", "503/60005", "504/504"]).toContain(key);

	await eventually(
		async () => {
			const report = ((await mall.node.broker.call("stock.reconcile", { activity_id: activity.id })) as any)
				.activities[0];
			const c = await counts(mall, activity.id);
			return report.consistent && c.ordered === c.reservations && c.liveOrders === c.reservations;
		},
		60000,
		1000
	);
	const c = await drained(mall, activity.id);
	expectInvariant(c);
	expect(c).toMatchObject({
		reservations: STOCK,
		orders: STOCK,
		redisRemaining: 0,
		dbStock: 0,
		distinctBuyerSeq: STOCK
	});
	// No accepted reservation lost: every buyer told "queued" has that order, and only one.
	const orders = await sql(mall, "SELECT order_no, user_id FROM orders WHERE activity_id = ?", [activity.id]);
	const byNo = new Map(orders.map(o => [o.order_no, Number(o.user_id)]));
	for (const [user, orderNo] of wins) expect([orderNo, byNo.get(orderNo)]).toEqual([orderNo, user]);
	expect(new Set(orders.map(o => Number(o.user_id))).size).toBe(orders.length);
	console.log(
		`NATS server ${killed} SIGKILLed; gateway moved ${before} -> ${serverOf(mall.node)}; first win ${firstWinAfterKill} ms after the kill; answers during the sale ${JSON.stringify(blip)}; after retries ${JSON.stringify(tally)}`
	);
}, 240000);
