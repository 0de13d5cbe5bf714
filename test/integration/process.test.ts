import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { HttpClient, removeClusterEnv } from "../helpers/node";
import { clusterEnv, eventually, freePort, listeningSockets, NodeProcess, spawnNode } from "../helpers/proc";

const started: NodeProcess[] = [];
const envs = new Map<string, Record<string, string>>();

function run(args: string[], env: Record<string, string>): NodeProcess {
	const p = spawnNode(args, env);
	started.push(p);
	if (env.GOMALL_NAMESPACE) envs.set(env.GOMALL_NAMESPACE, env);
	return p;
}

afterAll(async () => {
	for (const p of started) p.kill("SIGKILL");
	await Promise.all(started.map(p => p.exited));
	for (const env of envs.values()) await removeClusterEnv(env);
});

describe("a cluster over NATS", () => {
	it("serves product routes on the gateway from a product actor on a node that joined later", async () => {
		const env = clusterEnv();
		const port = await freePort();
		const http = new HttpClient(`http://127.0.0.1:${port}`);
		const gateway = run(["--services", "api"], { ...env, GOMALL_HTTP_PORT: String(port), GOMALL_NODE_ID: "gateway" });
		await eventually(async () => (await http.get("/version")).status === 200);
		// Not ready while no user actor has told it the ended sessions (authenticated routes would be 503).
		expect((await http.get("/ready")).status).toBe(503);

		const before = await http.get("/api/product");
		expect([before.status, before.body.code]).toEqual([503, 503]);

		run(["--services", "user,product"], { ...env, GOMALL_NODE_ID: "catalogue", GOMALL_HTTP_PORT: "0" });
		await eventually(async () => (await http.get("/api/product")).status === 200, 30000);
		await eventually(async () => (await http.get("/ready")).status === 200, 10000);
		const r = await http.get("/api/product");
		expect(r.body).toMatchObject({ code: 0, data: { list: [], total: 0, page: 1 } });
		expect(gateway.output()).not.toMatch(/"level":50/);
	});
});

describe("--workers", () => {
	it("runs N whole nodes sharing the port, each with its own node id, and stops them all on SIGTERM", async () => {
		const env = clusterEnv();
		const port = await freePort();
		const http = new HttpClient(`http://127.0.0.1:${port}`);
		const p = run(["--workers", "2"], {
			...env,
			GOMALL_HTTP_PORT: String(port),
			GOMALL_HTTP_LISTEN_SOCKETS: "4",
			GOMALL_NODE_ID: "mall",
			GOMALL_LOG_LEVEL: "info"
		});
		await p.waitFor(/"node":"mall-w1"[^\n]*API Gateway listening|API Gateway listening[^\n]*"node":"mall-w1"/, 60000);
		await p.waitFor(/"node":"mall-w2"[^\n]*API Gateway listening|API Gateway listening[^\n]*"node":"mall-w2"/, 60000);
		// Each worker binds sockets of its own (lib/listen); none is the supervisor's.
		expect(listeningSockets(port)).toBe(8);
		// A worker answers 503 until its own broker has started (as /ready says); wait for both.
		await eventually(
			async () =>
				(await Promise.all(Array.from({ length: 20 }, () => http.get("/ready")))).every(r => r.status === 200),
			30000
		);
		// Trace ids start with a prefix of the process that made them: answers come from both.
		const prefixes = new Set<string>();
		for (let round = 0; round < 10 && prefixes.size < 2; round++) {
			const answers = await Promise.all(Array.from({ length: 20 }, () => http.get("/api/product")));
			for (const a of answers) {
				expect(a.status).toBe(200);
				prefixes.add(String(a.body.trace_id).slice(0, 16));
			}
		}
		expect(prefixes.size).toBe(2);
		p.kill("SIGTERM");
		expect(await p.exited).toBe(0);
	});

	it("refuses a port something listens on, with workers (the supervisor checks) and without", async () => {
		const taken = net.createServer();
		await new Promise<void>(resolve => taken.listen(0, "0.0.0.0", () => resolve()));
		const port = String((taken.address() as net.AddressInfo).port);
		try {
			for (const args of [["--workers", "2"], []]) {
				const p = run(args, { ...clusterEnv(), GOMALL_HTTP_PORT: port });
				expect(await p.exited).not.toBe(0);
				expect(p.output()).toMatch(/start-up failed: listen EADDRINUSE/);
				expect(p.output()).not.toMatch(/API Gateway listening/);
			}
		} finally {
			taken.close();
		}
	});

	it("refuses --workers with --repl, and a bad count", async () => {
		const repl = run(["--workers", "2", "--repl"], clusterEnv());
		expect(await repl.exited).not.toBe(0);
		expect(repl.output()).toMatch(/--repl needs a single process/);
		const bad = run(["--workers", "zero"], clusterEnv());
		expect(await bad.exited).not.toBe(0);
		expect(bad.output()).toMatch(/--workers must be a whole number/);
	});
});

