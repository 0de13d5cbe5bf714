/**
 * Hostile and clumsy clients (issue #21): what one client can make the gateway keep, do or
 * let through, on real servers. Every load loop here is bounded in count and time and aimed
 * at 127.0.0.1.
 */
import { ChildProcess, spawn, spawnSync } from "node:child_process";
import v8 from "node:v8";
import vm from "node:vm";
import Redis from "ioredis";
import { loadConfig, setConfig } from "../../config";
import { startMall, TestMall } from "../helpers/node";
import { eventually, freePort } from "../helpers/proc";

// The limiter gets a Redis server of its own, so a test can kill it.
let limiterRedis: ChildProcess;
let limiterPort: number;
let mall: TestMall;
let api: any;

beforeAll(async () => {
	limiterPort = await freePort();
	limiterRedis = spawn(
		"redis-server",
		["--port", String(limiterPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
		{ stdio: "ignore" }
	);
	await eventually(async () => {
		const r = new Redis(limiterPort, "127.0.0.1", { lazyConnect: true, maxRetriesPerRequest: 0 });
		r.on("error", () => undefined);
		try {
			await r.connect();
			return (await r.ping()) === "PONG";
		} finally {
			r.disconnect();
		}
	}, 10000);
	mall = await startMall({
		rate_limit: { redis_url: `redis://127.0.0.1:${limiterPort}` },
		// The IPv6 keying is tried through X-Forwarded-For from this trusted "proxy".
		http: { trusted_proxies: ["127.0.0.1"] }
	});
	api = mall.node.broker.getLocalService("api");
}, 60000);
afterAll(async () => {
	await mall?.stop();
	limiterRedis?.kill("SIGKILL");
});

/** Rate-limit settings on the running node, as a SIGHUP reload installs them; the shared budget starts empty. */
async function limits(rateLimit: Record<string, unknown>): Promise<void> {
	setConfig(
		loadConfig({ env: "test", overrides: { ...mall.cfg, rate_limit: { ...mall.cfg.rate_limit, ...rateLimit } } })
	);
	if (limiterRedis.exitCode === null && limiterRedis.signalCode === null) {
		const r = new Redis(limiterPort, "127.0.0.1");
		await r.flushall();
		r.disconnect();
	}
}

/** Runs `count` requests, `concurrency` at a time, for at most `maxMs`; returns how many ran. */
async function flood(count: number, concurrency: number, maxMs: number, one: (i: number) => Promise<unknown>) {
	let next = 0;
	const end = Date.now() + maxMs;
	const statuses = new Map<number, number>();
	const worker = async () => {
		while (next < count && Date.now() < end) {
			const status = (await one(next++)) as number;
			statuses.set(status, (statuses.get(status) ?? 0) + 1);
		}
	};
	await Promise.all(Array.from({ length: concurrency }, worker));
	return { ran: next, statuses };
}

const get = (path: string, headers: Record<string, string> = {}) =>
	fetch(mall.baseUrl + path, { headers }).then(async r => {
		await r.arrayBuffer();
		return r.status;
	});

/** The heap after a full collection (the mall runs in this process). */
function heapAfterGc(): number {
	v8.setFlagsFromString("--expose-gc");
	const gc = vm.runInNewContext("gc") as () => void;
	gc();
	gc();
	return process.memoryUsage().heapUsed;
}

describe("metric labels", () => {
	const paths = (i: number) => [
		`/probe-${i}`,
		`/api/probe-${i}`,
		`/api/user/probe/${i}`,
		`/swagger/p-${i}.js`,
		`/uploads/p-${i}.png`,
		`/health?x=${i}`
	];

	it("10,000 distinct unmatched paths grow /metrics by less than 16 KB and the heap by less than 20 MB", async () => {
		// Every label set a path of each kind makes, once, before measuring.
		for (const p of paths(0)) await get(p);
		const before = (await (await fetch(`${mall.baseUrl}/metrics`)).text()).length;
		const heapBefore = heapAfterGc();
		const kinds = paths(0).length;
		const { ran } = await flood(10000, 50, 60000, i => get(paths(i + 1)[i % kinds]));
		expect(ran).toBe(10000);
		const text = await (await fetch(`${mall.baseUrl}/metrics`)).text();
		const heapGrowth = heapAfterGc() - heapBefore;
		const growth = text.length - before;
		console.log(
			`metrics: ${before} -> ${text.length} bytes (+${growth}); heap +${(heapGrowth / 1048576).toFixed(1)} MB`
		);
		expect(growth).toBeLessThan(16 * 1024);
		expect(heapGrowth).toBeLessThan(20 * 1024 * 1024);
		const routes = new Set([...text.matchAll(/gomall_http_requests_total\{[^}]*route="([^"]*)"/g)].map(m => m[1]));
		expect([...routes].filter(r => /probe|p-\d/.test(r))).toEqual([]);
		for (const r of ["unmatched", "/health", "/swagger/:file", "/uploads/:name"]) expect(routes).toContain(r);
	}, 120000);

	it("keeps the pattern of a matched route, even when its body is refused before the action", async () => {
		const refused = await fetch(`${mall.baseUrl}/api/user/login`, {
			method: "POST",
			headers: { "content-type": "application/json" },
			body: '{"username": '
		});
		expect(refused.status).toBe(400);
		// Such a request begins like any other: its security headers too.
		expect(refused.headers.get("x-content-type-options")).toBe("nosniff");
		const text = await (await fetch(`${mall.baseUrl}/metrics`)).text();
		expect(text).toMatch(/gomall_http_requests_total\{method="POST",route="\/api\/user\/login",status="400"\} 1/);
		expect(text).toMatch(/gomall_http_requests_total\{method="GET",route="\/metrics",status="200"\} \d+/);
	});
});

describe("/health", () => {
	/** Counts the channels opened on the gateway's health connection from now on. */
	function countChannels(): { opened: () => number; restore: () => void } {
		const conn = api.amqp.connection;
		expect(conn).toBeTruthy();
		const own = { createChannel: conn.createChannel, createConfirmChannel: conn.createConfirmChannel };
		let n = 0;
		conn.createChannel = function (...args: unknown[]) {
			n++;
			return own.createChannel.apply(this, args);
		};
		conn.createConfirmChannel = function (...args: unknown[]) {
			n++;
			return own.createConfirmChannel.apply(this, args);
		};
		return {
			opened: () => n,
			restore: () => Object.assign(conn, own)
		};
	}

	it("flooded at ~2,000 req/s for 2 s, runs about one probe a second and opens no RabbitMQ channel per call", async () => {
		await limits({ enabled: false });
		await eventually(async () => (await mall.http.get("/health")).body.status === "healthy", 10000, 250);
		const channels = countChannels();
		const probeAll = api.probeAll;
		let probes = 0;
		api.probeAll = function (...args: unknown[]) {
			probes++;
			return probeAll.apply(this, args);
		};
		try {
			const started = Date.now();
			const { ran, statuses } = await flood(4000, 50, 2000, () => get("/health"));
			const seconds = (Date.now() - started) / 1000;
			console.log(
				`/health: ${ran} calls in ${seconds.toFixed(1)} s, ${probes} probes, ${channels.opened()} channels opened, statuses ${JSON.stringify([...statuses])}`
			);
			expect(statuses.get(200)).toBe(ran);
			expect(channels.opened()).toBeLessThanOrEqual(1);
			expect(probes).toBeLessThanOrEqual(Math.ceil(seconds) + 1);
		} finally {
			api.probeAll = probeAll;
			channels.restore();
		}
	}, 30000);

	it("probes RabbitMQ without opening a channel per probe", async () => {
		await api.probeAll();
		const channels = countChannels();
		try {
			for (let i = 0; i < 20; i++) expect((await api.probeAll()).rabbitmq).toBe("up");
			expect(channels.opened()).toBe(0);
			// As RabbitMQ sees it: the health connection holds its one channel, open.
			const port = api.amqp.connection.connection.stream.localPort;
			const listed = spawnSync("rabbitmqctl", ["list_connections", "peer_port", "channels", "-q"], {
				encoding: "utf8",
				timeout: 20000
			});
			const row = listed.stdout
				.split("\n")
				.map(l => l.trim().split(/\s+/).map(Number))
				.find(([p]) => p === port);
			expect(row?.[1]).toBe(1);
		} finally {
			channels.restore();
		}
	});

	it("answers concurrent callers from one probe, and from a result at most 1 s old", async () => {
		await new Promise(r => setTimeout(r, 1100));
		const probeAll = api.probeAll;
		let probes = 0;
		api.probeAll = function (...args: unknown[]) {
			probes++;
			return probeAll.apply(this, args);
		};
		try {
			const all = await Promise.all(Array.from({ length: 30 }, () => mall.http.get("/health")));
			expect(all.every(r => r.status === 200 && r.body.status === "healthy")).toBe(true);
			expect(probes).toBe(1);
			await new Promise(r => setTimeout(r, 1100));
			await mall.http.get("/health");
			expect(probes).toBe(2);
		} finally {
			api.probeAll = probeAll;
		}
	});

	it("reports the order actor's consumers: up while each consumes", async () => {
		const r = await mall.http.get("/health");
		expect(r.body).toEqual({
			status: "healthy",
			components: { database: "up", redis: "up", rabbitmq: "up", nats: "up", consumers: "up" }
		});
	});
});

describe("rate limits", () => {
	afterEach(() => limits({ enabled: false }));

	it('limits the "/" route per IP: /health, /metrics, /version past the api tier answer 429 with Retry-After', async () => {
		await limits({ enabled: true, local: true, distributed: false, api: { rate: 0.5, burst: 5 } });
		const results = [];
		for (let i = 0; i < 12; i++) results.push(await mall.http.get(["/health", "/metrics", "/version"][i % 3]));
		const refused = results.filter(r => r.status === 429);
		expect(results.length - refused.length).toBe(5);
		expect(refused.length).toBe(7);
		for (const r of refused) {
			expect(Number(r.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
			expect(r.body).toEqual({ code: 429, message: expect.any(String), data: null, trace_id: expect.any(String) });
		}
	});

	it("keys an IPv6 client by its /64, in the local buckets and in the Redis keys", async () => {
		const from = (ip: string) => get("/api/product", { "x-forwarded-for": ip });
		await limits({ enabled: true, local: true, distributed: false, api: { rate: 0.001, burst: 3 } });
		const local = [];
		for (const ip of ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9", "2001:DB8:1:2:0:0:0:7"])
			local.push(await from(ip));
		expect(local).toEqual([200, 200, 200, 429]);
		expect(await from("2001:db8:1:3::1")).toBe(200);
		// IPv4, mapped or not, stays per address.
		const mapped = [];
		for (const ip of ["::ffff:198.51.100.1", "198.51.100.1", "::ffff:198.51.100.1", "::ffff:198.51.100.1"])
			mapped.push(await from(ip));
		expect(mapped).toEqual([200, 200, 200, 429]);
		expect(await from("::ffff:198.51.100.2")).toBe(200);

		await limits({ enabled: true, local: false, distributed: true, api: { rate: 0.001, burst: 2 } });
		const shared = [];
		for (const ip of ["2001:db8:9:9::1", "2001:db8:9:9:1::1", "2001:db8:9:9::abcd"]) shared.push(await from(ip));
		expect(shared).toEqual([200, 200, 429]);
		const r = new Redis(limiterPort, "127.0.0.1");
		try {
			const keys = (await r.keys("*rl:api:*")).map(k => k.slice(k.indexOf("rl:api:")));
			expect(keys.sort()).toEqual(["rl:api:2001:db8:9:9::/64"]);
		} finally {
			r.disconnect();
		}
	});

	it("keeps login limited per IP when the limiter's Redis is killed (fail_open at its default)", async () => {
		await limits({
			enabled: true,
			local: true,
			distributed: true,
			api: { rate: 1000, burst: 1000 },
			login: { rate: 0.001, burst: 5 }
		});
		expect(mall.cfg.rate_limit.fail_open).toBe(true);
		limiterRedis.kill("SIGKILL");
		await new Promise(r =>
			limiterRedis.exitCode !== null || limiterRedis.signalCode ? r(null) : limiterRedis.once("exit", r)
		);
		const statuses: number[] = [];
		for (let i = 0; i < 30; i++)
			statuses.push(
				(await mall.http.post("/api/user/login", { username: "nobody_here", password: "wrong-password-1" })).status
			);
		const refused = statuses.filter(s => s === 429).length;
		console.log(`login with the limiter's Redis down: ${30 - refused} answered, ${refused} refused (429)`);
		expect(refused).toBe(25);
		// The other routes fail open, as configured.
		expect((await mall.http.get("/api/product")).status).toBe(200);
	});
});

describe("/health's consumers", () => {
	it("is down (status degraded) when a consumer of the order actor stops consuming", async () => {
		const order = mall.node.broker.getLocalService("order") as any;
		await order.consumers[0].stop();
		await eventually(async () => (await mall.http.get("/health")).body.components?.consumers === "down", 5000, 250);
		const r = await mall.http.get("/health");
		expect([r.status, r.body.status]).toEqual([200, "degraded"]);
	});

	it("is disabled when no order actor is known", async () => {
		await mall.node.broker.destroyService(mall.node.broker.getLocalService("order")!);
		await eventually(async () => (await mall.http.get("/health")).body.components?.consumers === "disabled", 5000, 250);
		expect((await mall.http.get("/health")).body.status).toBe("healthy");
	});
});
