import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import amqp from "amqplib";
import Redis from "ioredis";
import { LUA_DIR } from "../../config/paths";
import { names } from "../../lib/messaging/topology";
import { startMall, TestMall } from "../helpers/node";
import { eventually } from "../helpers/proc";
import { arm, buy, counts, drained, exec, expectInvariant, makeBuyers, newProduct, sql } from "../helpers/seckill";

let mall: TestMall;
let admin: string;

beforeAll(async () => {
	mall = await startMall({ seckill: { max_deliveries: 3 } });
	admin = await mall.http.adminToken();
});
afterAll(() => mall?.stop());

async function sale(limit: number, tag: string) {
	const pid = await newProduct(mall, admin);
	const activity = await arm(mall, admin, { product_id: pid, stock: 100, limit_per_user: limit, seckill_price: 1.99 });
	const buyers = await makeBuyers(mall, 500, tag);
	// 2,000 requests at once: every buyer four times.
	const requests = buyers.flatMap(b => [b, b, b, b]);
	const results = await Promise.all(requests.map(b => buy(mall, b, pid).then(r => ({ b, r }))));
	return { pid, activity, results };
}

describe("2,000 concurrent requests from 500 buyers for stock 100", () => {
	it.each([[1], [2]])(
		"sells exactly 100 with limit %i: one order per win, no buyer over the limit, stock 0 in Redis and MySQL",
		async limit => {
			const { activity, results } = await sale(limit, `lim${limit}`);
			const wins = results.filter(x => x.r.status === 200);
			expect(wins).toHaveLength(100);
			for (const { r } of wins)
				expect(r.body.data).toEqual({
					order_no: expect.stringMatching(/^\d{24}$/),
					success: true,
					status: "queued",
					message: expect.any(String)
				});
			const losers = results.filter(x => x.r.status !== 200);
			expect([...new Set(losers.map(x => `${x.r.status}/${x.r.body.code}`))].sort()).toEqual([
				"409/60003",
				"409/60004"
			]);
			const perBuyer = new Map<number, number>();
			for (const { b } of wins) perBuyer.set(b.id, (perBuyer.get(b.id) ?? 0) + 1);
			expect(Math.max(...perBuyer.values())).toBeLessThanOrEqual(limit);

			const c = await drained(mall, activity.id);
			expect(c).toMatchObject({
				initial: 100,
				redisRemaining: 0,
				reservations: 100,
				dbStock: 0,
				orders: 100,
				liveOrders: 100,
				distinctBuyerSeq: 100
			});
			expectInvariant(c);
			const rows = await sql(mall, "SELECT order_no, user_id FROM orders WHERE activity_id = ?", [activity.id]);
			expect(new Set(rows.map(r => r.order_no))).toEqual(new Set(wins.map(w => w.r.body.data.order_no)));
			const byUser = new Map<number, number>();
			for (const r of rows) byUser.set(Number(r.user_id), (byUser.get(Number(r.user_id)) ?? 0) + 1);
			expect(Math.max(...byUser.values())).toBeLessThanOrEqual(limit);
		}
	);
});

describe("one buyer firing 50 concurrent requests", () => {
	it.each([[1], [3]])("wins exactly its limit of %i", async limit => {
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 20, limit_per_user: limit });
		const [b] = await makeBuyers(mall, 1, `solo${limit}`);
		const results = await Promise.all(Array.from({ length: 50 }, () => buy(mall, b, pid)));
		expect(results.filter(r => r.status === 200)).toHaveLength(limit);
		expect(results.filter(r => r.status !== 200).every(r => r.body.code === 60004)).toBe(true);
		const c = await drained(mall, activity.id);
		expect(c).toMatchObject({ reservations: limit, orders: limit, redisRemaining: 20 - limit, dbStock: 20 - limit });
	});
});