describe("process signals and start-up checks", () => {
	it("stops start-up on a bad config value and names the key", async () => {
		const p = run([], { ...clusterEnv(), GOMALL_HTTP_PORT: "eighty" });
		expect(await p.exited).toBe(2);
		expect(p.output()).toMatch(/http\.port/);
	});

	it("warns, naming the development JWT secret, when it runs as dev (no GOMALL_ENV)", async () => {
		const env = clusterEnv();
		const p = run(["--env", "dev", "--services", "product"], { ...env, GOMALL_NATS_URL: "" });
		await p.waitFor(/WARNING running as dev with the development JWT secret \(jwt\.secret/);
		p.kill("SIGTERM");
		await p.exited;
	});

	it("changes the log level of a running node on SIGHUP", async () => {
		const env = clusterEnv();
		const port = await freePort();
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-"));
		const file = path.join(dir, "node.json");
		fs.writeFileSync(file, JSON.stringify({ log: { level: "info" } }));
		const http = new HttpClient(`http://127.0.0.1:${port}`);
		const p = run(["--config", file], { ...env, GOMALL_HTTP_PORT: String(port) });
		await eventually(async () => (await http.get("/ready")).status === 200, 30000);
		await http.get("/api/product");
		await new Promise(r => setTimeout(r, 200));
		expect(p.output()).not.toMatch(/"level":20/);

		fs.writeFileSync(file, JSON.stringify({ log: { level: "debug" } }));
		p.kill("SIGHUP");
		await p.waitFor(/config reloaded \(SIGHUP\): log\.level: \\"info\\" -> \\"debug\\"/);
		await http.get("/api/product");
		await p.waitFor(/"level":20/, 5000);
	});

	it("keeps a restart-only key as it was on SIGHUP (namespace), names it in the log, and the sale keeps working", async () => {
		const env = clusterEnv();
		const { GOMALL_NAMESPACE: namespace, ...rest } = env;
		const port = await freePort();
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-"));
		const file = path.join(dir, "node.json");
		fs.writeFileSync(file, JSON.stringify({ namespace }));
		const http = new HttpClient(`http://127.0.0.1:${port}`);
		const admin = { username: "sighup_admin", password: "sighup-admin-pass" };
		const p = run(["--config", file], {
			...rest,
			GOMALL_HTTP_PORT: String(port),
			GOMALL_ADMIN_USERNAME: admin.username,
			GOMALL_ADMIN_PASSWORD: admin.password
		});
		envs.set(namespace, env);
		await eventually(async () => (await http.get("/ready")).status === 200, 30000);

		fs.writeFileSync(file, JSON.stringify({ namespace: `${namespace}x` }));
		p.kill("SIGHUP");
		await p.waitFor(/config keys changed that need a restart[^"]*namespace/);

		const adminToken = (await http.post("/api/user/login", admin)).body.data.token;
		const product = (await http.post("/api/product", { name: "Reload phone", price: 10, stock: 5 }, adminToken)).body
			.data.id;
		expect((await http.post("/api/seckill/init", { product_id: product, stock: 2 }, adminToken)).status).toBe(200);
		const buyer = (await http.post("/api/user/register", { username: `b${namespace}`, password: "password-123" })).body
			.data.token;
		const won = await http.post("/api/seckill", { product_id: product }, buyer);
		expect(won.body).toMatchObject({ code: 0, data: { status: "queued" } });
		let result: any;
		await eventually(async () => {
			result = (await http.get(`/api/seckill/result?product_id=${product}`, buyer)).body.data;
			return result.status !== "queued";
		}, 20000);
		expect(result).toMatchObject({ status: "success", order_no: won.body.data.order_no });
	});

	it("drains on SIGTERM under load: readiness goes 503, no accepted request is lost, exit 0", async () => {
		const env = clusterEnv();
		const port = await freePort();
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-"));
		const file = path.join(dir, "node.json");
		fs.writeFileSync(file, JSON.stringify({ shutdown: { drain_delay: 800 } }));
		const http = new HttpClient(`http://127.0.0.1:${port}`);
		const p = run(["--config", file], { ...env, GOMALL_HTTP_PORT: String(port), GOMALL_LOG_LEVEL: "info" });
		await eventually(async () => (await http.get("/ready")).status === 200, 30000);

		const statuses: number[] = [];
		const refused: string[] = [];
		let stop = false;
		let sentSignalAt = 0;
		let answeredAfterSignal = 0;
		// 8 clients, each looping until the server is gone; bounded to 10 s and 5,000 requests.
		const deadline = Date.now() + 10000;
		const client = async (i: number) => {
			for (let n = 0; !stop && Date.now() < deadline && statuses.length < 5000; n++) {
				try {
					const r = await http.post("/api/user/register", { username: `load_${i}_${n}`, password: "password-123" });
					statuses.push(r.status);
					if (sentSignalAt) answeredAfterSignal++;
				} catch (err) {
					refused.push(String((err as any).cause?.code ?? (err as Error).message));
					if (sentSignalAt) stop = true;
				}
			}
		};
		const clients = Array.from({ length: 8 }, (_, i) => client(i));
		await new Promise(r => setTimeout(r, 700));
		sentSignalAt = Date.now();
		p.kill("SIGTERM");
		await eventually(async () => (await http.get("/ready").catch(() => ({ status: 0 }))).status === 503, 700, 50);
		const code = await p.exited;
		stop = true;
		await Promise.all(clients);

		expect(code).toBe(0);
		expect(statuses.length).toBeGreaterThan(20);
		expect(answeredAfterSignal).toBeGreaterThan(0);
		// Every request the server accepted was answered, and answered successfully.
		expect(statuses.filter(s => s !== 200)).toEqual([]);
		// The rest never got in: connection refused or closed before the request was read.
		for (const code of refused)
			expect(code).toMatch(/ECONNREFUSED|ECONNRESET|UND_ERR_SOCKET|other side closed|fetch failed/);
		// Hundreds of registrations were logged, one line each; not one password.
		expect(p.output()).toMatch(/POST \/api\/user\/register 200/);
		expect(p.output()).not.toContain("password-123");
	});
});
