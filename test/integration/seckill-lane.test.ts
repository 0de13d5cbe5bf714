import { getConfig, setConfig } from "../../config";
import { startMall, TestMall } from "../helpers/node";
import { eventually } from "../helpers/proc";
import { arm, buy, makeBuyers, newProduct } from "../helpers/seckill";

/**
 * The lane's own answers (services/api/lane.ts): "sold out" from the gateway's flag, its
 * recheck against Redis, its metrics handed over per turn, and its sampled spans.
 */
let mall: TestMall;
let admin: string;
let api: { soldOut: Set<number> };

beforeAll(async () => {
	mall = await startMall();
	admin = await mall.http.adminToken();
	api = mall.node.broker.getLocalService("api") as unknown as { soldOut: Set<number> };
});
afterAll(() => mall?.stop());

/** A product armed with `stock` units, sold out by its first `stock` buyers, the gateway's flag set. */
async function soldOutSale(tag: string, stock = 1) {
	const pid = await newProduct(mall, admin);
	await arm(mall, admin, { product_id: pid, stock });
	const buyers = await makeBuyers(mall, 60, tag);
	for (const b of buyers.slice(0, stock)) expect((await buy(mall, b, pid)).status).toBe(200);
	await eventually(async () => api.soldOut.has(pid));
	return { pid, buyers: buyers.slice(stock) };
}

/** One sample of /metrics: `family{labels} value`, its labels matched as given. */
async function sample(family: string, labels: string): Promise<number> {
	const text = (await mall.http.request("GET", "/metrics")).body.text as string;
	const line = text.split("\n").find(l => l.startsWith(`${family}{`) && labels.split(",").every(p => l.includes(p)));
	return line ? Number(line.split(" ").pop()) : 0;
}

/** Every span the node finishes from now, until the returned stop is called. */
function watchSpans() {
	const tracer = mall.node.broker.tracer as unknown as { spanFinished(span: unknown): void };
	const original = tracer.spanFinished;
	const spans: { name: string; traceID: string; error: unknown; tags: Record<string, any> }[] = [];
	tracer.spanFinished = function (this: unknown, span: any) {
		spans.push(span);
		return original.call(this, span);
	};
	return { spans, stop: () => (tracer.spanFinished = original) };
}

function withLaneSampleRate(rate: number) {
	const cfg = getConfig();
	setConfig(Object.freeze({ ...cfg, tracing: { ...cfg.tracing, lane_sample_rate: rate } }));
	return () => setConfig(cfg);
}

it("drops a sold-out flag the stock actor no longer holds (a lost 'available' broadcast): the units sell", async () => {
	const pid = await newProduct(mall, admin);
	await arm(mall, admin, { product_id: pid, stock: 2 });
	const [b1, b2] = await makeBuyers(mall, 2, "stale");
	// The flag as a broadcast would set it, on the gateway alone, with both units still in Redis.
	api.soldOut.add(pid);
	expect((await buy(mall, b1, pid)).body.code).toBe(60003);
	// The gateway asks the stock actor every 2 s while it holds flags.
	await eventually(async () => (await buy(mall, b1, pid)).status === 200, 6000);
	expect((await buy(mall, b2, pid)).status).toBe(200);
});

