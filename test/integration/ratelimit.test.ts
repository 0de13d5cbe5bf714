import { ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig, setConfig } from "../../config";
import { GomallNode, startNode } from "../../bootstrap/node";
import { HttpClient, startMall, TestMall } from "../helpers/node";
import { eventually, freePort } from "../helpers/proc";
import { spyScript } from "../helpers/seckill";
import type { SharedLimiter, Verdict } from "../../lib/http/ratelimit";

// The distributed limiter gets a Redis server of its own, so the test can stop it.
let limiterRedis: ChildProcess;
let limiterPort: number;
let mall: TestMall;
let logFile: string;
const PASSWORD = "sekret-password-42";
let token = "";

beforeAll(async () => {
	limiterPort = await freePort();
	limiterRedis = spawn(
		"redis-server",
		["--port", String(limiterPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
		{ stdio: "ignore" }
	);
	await eventually(async () => {
		const { default: Redis } = await import("ioredis");
		const r = new Redis(limiterPort, "127.0.0.1", { lazyConnect: true, maxRetriesPerRequest: 0 });
		try {
			await r.connect();
			return (await r.ping()) === "PONG";
		} finally {
			r.disconnect();
		}
	}, 10000);
	logFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "gomall-log-")), "gomall.log");
	mall = await startMall({
		rate_limit: { enabled: true, redis_url: `redis://127.0.0.1:${limiterPort}` },
		log: { level: "info", output: "file", file: logFile, requests: true }
	});
});
afterAll(async () => {
	await mall?.stop();
	limiterRedis?.kill("SIGKILL");
});

/**
 * Applies rate-limit settings to the running node, as a SIGHUP reload does, and starts the
 * scenario from an empty shared budget and fresh local buckets (the login tier's is kept
 * whatever rate_limit.local says, so a scenario would inherit the last one's empty bucket).
 */
async function limits(rateLimit: Record<string, unknown>): Promise<void> {
	setConfig(
		loadConfig({ env: "test", overrides: { ...mall.cfg, rate_limit: { ...mall.cfg.rate_limit, ...rateLimit } } })
	);
	const api = mall.node.broker.getLocalService("api") as any;
	api.buckets.clear();
	api.loginBuckets.clear();
	if (limiterRedis.exitCode === null) {
		const { default: Redis } = await import("ioredis");
		const r = new Redis(limiterPort, "127.0.0.1");
		await r.flushall();
		r.disconnect();
	}
}

/** Offers 50 requests per second for `seconds`, spread over the given gateways; counts 200s. */
async function offer(clients: HttpClient[], seconds: number, headers: () => Record<string, string> = () => ({})) {
	const results: Promise<{ status: number; retryAfter: string | null; code: number }>[] = [];
	const start = Date.now();
	for (let i = 0; Date.now() - start < seconds * 1000 && i < 5000; i++) {
		const client = clients[i % clients.length];
		results.push(
			client
				.request("GET", "/api/product", { headers: headers() })
				.then(r => ({ status: r.status, retryAfter: r.headers.get("retry-after"), code: r.body.code }))
		);
		await new Promise(r => setTimeout(r, start + (i + 1) * 20 - Date.now()));
	}
	const all = await Promise.all(results);
	return {
		ok: all.filter(r => r.status === 200).length,
		refused: all.filter(r => r.status === 429),
		total: all.length
	};
}

const tier = { rate: 20, burst: 20 };
const expected = tier.burst + tier.rate * 10; // 220 over 10 s
const within5pct = (n: number) => Math.abs(n - expected) <= expected * 0.05;

