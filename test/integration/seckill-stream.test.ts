/**
 * Pushed results (README "Pushed results (SSE)"): 1,000 buyers subscribed over two gateway
 * nodes before a sale of 300 units, each stream's one final event checked against the
 * database; then the bounds, the heartbeat and the gauge's return to 0 once clients leave.
 */
import http from "node:http";
import { loadConfig, setConfig } from "../../config";
import { GomallNode, startNode } from "../../bootstrap/node";
import { startMall, TestMall } from "../helpers/node";
import { eventually } from "../helpers/proc";
import { arm, Buyer, drained, exec, expectInvariant, makeBuyers, newProduct, sql } from "../helpers/seckill";

let mall: TestMall;
let admin: string;
let gw2: GomallNode;
let base2: string;

const HEARTBEAT_S = 0.4;
const RETRY_MS = 1500;

beforeAll(async () => {
	mall = await startMall({
		seckill: { stream: { heartbeat_s: HEARTBEAT_S, retry_ms: RETRY_MS, per_user: 2, resync_s: 0 } }
	});
	admin = await mall.http.adminToken();
	// A second gateway in the same namespace, with no actor but the gateway: every push it
	// delivers came over the transporter from the stock and order actors of the first node.
	gw2 = await startNode(mall.cfg, ["api"], { nodeID: `${mall.cfg.node_id}-gw2` });
	base2 = `http://127.0.0.1:${(gw2.broker.getLocalService("api") as any).port()}`;
	await eventually(async () => (await fetch(`${base2}/ready`)).status === 200, 15000, 100);
	// The deciding node must know the new gateway's listeners before its pushes can reach it
	// (its INFO arrives a moment after it starts; README "Pushed results (SSE)", reconnects).
	const registry = mall.node.broker.registry as any;
	await eventually(async () => registry.events.getAllEndpoints("seckill.queued", ["api"]).length === 2, 15000, 50);
}, 60000);
afterAll(async () => {
	await gw2?.shutdown();
	await mall?.stop();
});

interface SseEvent {
	event: string;
	data: any;
}

/** One SSE client on its own socket (agent: false): what it received, and whether the server ended it. */
interface Client {
	status: Promise<number>;
	/** the JSON body of a refused (non-200) answer */
	body: Promise<any>;
	headers: Promise<http.IncomingHttpHeaders>;
	events: SseEvent[];
	pings: number;
	retry: number | null;
	/** resolves when the server ends the response */
	ended: Promise<void>;
	isEnded: boolean;
	close(): void;
}

function subscribe(base: string, token: string, productId: number): Client {
	let setStatus!: (n: number) => void;
	let setBody!: (b: any) => void;
	let setHeaders!: (h: http.IncomingHttpHeaders) => void;
	let setEnded!: () => void;
	const c: Client = {
		status: new Promise(r => (setStatus = r)),
		body: new Promise(r => (setBody = r)),
		headers: new Promise(r => (setHeaders = r)),
		events: [],
		pings: 0,
		retry: null,
		ended: new Promise(r => (setEnded = r)),
		isEnded: false,
		close: () => req.destroy()
	};
	const req = http.get(
		`${base}/api/seckill/result/stream?product_id=${productId}`,
		{ agent: false, headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" } },
		res => {
			setStatus(res.statusCode ?? 0);
			setHeaders(res.headers);
			res.setEncoding("utf8");
			let buf = "";
			res.on("data", (chunk: string) => {
				buf += chunk;
				if (res.statusCode !== 200) return;
				for (let i; (i = buf.indexOf("\n\n")) >= 0;) {
					const block = buf.slice(0, i);
					buf = buf.slice(i + 2);
					let event = "message";
					let data = "";
					for (const line of block.split("\n")) {
						if (line.startsWith(":")) c.pings++;
						else if (line.startsWith("retry: ")) c.retry = Number(line.slice(7));
						else if (line.startsWith("event: ")) event = line.slice(7);
						else if (line.startsWith("data: ")) data += line.slice(6);
					}
					if (data) c.events.push({ event, data: JSON.parse(data) });
				}
			});
			res.on("end", () => {
				c.isEnded = true;
				if (res.statusCode !== 200) setBody(JSON.parse(buf));
				setEnded();
			});
			res.on("error", () => undefined);
		}
	);
	req.on("error", () => undefined);
	return c;
}

/** The open-streams gauge as the gateway's /metrics shows it. */
async function gaugeOf(base: string): Promise<number> {
	const text = await (await fetch(`${base}/metrics`)).text();
	const m = /^gomall_seckill_streams(?:\{[^}]*\})? (\d+)/m.exec(text);
	if (!m) throw new Error("gomall_seckill_streams not on /metrics");
	return Number(m[1]);
}

const bases = () => [mall.baseUrl, base2];

function buyAt(base: string, b: Buyer, productId: number) {
	return fetch(`${base}/api/seckill`, {
		method: "POST",
		headers: { authorization: `Bearer ${b.token}`, "content-type": "application/json" },
		body: JSON.stringify({ product_id: productId })
	}).then(async r => ({ status: r.status, body: (await r.json()) as any }));
}