it("answers sold out itself, counted once per request in the same families, and refuses a body stock.seckill refuses", async () => {
	const { pid, buyers } = await soldOutSale("counted");
	const before = {
		seckill: await sample("gomall_seckill_requests_total", 'result="sold_out"'),
		http: await sample("gomall_http_requests_total", 'route="/api/seckill",status="409"'),
		seconds: await sample("gomall_http_request_duration_seconds_count", 'route="/api/seckill",status="409"')
	};
	const answers = await Promise.all(buyers.map(b => buy(mall, b, pid)));
	expect(answers.map(a => a.body.code)).toEqual(buyers.map(() => 60003));
	// Each answer has a trace id of its own, in the envelope and the header.
	const ids = new Set(answers.map(a => a.body.trace_id));
	expect(ids.size).toBe(buyers.length);
	for (const a of answers) expect(a.headers.get("x-trace-id")).toBe(a.body.trace_id);
	expect(await sample("gomall_seckill_requests_total", 'result="sold_out"')).toBe(before.seckill + buyers.length);
	expect(await sample("gomall_http_requests_total", 'route="/api/seckill",status="409"')).toBe(
		before.http + buyers.length
	);
	expect(await sample("gomall_http_request_duration_seconds_count", 'route="/api/seckill",status="409"')).toBe(
		before.seconds + buyers.length
	);

	// A sale token that is no string: what the stock actor's validation answers for a live sale.
	const live = await newProduct(mall, admin);
	await arm(mall, admin, { product_id: live, stock: 5 });
	const bad = (p: number) => mall.http.post("/api/seckill", { product_id: p, sale_token: 12345 }, buyers[0].token);
	const fromStock = await bad(live);
	const fromGateway = await bad(pid);
	expect(fromStock.status).toBeGreaterThanOrEqual(400);
	expect([fromGateway.status, fromGateway.body.code]).toEqual([fromStock.status, fromStock.body.code]);
});

it("answers sold out from a flag set while the request waited for the shared limiter, without asking the stock actor", async () => {
	const pid = await newProduct(mall, admin);
	await arm(mall, admin, { product_id: pid, stock: 5 });
	const [buyer] = await makeBuyers(mall, 1, "limiterwait");
	const cfg = getConfig();
	setConfig(Object.freeze({ ...cfg, rate_limit: { ...cfg.rate_limit, enabled: true } }));
	const gateway = api as unknown as { limitDistributed: (...args: unknown[]) => Promise<void> };
	const limit = gateway.limitDistributed;
	// The stock actor's broadcast lands during the limiter's round trip.
	gateway.limitDistributed = async function (this: unknown, ...args: unknown[]) {
		await limit.apply(this, args);
		api.soldOut.add(pid);
	};
	try {
		expect((await buy(mall, buyer, pid)).body.code).toBe(60003);
	} finally {
		setConfig(cfg);
		gateway.limitDistributed = limit;
		api.soldOut.delete(pid);
	}
	// Had stock.seckill been asked, this buyer would hold one of the five units already.
	expect((await buy(mall, buyer, pid)).status).toBe(200);
	expect((await buy(mall, buyer, pid)).body.code).not.toBe(0);
});

it("traces the lane's sold-out answers as tracing.lane_sample_rate says, and every error", async () => {
	const { pid, buyers } = await soldOutSale("sampled");
	const watch = watchSpans();
	const restore = withLaneSampleRate(0);
	try {
		const none = await Promise.all(buyers.slice(0, 20).map(b => buy(mall, b, pid)));
		expect(none.every(a => a.body.code === 60003)).toBe(true);
		const refused = await mall.http.post("/api/seckill", { product_id: pid }, "not-a-token");
		expect(refused.status).toBe(401);
		await eventually(async () => watch.spans.some(s => s.traceID === refused.body.trace_id));
		const lane = watch.spans.filter(s => s.name === "POST /api/seckill");
		// Sampled out: no span at all for the 20; the error has one, with its trace id and status.
		expect(lane.map(s => s.traceID)).toEqual([refused.body.trace_id]);
		expect(lane[0].error).toBeTruthy();
		expect(lane[0].tags.http.status).toBe(401);

		setConfig(Object.freeze({ ...getConfig(), tracing: { ...getConfig().tracing, lane_sample_rate: 1 } }));
		watch.spans.length = 0;
		const all = await Promise.all(buyers.slice(20, 40).map(b => buy(mall, b, pid)));
		const traced = watch.spans.filter(s => s.name === "POST /api/seckill" && s.tags.result === "sold_out");
		expect(new Set(traced.map(s => s.traceID))).toEqual(new Set(all.map(a => a.body.trace_id)));
	} finally {
		restore();
		watch.stop();
	}
});