describe("rate limits", () => {
	it("the local token bucket lets through the configured rate over 10 s, within 5%", async () => {
		await limits({ local: true, distributed: false, api: tier });
		const { ok, refused } = await offer([mall.http], 10);
		expect(within5pct(ok)).toBe(true);
		expect(refused.length).toBeGreaterThan(100);
		expect(refused.every(r => r.code === 429 && Number(r.retryAfter) >= 1)).toBe(true);
	}, 30000);

	it("the distributed GCRA limit does the same, and a second gateway node shares its budget", async () => {
		const second: GomallNode = await startNode(mall.cfg, ["api"], { nodeID: `${mall.cfg.node_id}-gw2` });
		await limits({ local: false, distributed: true, api: tier });
		try {
			const port = (second.broker.getLocalService("api") as any).port();
			const { ok } = await offer([mall.http, new HttpClient(`http://127.0.0.1:${port}`)], 10);
			expect(within5pct(ok)).toBe(true);
		} finally {
			await second.shutdown();
		}
	}, 40000);

	it("does not let a spoofed X-Forwarded-For move the budget", async () => {
		await limits({ local: false, distributed: true, api: { rate: 0.001, burst: 5 } });
		let n = 0;
		const { ok } = await offer([mall.http], 0.4, () => ({ "x-forwarded-for": `198.51.100.${++n}` }));
		expect(ok).toBe(5);
	});

	it("limits login per IP and the flash sale per user", async () => {
		await limits({
			local: false,
			distributed: true,
			api: { rate: 1000, burst: 1000 },
			login: { rate: 0.001, burst: 2 },
			seckill: { rate: 0.001, burst: 3 }
		});
		const reg = await mall.http.post("/api/user/register", { username: "limited_user", password: PASSWORD });
		token = reg.body.data.token;
		const logins = [];
		for (let i = 0; i < 4; i++)
			logins.push((await mall.http.post("/api/user/login", { username: "limited_user", password: PASSWORD })).status);
		expect(logins).toEqual([200, 200, 429, 429]);
		const sk = [];
		for (let i = 0; i < 5; i++) sk.push((await mall.http.post("/api/seckill", { product_id: 1 }, token)).status);
		expect(sk.slice(0, 3).every(s => s !== 429)).toBe(true);
		expect(sk.slice(3)).toEqual([429, 429]);
	});

	it("answers a sold-out product's flash-sale requests without the shared limiter; a live one is limited per user", async () => {
		await limits({
			local: false,
			distributed: true,
			api: { rate: 1000, burst: 1000 },
			seckill: { rate: 0.001, burst: 1 }
		});
		const admin = await mall.http.adminToken();
		const product = async (stock: number) => {
			const pid = (await mall.http.post("/api/product", { name: "limited phone", price: 1, stock: 10 }, admin)).body
				.data.id;
			await mall.http.post("/api/seckill/init", { product_id: pid, stock }, admin);
			return pid;
		};
		const live = await product(100);
		const soldOut = await product(1);
		const { token: winner } = await mall.http.newUser("w");
		expect((await mall.http.post("/api/seckill", { product_id: soldOut }, winner)).status).toBe(200);
		const { token: t } = await mall.http.newUser("sk");
		// The gateway learns "sold out" from the stock actor's broadcast.
		await eventually(
			async () => (await mall.http.post("/api/seckill", { product_id: soldOut }, t)).body.code === 60003,
			5000
		);
		const codes = [];
		for (let i = 0; i < 5; i++)
			codes.push((await mall.http.post("/api/seckill", { product_id: soldOut }, t)).body.code);
		expect(codes).toEqual([60003, 60003, 60003, 60003, 60003]);
		const { token: u } = await mall.http.newUser("sk");
		const statuses = [];
		for (let i = 0; i < 3; i++) statuses.push((await mall.http.post("/api/seckill", { product_id: live }, u)).status);
		expect(statuses).toEqual([200, 429, 429]);
	});

	it("decides a tick's shared checks in one script call, each key once, each check as if it had been sent alone", async () => {
		await limits({});
		const limiter = (mall.node.broker.getLocalService("api") as any).sharedLimiter as SharedLimiter;
		const spy = spyScript(limiter.redis as any, "rateLimitGcra");
		const wide = { rate: 1000, burst: 1000 };
		const buyer = { rate: 0.01, burst: 3 };
		try {
			// Five requests of one buyer in the same tick, each with a wide tier beside its own.
			const checks = [
				{ key: "rl:global-tick", tier: wide },
				{ key: "rl:seckill:77", tier: buyer }
			];
			const verdicts = await Promise.all(Array.from({ length: 5 }, () => limiter.check(checks)));
			expect(verdicts.map(v => v.allowed)).toEqual([true, true, true, false, false]);
			// The buyer's next token is one interval (100 s) away.
			expect(verdicts[4].retryAfterMs).toBeGreaterThan(99000);
			// One command, each key in it once with its count: ten checks of two keys.
			expect(spy.calls.map(args => args.slice(0, 3))).toEqual([[2, "rl:global-tick", "rl:seckill:77"]]);
			// Sent alone afterwards, the same keys answer from the same state.
			expect(await limiter.check([checks[1]])).toMatchObject({ allowed: false });
			expect(await limiter.check([checks[0]])).toMatchObject({ allowed: true });
			expect(spy.calls).toHaveLength(3);
		} finally {
			spy.restore();
		}
	});

	it("answers a tick's interleaved checks of many keys exactly as the same checks sent one by one", async () => {
		await limits({});
		const limiter = (mall.node.broker.getLocalService("api") as any).sharedLimiter as SharedLimiter;
		// Slow tiers (a token per 1,000 s): the time between the one-by-one calls changes nothing.
		const tiers = [1, 2, 3, 5].map(burst => ({ rate: 0.001, burst }));
		let seed = 7;
		const keys = Array.from({ length: 60 }, () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 6);
		// Each request checks its own key (of six, bursts 1 to 5) and one key all of them share.
		const requests = (prefix: string) =>
			keys.map(key => [
				{ key: `${prefix}:${key}`, tier: tiers[key % 4] },
				{ key: `${prefix}:shared`, tier: tiers[3] }
			]);
		const together = await Promise.all(requests("rl:tick").map(checks => limiter.check(checks)));
		const alone: Verdict[] = [];
		for (const checks of requests("rl:alone")) alone.push(await limiter.check(checks));
		expect(together.map(v => v.allowed)).toEqual(alone.map(v => v.allowed));
		expect(together.filter(v => v.allowed).length).toBeGreaterThan(0);
		expect(together.filter(v => !v.allowed).length).toBeGreaterThan(0);
		together.forEach((v, i) => expect(Math.abs(v.retryAfterMs - alone[i].retryAfterMs)).toBeLessThan(5000));
	});

	it("turns off entirely with rate_limit.enabled false", async () => {
		await limits({ enabled: false, api: { rate: 0.001, burst: 1 } });
		const statuses = await Promise.all(
			Array.from({ length: 30 }, () => mall.http.get("/api/product").then(r => r.status))
		);
		expect(statuses.every(s => s === 200)).toBe(true);
	});

	it("fails open when its Redis is stopped: requests served, a warning and a metric, never a 500", async () => {
		await limits({ enabled: true, local: false, distributed: true, fail_open: true, api: { rate: 1000, burst: 1000 } });
		limiterRedis.kill("SIGTERM");
		await new Promise(r => limiterRedis.once("exit", r));
		const statuses = await Promise.all(
			Array.from({ length: 20 }, () => mall.http.get("/api/product").then(r => r.status))
		);
		expect(statuses.every(s => s === 200)).toBe(true);
		const metrics = await (await fetch(`${mall.baseUrl}/metrics`)).text();
		expect(Number(/gomall_rate_limit_errors_total(?:\{[^}]*\})? (\d+)/.exec(metrics)?.[1])).toBeGreaterThan(0);
		await eventually(async () => fs.readFileSync(logFile, "utf8").includes("rate limiter: Redis unavailable"), 5000);
	});
});

describe("request log", () => {
	it("has one line per request, and no password or token anywhere", async () => {
		await eventually(
			async () => /GET \/api\/product 200 [\d.]+ms trace_id=[0-9a-f]{32}/.test(fs.readFileSync(logFile, "utf8")),
			5000
		);
		const log = fs.readFileSync(logFile, "utf8");
		expect(log).toMatch(/POST \/api\/user\/login 200 [\d.]+ms trace_id=[0-9a-f]{32} user_id=- ip=127\.0\.0\.1/);
		expect(log).toMatch(/POST \/api\/seckill \d+ [\d.]+ms trace_id=\w+ user_id=\d+/);
		expect(token.length).toBeGreaterThan(20);
		expect(log).not.toContain(PASSWORD);
		expect(log).not.toContain(token);
		expect(log).not.toContain(token.split(".")[2]);
	});
});