describe("pushed results", () => {
	it("1,000 subscribers over two gateways, 300 units: each gets exactly one final event, as the database says", async () => {
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 300 });
		const buyers = await makeBuyers(mall, 1000, "sse");

		// Subscribed before buying: half on each gateway; each has its state read (the retry: line).
		const clients = buyers.map((b, i) => subscribe(bases()[i % 2], b.token, pid));
		expect(new Set(await Promise.all(clients.map(c => c.status)))).toEqual(new Set([200]));
		await eventually(async () => clients.every(c => c.retry !== null), 20000, 100);
		expect(clients.every(c => c.retry === RETRY_MS && c.events.length === 0)).toBe(true);
		expect(await Promise.all(bases().map(gaugeOf))).toEqual([500, 500]);

		// Each buys through the gateway that does not hold its stream.
		const answers = await Promise.all(buyers.map((b, i) => buyAt(bases()[(i + 1) % 2], b, pid)));
		const winners = new Map<number, string>();
		answers.forEach((r, i) => {
			if (r.status === 200) winners.set(buyers[i].id, r.body.data.order_no);
			else expect([r.status, r.body.code]).toEqual([409, 60003]);
		});
		expect(winners.size).toBe(300);

		await Promise.race([
			Promise.all(clients.map(c => c.ended)),
			new Promise((_, reject) => setTimeout(() => reject(new Error("streams still open")), 30000))
		]);

		const c = await drained(mall, activity.id);
		expect(c).toMatchObject({ orders: 300, reservations: 300, redisRemaining: 0, dbStock: 0 });
		expectInvariant(c);
		const rows = await sql<{ order_no: string; user_id: number }>(
			mall,
			"SELECT order_no, user_id FROM orders WHERE activity_id = ?",
			[activity.id]
		);
		const ordered = new Map(rows.map(r => [Number(r.user_id), r.order_no]));
		expect(ordered).toEqual(winners);

		// Exactly one final event each, and last: queued then success for a winner (with the order
		// written), failed sold_out alone for everyone else.
		let successes = 0;
		let soldOut = 0;
		clients.forEach((cl, i) => {
			const no = ordered.get(buyers[i].id);
			if (no) {
				expect(cl.events).toEqual([
					{ event: "queued", data: { order_no: no } },
					{ event: "success", data: { order_no: no } }
				]);
				successes++;
			} else {
				expect(cl.events).toEqual([{ event: "failed", data: { reason: "sold_out" } }]);
				soldOut++;
			}
		});
		expect([successes, soldOut]).toEqual([300, 700]);

		// Every stream ended: no stream, timer or index entry is left on either gateway.
		await eventually(async () => (await Promise.all(bases().map(gaugeOf))).every(n => n === 0), 5000, 100);
		for (const node of [mall.node, gw2]) {
			const streams = (node.broker.getLocalService("api") as any).streams;
			expect(streams.size).toBe(0);
			expect(buyers.every(b => streams.countOf(b.id) === 0 && [...streams.of(pid, b.id)].length === 0)).toBe(true);
		}

		// A reconnect reads the state again: a winner's queued and success at once, a loser's sold_out.
		const winner = buyers.find(b => winners.has(b.id))!;
		const loser = buyers.find(b => !winners.has(b.id))!;
		const again = [subscribe(base2, winner.token, pid), subscribe(mall.baseUrl, loser.token, pid)];
		await Promise.all(again.map(cl => cl.ended));
		expect(again[0].events.map(e => [e.event, e.data.order_no])).toEqual([
			["queued", winners.get(winner.id)],
			["success", winners.get(winner.id)]
		]);
		expect(again[1].events).toEqual([{ event: "failed", data: { reason: "sold_out" } }]);
	}, 90000);

	it("pushes queued from the stock actor on a win, apart from the order actor; a missed success comes with the resync", async () => {
		const pid = await newProduct(mall, admin);
		await arm(mall, admin, { product_id: pid, stock: 5 });
		const [b] = await makeBuyers(mall, 1, "ssequeued");
		const order = mall.node.broker.getLocalService("order") as any;
		const announce = order.announceResults;
		// The order actor says nothing: what the stream gets is the stock actor's seckill.queued alone.
		order.announceResults = () => undefined;
		try {
			const cl = subscribe(base2, b.token, pid);
			expect(await cl.status).toBe(200);
			await eventually(async () => cl.retry !== null, 5000, 20);
			const r = await buyAt(mall.baseUrl, b, pid);
			expect(r.status).toBe(200);
			await eventually(async () => cl.events.length > 0, 5000, 20);
			expect(cl.events).toEqual([{ event: "queued", data: { order_no: r.body.data.order_no } }]);
			await eventually(
				async () => (await sql(mall, "SELECT 1 FROM orders WHERE order_no = ?", [r.body.data.order_no])).length === 1,
				10000
			);
			expect(cl.isEnded).toBe(false);
			// The missed success is what the resync (seckill.stream.resync_s; off here) repairs.
			await (gw2.broker.getLocalService("api") as any).resyncStreams();
			await cl.ended;
			expect(cl.events.map(e => e.event)).toEqual(["queued", "success"]);
		} finally {
			order.announceResults = announce;
		}
		await eventually(async () => (await gaugeOf(base2)) === 0, 5000, 50);
	}, 30000);

	it("pushes failed with the dead-letter reason, as the poll says", async () => {
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 5 });
		// The database has no unit for the order: its message is dead-lettered for good.
		await exec(mall, "UPDATE seckill_activities SET stock = 0 WHERE id = ?", [activity.id]);
		const [b] = await makeBuyers(mall, 1, "ssedlq");
		const cl = subscribe(base2, b.token, pid);
		expect(await cl.status).toBe(200);
		await eventually(async () => cl.retry !== null, 5000, 20);
		const r = await buyAt(mall.baseUrl, b, pid);
		expect(r.status).toBe(200);
		const no = r.body.data.order_no;
		await Promise.race([
			cl.ended,
			new Promise((_, reject) => setTimeout(() => reject(new Error("stream still open")), 15000))
		]);
		const poll = await mall.http.get(`/api/seckill/result?product_id=${pid}`, b.token);
		expect(poll.body.data).toMatchObject({ status: "failed", order_no: no, reason: expect.stringContaining("stock") });
		expect(cl.events).toEqual([
			{ event: "queued", data: { order_no: no } },
			{ event: "failed", data: { order_no: no, reason: poll.body.data.reason } }
		]);
		expect(await sql(mall, "SELECT 1 FROM orders WHERE order_no = ?", [no])).toEqual([]);
	}, 30000);

	it("bounds streams per user (60014) and per gateway (60015) with the envelope; a freed slot is usable again", async () => {
		const pid = await newProduct(mall, admin);
		await arm(mall, admin, { product_id: pid, stock: 5 });
		const [b, other] = await makeBuyers(mall, 2, "ssebound");
		const open = [subscribe(base2, b.token, pid), subscribe(base2, b.token, pid)];
		expect(await Promise.all(open.map(c => c.status))).toEqual([200, 200]);

		const third = subscribe(base2, b.token, pid);
		expect(await third.status).toBe(429);
		expect(await third.body).toMatchObject({ code: 60014, data: null, trace_id: expect.any(String) });
		expect(Number((await third.headers)["retry-after"])).toBeGreaterThanOrEqual(1);
		// Per gateway process: the other gateway still takes this user's stream.
		const elsewhere = subscribe(mall.baseUrl, b.token, pid);
		expect(await elsewhere.status).toBe(200);

		// The gateway's own bound, hot: room for no more than it holds now.
		const stream = { ...mall.cfg.seckill.stream, max: 2 };
		setConfig(loadConfig({ env: "test", overrides: { ...mall.cfg, seckill: { ...mall.cfg.seckill, stream } } }));
		try {
			const full = subscribe(base2, other.token, pid);
			expect(await full.status).toBe(429);
			expect(await full.body).toMatchObject({ code: 60015, data: null });
		} finally {
			setConfig(mall.cfg);
		}

		open[0].close();
		await eventually(async () => (await gaugeOf(base2)) === 1, 5000, 50);
		const freed = subscribe(base2, b.token, pid);
		expect(await freed.status).toBe(200);
		for (const c of [open[1], elsewhere, freed]) c.close();
		await eventually(async () => (await Promise.all(bases().map(gaugeOf))).every(n => n === 0), 5000, 50);
	}, 30000);

	it("sends a heartbeat comment every seckill.stream.heartbeat_s; a client that leaves mid-stream leaves no leak", async () => {
		const pid = await newProduct(mall, admin);
		await arm(mall, admin, { product_id: pid, stock: 5 });
		const buyers = await makeBuyers(mall, 6, "ssebeat");
		const clients = buyers.map((b, i) => subscribe(bases()[i % 2], b.token, pid));
		expect(await Promise.all(clients.map(c => c.status))).toEqual(Array(6).fill(200));
		await new Promise(r => setTimeout(r, HEARTBEAT_S * 1000 * 3.5));
		for (const c of clients) {
			expect(c.pings).toBeGreaterThanOrEqual(2);
			expect(c.events).toEqual([]);
			expect(c.isEnded).toBe(false);
		}
		expect(await Promise.all(bases().map(gaugeOf))).toEqual([3, 3]);

		// Clients that go away while waiting: their streams, timers and entries go with them.
		for (const c of clients) c.close();
		await eventually(async () => (await Promise.all(bases().map(gaugeOf))).every(n => n === 0), 5000, 50);
		for (const node of [mall.node, gw2]) {
			const streams = (node.broker.getLocalService("api") as any).streams;
			expect(streams.size).toBe(0);
			expect(buyers.every(b => streams.countOf(b.id) === 0)).toBe(true);
		}
	}, 30000);
});
