import { spawnSync } from "node:child_process";
import { startMall, TestMall } from "../helpers/node";

let mall: TestMall;

beforeAll(async () => {
	mall = await startMall({ http: { body_limit: "1kb", cors_origins: ["https://shop.example"] } });
});
afterAll(() => mall?.stop());

describe("error envelope", () => {
	it("answers an unknown route with 404 in the envelope", async () => {
		for (const path of ["/api/nope", "/api/user/nope", "/nothing-here"]) {
			const r = await mall.http.get(path);
			expect(r.status).toBe(404);
			expect(r.body).toMatchObject({ code: 404, data: null });
			expect(r.body.trace_id === null || typeof r.body.trace_id === "string").toBe(true);
		}
	});

	it("answers malformed JSON with 400", async () => {
		const r = await mall.http.request("POST", "/api/user/login", { raw: '{"username": ' });
		expect([r.status, r.body.code]).toEqual([400, 400]);
		expect(r.body.message).toMatch(/malformed/i);
	});

	it("answers an oversized body with 413 in the envelope", async () => {
		const r = await mall.http.post("/api/user/register", { username: "big_body", password: "x".repeat(4000) });
		expect(r.status).toBe(413);
		expect(r.body.code).toBe(400);
	});

	it("never leaks a stack trace", async () => {
		const r = await mall.http.request("POST", "/api/user/login", { raw: "[1,2" });
		expect(JSON.stringify(r.body)).not.toMatch(/at .*\.js|stack|node_modules/);
	});
});

describe("headers", () => {
	it("sets security headers and the trace id", async () => {
		const r = await mall.http.get("/api/product");
		expect(r.headers.get("x-content-type-options")).toBe("nosniff");
		expect(r.headers.get("x-frame-options")).toBe("DENY");
		expect(r.headers.get("x-trace-id")).toBe(r.body.trace_id);
	});

	it("answers CORS preflight for an allowed origin only", async () => {
		const ok = await fetch(`${mall.baseUrl}/api/product`, {
			method: "OPTIONS",
			headers: { origin: "https://shop.example", "access-control-request-method": "POST" }
		});
		expect(ok.headers.get("access-control-allow-origin")).toBe("https://shop.example");
		const bad = await fetch(`${mall.baseUrl}/api/product`, {
			method: "OPTIONS",
			headers: { origin: "https://evil.example", "access-control-request-method": "POST" }
		});
		expect(bad.headers.get("access-control-allow-origin")).toBeNull();
	});
});

describe("operations", () => {
	it("/health probes every component for real", async () => {
		let r = await mall.http.get("/health");
		for (let i = 0; i < 20 && r.body.status !== "healthy"; i++) {
			await new Promise(res => setTimeout(res, 250)); // the gateway's RabbitMQ probe connects in the background
			r = await mall.http.get("/health");
		}
		expect(r.status).toBe(200);
		expect(r.body).toEqual({
			status: "healthy",
			components: { database: "up", redis: "up", rabbitmq: "up", nats: "up", consumers: "up" }
		});
	});

	it("/ready is 200 once started", async () => {
		const r = await mall.http.get("/ready");
		expect([r.status, r.body.status]).toEqual([200, "ready"]);
	});

	it("/metrics exports every gomall_* counter from start, at 0 for each known label set", async () => {
		// A mall of its own that nobody has called yet.
		const fresh = await startMall();
		try {
			const text = await (await fetch(`${fresh.baseUrl}/metrics`)).text();
			const expected = [
				...["queued", "handoff_failed", "no_activity", "not_started", "ended", "limit", "sold_out"].map(
					r => `gomall_seckill_requests_total{result="${r}"`
				),
				"gomall_seckill_success_total",
				...["order", "checkout", "seckill"].map(k => `gomall_orders_created_total{kind="${k}"`),
				...["success", "wrong_password", "disabled"].map(r => `gomall_user_logins_total{result="${r}"`),
				...["seckill", "close"].flatMap(q =>
					["acked", "retried", "dead_lettered"].map(o => `gomall_queue_messages_total{queue="${q}",outcome="${o}"`)
				),
				'gomall_rate_limit_rejected_total{layer="local",tier="api"',
				"gomall_rate_limit_errors_total"
			];
			const samples = new Map(
				text
					.split("\n")
					.filter(l => l.startsWith("gomall_"))
					.map(l => [l.slice(0, l.lastIndexOf(" ")), l.slice(l.lastIndexOf(" ") + 1)])
			);
			for (const series of expected) {
				const match = [...samples.keys()].find(
					k => k === series || k.startsWith(series + ",") || k.startsWith(series + "}") || k.startsWith(series + "{")
				);
				expect({ series, value: match ? samples.get(match) : "absent" }).toEqual({ series, value: "0" });
			}
		} finally {
			await fresh.stop();
		}
	});

	it("/metrics serves Prometheus text that promtool accepts, with route patterns as labels", async () => {
		const admin = await mall.http.adminToken();
		const p = await mall.http.post("/api/product", { name: "m", price: 1, stock: 1 }, admin);
		await mall.http.get(`/api/product/${p.body.data.id}`);
		await mall.http.get("/api/product/999999");
		await mall.http.post("/api/user/login", { username: "nobody", password: "wrong-password" });
		const res = await fetch(`${mall.baseUrl}/metrics`);
		expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
		const text = await res.text();
		expect(text).toMatch(/# TYPE moleculer_request_total counter/);
		expect(text).toMatch(/gomall_http_requests_total\{method="GET",route="\/api\/product\/:id",status="200"\} 1/);
		expect(text).toMatch(/gomall_http_requests_total\{method="GET",route="\/api\/product\/:id",status="404"\} 1/);
		expect(text).toMatch(
			/gomall_http_request_duration_seconds_bucket\{method="POST",route="\/api\/product",status="200",le="\+Inf"\} 1/
		);
		expect(text).toMatch(/gomall_user_logins_total\{result="success"\} \d+/);
		expect(text).toMatch(/gomall_user_logins_total\{result="wrong_password"\} 1/);
		// promtool (Debian package prometheus) lints names, types, help and labels.
		const check = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
		expect(check.error).toBeUndefined();
		expect({ status: check.status, problems: check.stdout + check.stderr }).toEqual({ status: 0, problems: "" });
	});

	it("keeps no sample of each request for quantiles, which a scrape would sort on the event loop; the buckets stay", async () => {
		for (let i = 0; i < 20; i++) await mall.http.get("/api/product/999999");
		const metric = mall.node.broker.metrics.getMetric("moleculer.request.time") as any;
		const items = [...metric.values.values()];
		expect(items.length).toBeGreaterThan(0);
		for (const item of items) {
			expect(item.quantileValues).toBeUndefined();
			expect(Object.values(item.bucketValues).some(n => Number(n) > 0)).toBe(true);
		}
		const text = await (await fetch(`${mall.baseUrl}/metrics`)).text();
		expect(text).toMatch(/moleculer_request_time_bucket\{[^}]*action="product\.get"[^}]*le="\+Inf"\} \d+/);
		expect(text).not.toMatch(/quantile="/);
	});
});