describe("business codes", () => {
	it("answers 60001 before the start, 60002 after the end, 60003 sold out, 60004 over the limit, 60008 with no activity", async () => {
		const [b1, b2, b3] = await makeBuyers(mall, 3, "codes");
		const early = await newProduct(mall, admin);
		await arm(mall, admin, { product_id: early, stock: 5, start_time: new Date(Date.now() + 3600_000).toISOString() });
		const late = await newProduct(mall, admin);
		await arm(mall, admin, {
			product_id: late,
			stock: 5,
			start_time: new Date(Date.now() - 7200_000).toISOString(),
			end_time: new Date(Date.now() - 3600_000).toISOString()
		});
		const one = await newProduct(mall, admin);
		await arm(mall, admin, { product_id: one, stock: 2 });
		const none = await newProduct(mall, admin);

		const code = async (r: Promise<any>) => ((x: any) => [x.status, x.body.code])(await r);
		expect(await code(buy(mall, b1, early))).toEqual([400, 60001]);
		expect(await code(buy(mall, b1, late))).toEqual([400, 60002]);
		expect(await code(buy(mall, b1, one))).toEqual([200, 0]);
		expect(await code(buy(mall, b1, one))).toEqual([409, 60004]);
		expect(await code(buy(mall, b2, one))).toEqual([200, 0]);
		expect(await code(buy(mall, b3, one))).toEqual([409, 60003]);
		expect(await code(buy(mall, b1, none))).toEqual([404, 60008]);
		expect(await code(buy(mall, b1, 99999999))).toEqual([404, 60008]);
		expect(await code(mall.http.post("/api/seckill", { product_id: "abc" }, b1.token))).toEqual([400, 400]);
		expect(await code(mall.http.post("/api/seckill", { product_id: one }))).toEqual([401, 401]);
	});

	it("validates init: admin only, a known product, a sane window", async () => {
		const user = await mall.http.newUser();
		const pid = await newProduct(mall, admin);
		const code = (r: any) => [r.status, r.body.code];
		expect(code(await mall.http.post("/api/seckill/init", { product_id: pid, stock: 5 }, user.token))).toEqual([
			403, 10010
		]);
		expect(code(await mall.http.post("/api/seckill/init", { product_id: 99999999, stock: 5 }, admin))).toEqual([
			404, 20001
		]);
		expect(code(await mall.http.post("/api/seckill/init", { product_id: pid, stock: 0 }, admin))).toEqual([400, 400]);
		const now = Date.now();
		const bad = await mall.http.post(
			"/api/seckill/init",
			{
				product_id: pid,
				stock: 5,
				start_time: new Date(now).toISOString(),
				end_time: new Date(now - 1000).toISOString()
			},
			admin
		);
		expect(code(bad)).toEqual([400, 400]);
		expect((await sql(mall, "SELECT COUNT(*) AS n FROM seckill_activities WHERE product_id = ?", [pid]))[0].n).toBe(0);
	});

	it("lists active and upcoming activities with live stock, and reports each buyer's result", async () => {
		const pid = await newProduct(mall, admin, { name: "Listed", price: 50 });
		const activity = await arm(mall, admin, { product_id: pid, stock: 3, seckill_price: 9.9 });
		const [b, other] = await makeBuyers(mall, 2, "result");
		expect((await mall.http.get(`/api/seckill/result?product_id=${pid}`, b.token)).body.data).toEqual({
			status: "failed",
			order_no: null
		});
		const won = await buy(mall, b, pid);
		const no = won.body.data.order_no;
		await drained(mall, activity.id);
		expect((await mall.http.get(`/api/seckill/result?product_id=${pid}`, b.token)).body.data).toEqual({
			status: "success",
			order_no: no
		});
		expect((await mall.http.get(`/api/seckill/result?product_id=${pid}`, other.token)).body.data.status).toBe("failed");
		const list = await mall.http.get("/api/seckill");
		expect(list.body.data).toContainEqual({
			id: activity.id,
			product_id: pid,
			product_name: "Listed",
			product_image: "",
			original_price: 50,
			seckill_price: 9.9,
			stock: 2,
			start_time: expect.any(String),
			end_time: expect.any(String)
		});
		const order = await mall.http.get(`/api/order/${no}`, b.token);
		expect(order.body.data).toMatchObject({ status: 1, total_price: 9.9, quantity: 1, product_id: pid });
	});
});

describe("shedding", () => {
	it("answers sold out from memory without touching Redis, and re-arming clears the flag", async () => {
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 1 });
		const buyers = await makeBuyers(mall, 201, "shed");
		expect((await buy(mall, buyers[0], pid)).status).toBe(200);
		await eventually(async () => (await buy(mall, buyers[1], pid)).body.code === 60003);
		await drained(mall, activity.id); // the consumer's claim and mark are EVALSHA calls too
		// Every command Redis receives meanwhile, by MONITOR: the reservation script's SHA must not be
		// among them. (Counting all EVALSHA calls also counted the leases' renewals, which run on
		// their own timers: the worker id's, the reconciliation's.)
		const reserveSha = crypto
			.createHash("sha1")
			.update(fs.readFileSync(path.join(LUA_DIR, "seckill_reserve.lua")))
			.digest("hex");
		const monitor = await new Redis(mall.cfg.redis.url).monitor();
		const scripts: string[] = [];
		monitor.on("monitor", (_time: string, args: string[]) => {
			if (/^evalsha$/i.test(args[0] ?? "")) scripts.push(String(args[1]));
		});
		let results: { body: { code: number } }[];
		try {
			results = await Promise.all(buyers.slice(1).map(b => buy(mall, b, pid)));
		} finally {
			monitor.disconnect();
		}
		expect(results.every(r => r.body.code === 60003)).toBe(true);
		expect(scripts.filter(sha => sha === reserveSha)).toEqual([]);

		await arm(mall, admin, { product_id: pid, stock: 1 });
		await eventually(async () => (await buy(mall, buyers[2], pid)).status === 200);
	});
});