it("keeps no flag from a sold-out answer that crossed a re-arming (its units sell at once)", async () => {
	const { pid, buyers } = await soldOutSale("crossed");
	const [late, next] = buyers;
	// A gateway that missed the broadcast learns "sold out" from the stock actor's answer.
	api.soldOut.delete(pid);
	const broker = mall.node.broker as unknown as { call: (...args: any[]) => Promise<unknown> };
	const call = broker.call;
	let answered!: () => void;
	let heldAnswer!: () => void;
	const held = new Promise<void>(resolve => (heldAnswer = resolve));
	const answer = new Promise<void>(resolve => (answered = resolve));
	broker.call = async function (this: unknown, action: string, ...rest: unknown[]) {
		const result = await call.call(this, action, ...rest);
		if (action === "stock.seckill") {
			broker.call = call;
			answered();
			await held;
		}
		return result;
	};
	const lateBuy = buy(mall, late, pid);
	await answer;
	// Its "sold out" is on its way back when the product is armed again with fresh units.
	await arm(mall, admin, { product_id: pid, stock: 2 });
	heldAnswer();
	expect((await lateBuy).body.code).toBe(60003);
	expect(api.soldOut.has(pid)).toBe(false);
	expect((await buy(mall, next, pid)).status).toBe(200);
});

it("rechecks more flags than one stock.soldOut call takes, and drops those of products with no sale", async () => {
	const pid = await newProduct(mall, admin);
	await arm(mall, admin, { product_id: pid, stock: 1 });
	const [buyer] = await makeBuyers(mall, 1, "many");
	// Flags of sales gone from Redis (ended, removed), as a long-running gateway gathers them.
	const gone = Array.from({ length: 1500 }, (_, i) => 900_000_000 + i);
	for (const p of gone) api.soldOut.add(p);
	api.soldOut.add(pid);
	await eventually(async () => !api.soldOut.has(pid), 6000);
	expect(gone.filter(p => api.soldOut.has(p))).toEqual([]);
	expect((await buy(mall, buyer, pid)).status).toBe(200);
});

it("a stock node's recheck keeps a flag set while it was asking", async () => {
	const stock = mall.node.broker.getLocalService("stock") as unknown as {
		soldOut: Set<number>;
		stillSoldOut(pids: number[]): Promise<number[]>;
		recheckSoldOut(): Promise<void>;
	};
	const stale = await newProduct(mall, admin);
	await arm(mall, admin, { product_id: stale, stock: 1 });
	stock.soldOut.add(stale);
	let fresh = 0;
	const ask = stock.stillSoldOut;
	stock.stillSoldOut = async function (this: unknown, pids: number[]) {
		const answer = await ask.call(this, pids);
		// Meanwhile a sale sells out for real (its broadcast sets the flag).
		fresh = (await soldOutSale("meanwhile")).pid;
		await eventually(async () => stock.soldOut.has(fresh));
		return answer;
	};
	try {
		await stock.recheckSoldOut();
	} finally {
		stock.stillSoldOut = ask;
	}
	expect(stock.soldOut.has(stale)).toBe(false);
	expect(stock.soldOut.has(fresh)).toBe(true);
});

it("drops a sold-out broadcast of the arming before the one it last heard armed", async () => {
	const pid = await newProduct(mall, admin);
	await arm(mall, admin, { product_id: pid, stock: 1 });
	const [first, next] = await makeBuyers(mall, 2, "reordered");
	const stock = mall.node.broker.getLocalService("stock") as unknown as { soldOut: Set<number> };
	// The last unit's "sold out" broadcast is late: it arrives after the product was armed again.
	const broker = mall.node.broker as unknown as { broadcast: (...args: any[]) => unknown };
	const broadcast = broker.broadcast;
	let late: unknown[] = [];
	broker.broadcast = function (this: unknown, event: string, ...rest: unknown[]) {
		if (event === "seckill.soldout" && !late.length) return void (late = [event, ...rest]);
		return broadcast.call(this, event, ...rest);
	};
	try {
		expect((await buy(mall, first, pid)).status).toBe(200);
	} finally {
		broker.broadcast = broadcast;
	}
	expect(late[0]).toBe("seckill.soldout");
	await arm(mall, admin, { product_id: pid, stock: 2 });
	await broadcast.apply(broker, late);
	expect([api.soldOut.has(pid), stock.soldOut.has(pid)]).toEqual([false, false]);
	expect((await buy(mall, next, pid)).status).toBe(200);
});
