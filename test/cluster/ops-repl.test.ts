/**
 * The operator's REPL commands, typed into a real `--repl` node of a process cluster after a
 * known sale, and the numbers in the printed tables checked against the sale.
 */
import amqp from "amqplib";
import { names, SECKILL_ROUTING_KEY } from "../../lib/messaging/topology";
import { counts, drained, expectInvariant } from "../helpers/seckill";
import { eventually } from "../helpers/proc";
import { ProcCluster, ReplSession, Tally, drive, parseTable } from "./nodes";

let cluster: ProcCluster;
let repl: ReplSession;

beforeAll(async () => {
	cluster = new ProcCluster();
	await cluster.open();
	await cluster.start("gateway", ["api"]);
	await cluster.start("catalogue", ["user", "product", "cart"]);
	await Promise.all([
		cluster.start("orders", ["order"]),
		cluster.start("stock-1", ["stock"]),
		cluster.start("stock-2", ["stock"])
	]);
}, 120000);

afterAll(async () => {
	await cluster?.close();
}, 60000);

const num = (s: string | undefined) => Number(s);

it("prints the nodes, the sale, its reconciliation and the dead letters as tables with the sale's numbers", async () => {
	// The known sale: 80 buyers, one request each, for 50 units (limit 1).
	const admin = await cluster.http.adminToken();
	const p = await cluster.http.post("/api/product", { name: "Console phone", price: 500, stock: 1000 }, admin);
	const a = await cluster.http.post("/api/seckill/init", { product_id: p.body.data.id, stock: 50 }, admin);
	const pid: number = p.body.data.id;
	const activityId: number = a.body.data.id;
	const buyers = await cluster.buyers(80, "console");
	const tally = new Tally();
	await drive(buyers, 8, async b => {
		const r = await cluster.http.post("/api/seckill", { product_id: pid }, b.token);
		tally.add(r.status, r.body?.code);
	});
	expect(tally.toJSON()).toEqual({ "200/0": 50, "409/60003": 30 });
	const c = await drained(cluster.asMall(), activityId);
	expectInvariant(c);

	// A message the order writer cannot read goes to the dead-letter queue.
	const conn = await amqp.connect(cluster.cfg.amqp.url);
	const ch = await conn.createConfirmChannel();
	ch.publish(
		names(cluster.cfg.namespace).orderExchange,
		SECKILL_ROUTING_KEY,
		Buffer.from(JSON.stringify({ not: "an order" })),
		{ persistent: true, messageId: "poison-1" }
	);
	await ch.waitForConfirms();
	await conn.close();

	repl = await cluster.repl("console");
	// Wait until both stock nodes and the gateway have the sold-out flag (a broadcast) before reading the status.
	await eventually(async () =>
		(
			await Promise.all([
				...["stock-1", "stock-2"].map(n => cluster.observer.call<any, any>("stock.node", {}, { nodeID: n })),
				cluster.observer.call<any, any>("api.node", {}, { nodeID: "gateway" })
			])
		).every(s => s.sold_out.includes(pid))
	);

	const status = parseTable(await repl.run(`gomall-status ${pid}`), "flash-sale activities");
	expect(status).toHaveLength(1);
	expect(status[0]).toMatchObject({
		activity: String(activityId),
		product: String(pid),
		armed: "yes",
		initial: "50",
		redis_left: "0",
		reserved: "0",
		claimed: "0",
		ordered: "50",
		buyers: "50",
		orders: "50",
		closed: "0",
		db_stock: "0",
		invariant: "holds"
	});
	expect(status[0].sold_out_on.split(",").sort()).toEqual(["gateway", "stock-1", "stock-2"]);

	// Per node: what each answered (the gateway its flag's sold-out answers, the stock nodes the
	// rest), adding up to the sale's answers.
	const seckill = parseTable(await repl.run("gomall-seckill"), "flash-sale requests served, per node");
	expect(seckill.map(r => [r.node, r.actor])).toEqual([
		["gateway", "api"],
		["stock-1", "stock"],
		["stock-2", "stock"]
	]);
	const sum = (k: string) => seckill.reduce((s, r) => s + num(r[k]), 0);
	expect([sum("served"), sum("queued"), sum("sold_out"), sum("limit"), sum("other")]).toEqual([80, 50, 30, 0, 0]);
	const stockRows = seckill.filter(r => r.actor === "stock");
	for (const r of stockRows) expect(num(r.served)).toBeGreaterThan(0); // the gateway balanced over both
	expect(num(seckill[0].queued)).toBe(0); // a gateway never answers a win itself

	const nodesOut = await repl.run("gomall-nodes");
	const nodes = parseTable(nodesOut, "nodes");
	expect(
		nodes
			.map(r => r.node.replace(" (this)", ""))
			.filter(n => !n.startsWith("observer"))
			.sort()
	).toEqual(["catalogue", "console", "gateway", "orders", "stock-1", "stock-2"]);
	const row = (id: string) => nodes.find(r => r.node.replace(" (this)", "") === id)!;
	expect(row("console").node).toBe("console (this)");
	expect(row("stock-1").actors).toBe("stock");
	expect(row("catalogue").actors).toBe("cart,product,user");
	expect(row("gateway").address).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
	expect(row("stock-1").uptime).toMatch(/^\d+s$/);
	// Requests each node's actors handled: the stock nodes every reserve that reached them.
	const stockServed = stockRows.reduce((s, r) => s + num(r.served), 0);
	expect(num(row("stock-1").requests) + num(row("stock-2").requests)).toBeGreaterThanOrEqual(stockServed);
	expect(parseTable(nodesOut, "flash-sale requests served, per node").reduce((s, r) => s + num(r.served), 0)).toBe(80);

	const rec = parseTable(await repl.run(`gomall-reconcile ${activityId}`), "reconciliation");
	expect(rec[0]).toMatchObject({
		activity: String(activityId),
		initial: "50",
		redis_left: "0",
		reservations: "50",
		db_stock: "0",
		live_orders: "50",
		republished: "0",
		requeued: "0",
		unconfirmed: "0",
		failed: "0",
		orphans: "0",
		invariant: "holds"
	});

	await eventually(
		async () =>
			(await cluster.observer.call<any, any>("order.deadLetters", { queue: "seckill", limit: 10 })).messages.length ===
			1
	);
	const dlqOut = await repl.run("gomall-dlq seckill");
	expect(dlqOut).toMatch(/: 1 message\(s\)/);
	const dlq = parseTable(dlqOut, names(cluster.cfg.namespace).seckillDlq);
	expect(dlq).toEqual([expect.objectContaining({ message_id: "poison-1", order_no: "-" })]);
	expect(dlq[0].reason).toMatch(/malformed/);
	expect(await repl.run("gomall-dlq-replay seckill 10")).toMatch(/replayed 1 message\(s\)/);

	// The prompt was not drowned: after the REPL opened, no info line reached the terminal.
	const out = repl.output();
	const opened = out.indexOf("REPL open");
	expect(opened).toBeGreaterThan(0);
	expect(out.slice(opened)).not.toMatch(/"level":30/);
	expect((await counts(cluster.asMall(), activityId)).orders).toBe(50);
}, 180000);