describe("idempotent order writing and the dead-letter queue", () => {
	const closeAfter: { close(): Promise<void> }[] = [];
	afterEach(async () => {
		for (const c of closeAfter.splice(0)) await c.close().catch(() => undefined);
	});

	async function channel() {
		const conn = await amqp.connect(mall.cfg.amqp.url);
		const ch = await conn.createConfirmChannel();
		return { conn, ch };
	}

	it("makes one order when the same message is delivered twice", async () => {
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 5 });
		const [b] = await makeBuyers(mall, 1, "twice");
		const no = (await buy(mall, b, pid)).body.data.order_no;
		await drained(mall, activity.id);
		const [row] = await sql(mall, "SELECT seckill_seq, product_name, unit_price FROM orders WHERE order_no = ?", [no]);
		const msg = {
			order_no: no,
			activity_id: activity.id,
			arming_id: activity.arming_id,
			product_id: pid,
			user_id: b.id,
			seq: row.seckill_seq,
			product_name: row.product_name,
			product_image: "",
			price: String(row.unit_price)
		};
		const { conn, ch } = await channel();
		closeAfter.push(conn);
		const n = names(mall.cfg.namespace);
		for (let i = 0; i < 2; i++)
			ch.publish(n.orderExchange, "seckill", Buffer.from(JSON.stringify(msg)), { persistent: true, messageId: no });
		await ch.waitForConfirms();
		await new Promise(r => setTimeout(r, 1000));
		const c = await drained(mall, activity.id);
		expect(c).toMatchObject({ orders: 1, reservations: 1, dbStock: 4, redisRemaining: 4 });
	});

	it("dead-letters a poison message and an unwritable one at once with their reasons, and replays a fixed one", async () => {
		const n = names(mall.cfg.namespace);
		const { conn, ch } = await channel();
		closeAfter.push(conn);
		ch.publish(n.orderExchange, "seckill", Buffer.from("{not json"), { persistent: true, messageId: "poison-1" });
		await ch.waitForConfirms();
		await eventually(async () => (await ch.checkQueue(n.seckillDlq)).messageCount === 1, 20000);

		// A real reservation whose order cannot be written: the activity's DB stock is out of sync.
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 2 });
		await exec(mall, "UPDATE seckill_activities SET stock = 0 WHERE id = ?", [activity.id]);
		const [b] = await makeBuyers(mall, 1, "dlq");
		const no = (await buy(mall, b, pid)).body.data.order_no;
		await eventually(async () => (await ch.checkQueue(n.seckillDlq)).messageCount === 2, 20000);
		await conn.close();
		closeAfter.pop();
		expect((await sql(mall, "SELECT COUNT(*) AS n FROM orders WHERE order_no = ?", [no]))[0].n).toBe(0);

		const listed = (await mall.node.broker.call("order.deadLetters", { queue: "seckill" })) as any;
		expect(listed.messages.map((m: any) => m.message_id).sort()).toEqual([no, "poison-1"].sort());
		// Neither can ever succeed, so neither used up retries: one attempt each.
		expect(listed.messages.find((m: any) => m.message_id === no)).toMatchObject({
			reason: `activity ${activity.id} has no database stock left`,
			attempts: 1
		});
		expect(listed.messages.find((m: any) => m.message_id === "poison-1")).toMatchObject({
			reason: "malformed flash-sale order message",
			attempts: 1
		});

		await exec(mall, "UPDATE seckill_activities SET stock = 2 WHERE id = ?", [activity.id]);
		const replay = (await mall.node.broker.call("order.replayDeadLetters", { queue: "seckill" })) as any;
		expect(replay.replayed).toBe(2);
		const c = await drained(mall, activity.id);
		expect(c).toMatchObject({ orders: 1, reservations: 1, dbStock: 1, redisRemaining: 1 });
		expectInvariant(c);
		// The poison message went round again and is back in the DLQ, not looping.
		await eventually(
			async () =>
				((await mall.node.broker.call("order.deadLetters", { queue: "seckill" })) as any).messages.length === 1,
			20000
		);
	});
});

