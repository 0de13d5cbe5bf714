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