describe("POST /api/seckill's own lane keeps the gateway's contract", () => {
	const raw = (body: string, headers: Record<string, string>) =>
		fetch(`${mall.baseUrl}/api/seckill`, { method: "POST", headers, body });

	it("answers bad input with the envelope, the status and a trace id, in the same shapes as every route", async () => {
		const [b] = await makeBuyers(mall, 1, "lane");
		const auth = { authorization: `Bearer ${b.token}` };
		const cases: [string, Record<string, string>, number, number, unknown][] = [
			["{not json", { "content-type": "application/json", ...auth }, 400, 400, null],
			["5", { "content-type": "application/json", ...auth }, 400, 400, null],
			[
				JSON.stringify({ product_id: 1, pad: "x".repeat(70_000) }),
				{ "content-type": "application/json", ...auth },
				413,
				400,
				null
			],
			[JSON.stringify({ product_id: 1 }), { "content-type": "application/json" }, 401, 401, null],
			[
				JSON.stringify({ product_id: 1 }),
				{ "content-type": "application/json", authorization: "Bearer nope" },
				401,
				10006,
				null
			],
			[
				JSON.stringify({ product_id: "abc" }),
				{ "content-type": "application/json", ...auth },
				400,
				400,
				[{ field: "product_id", message: expect.any(String) }]
			],
			[
				JSON.stringify({ product_id: 1 }),
				{ "content-type": "text/plain", ...auth },
				400,
				400,
				[{ field: "product_id", message: expect.any(String) }]
			]
		];
		for (const [body, headers, status, code, data] of cases) {
			const r = await raw(body, headers);
			const json = (await r.json()) as any;
			expect({ status: r.status, code: json.code, data: json.data }).toEqual({ status, code, data });
			expect(json.trace_id).toMatch(/^[0-9a-f]{32}$/);
			expect(r.headers.get("x-trace-id")).toBe(json.trace_id);
			expect(r.headers.get("x-content-type-options")).toBe("nosniff");
		}
	});

	it("wins with the envelope and trace id, sends CORS and security headers, and is counted under its route", async () => {
		const pid = await newProduct(mall, admin);
		await arm(mall, admin, { product_id: pid, stock: 1 });
		const [b] = await makeBuyers(mall, 1, "lanewin");
		const r = await raw(JSON.stringify({ product_id: pid }), {
			"content-type": "application/json",
			authorization: `Bearer ${b.token}`,
			origin: "https://shop.example"
		});
		const json = (await r.json()) as any;
		expect(r.status).toBe(200);
		expect(json).toEqual({
			code: 0,
			message: "success",
			data: {
				order_no: expect.stringMatching(/^\d{24}$/),
				success: true,
				status: "queued",
				message: expect.any(String)
			},
			trace_id: expect.stringMatching(/^[0-9a-f]{32}$/)
		});
		expect(r.headers.get("access-control-allow-origin")).toBe("*");
		expect(r.headers.get("x-frame-options")).toBe("DENY");
		const text = await (await fetch(`${mall.baseUrl}/metrics`)).text();
		expect(text).toMatch(/gomall_http_requests_total\{method="POST",route="\/api\/seckill",status="200"\} [1-9]/);
		expect(text).toMatch(/gomall_http_requests_total\{method="POST",route="\/api\/seckill",status="401"\} [1-9]/);
	});
});

describe("metrics", () => {
	it("counts flash-sale requests by result and created orders", async () => {
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 1 });
		const buyers = await makeBuyers(mall, 3, "metrics");
		for (const b of buyers) await buy(mall, b, pid);
		await drained(mall, activity.id);
		const text = await (await fetch(`${mall.baseUrl}/metrics`)).text();
		expect(text).toMatch(/gomall_seckill_requests_total\{[^}]*result="queued"[^}]*\} \d+/);
		expect(text).toMatch(/gomall_seckill_requests_total\{[^}]*result="sold_out"[^}]*\} \d+/);
		expect(text).toMatch(/gomall_seckill_success_total(\{[^}]*\})? \d+/);
		expect(text).toMatch(/gomall_orders_created_total\{[^}]*kind="seckill"[^}]*\} \d+/);
	});
});

it("counts() sees the same thing reconciliation does", async () => {
	const pid = await newProduct(mall, admin);
	const activity = await arm(mall, admin, { product_id: pid, stock: 3 });
	const c = await counts(mall, activity.id);
	const report = (await mall.node.broker.call("stock.reconcile", { activity_id: activity.id })) as any;
	expect(report.activities[0]).toMatchObject({
		initial: c.initial,
		redis: { remaining: c.redisRemaining, reservations: c.reservations },
		db: { stock: c.dbStock, live_orders: c.liveOrders },
		consistent: true
	});
});
