import { QueryTypes } from "sequelize";
import { newSessionId } from "../../lib/auth/sessions";
import { TokenService } from "../../lib/auth/jwt";
import { GomallNode, startNode } from "../../bootstrap/node";
import { removeClusterEnv, startMall, startMallWith, testConfig, TestMall } from "../helpers/node";
import { clusterEnv, eventually, freePort, NodeProcess, spawnNode } from "../helpers/proc";

/**
 * A gateway refuses to decide on a token before it knows the ended sessions: until its revocation
 * list has been loaded once, authenticated routes answer 503 (retry) and /ready says "not ready";
 * routes without authentication are served.
 */
describe("a gateway whose list of ended sessions is not loaded yet", () => {
	let front: TestMall;
	let userNode: GomallNode | undefined;
	let tokens: TokenService;
	let adminToken: string;
	let endedToken: string;

	beforeAll(async () => {
		// The gateway and a product actor, no user actor anywhere on the namespace.
		front = await startMallWith(testConfig(), ["api", "product"]);
		tokens = new TokenService(front.cfg.jwt.secret, 600);
		adminToken = tokens.sign({ id: 1, role: 2 }, newSessionId());
		// A session ended a moment ago, in the database: a gateway that has not loaded the list cannot know.
		const ended = newSessionId();
		const db = (front.node.broker.getLocalService("product") as any).adapter.db;
		await db.query(
			"INSERT INTO user_sessions (id, user_id, revoked_at, revoke_reason) VALUES (?, 1, NOW(3), 'logout')",
			{ replacements: [ended], type: QueryTypes.INSERT }
		);
		endedToken = tokens.sign({ id: 1, role: 2 }, ended);
	}, 60000);
	afterAll(async () => {
		await userNode?.shutdown();
		await front?.stop();
	});

	const newProduct = (token: string) =>
		front.http.post("/api/product", { name: "ready-check", price: 1, stock: 1 }, token);

	it("answers 503 with the envelope and Retry-After on an authenticated route, for a live session's token and an ended one's alike", async () => {
		for (const token of [adminToken, endedToken]) {
			const r = await newProduct(token);
			expect([r.status, r.body.code, r.body.data]).toEqual([503, 503, null]);
			expect(r.body.message).toMatch(/retry/);
			expect(r.body.trace_id).toEqual(expect.any(String));
			expect(r.headers.get("retry-after")).toBe("1");
		}
		const db = (front.node.broker.getLocalService("product") as any).adapter.db;
		expect(await db.query("SELECT id FROM products", { type: QueryTypes.SELECT })).toEqual([]);
	});

	it("answers 503 with Retry-After on the flash-sale lane too", async () => {
		const r = await front.http.post("/api/seckill", { product_id: 1 }, adminToken);
		expect([r.status, r.body.code]).toEqual([503, 503]);
		expect(r.headers.get("retry-after")).toBe("1");
	});

	it("still refuses a missing or bad token with 401 (that needs no list)", async () => {
		const none = await front.http.post("/api/product", { name: "x", price: 1, stock: 1 });
		expect([none.status, none.body.code]).toEqual([401, 401]);
		const bad = await newProduct("not-a-token");
		expect([bad.status, bad.body.code]).toEqual([401, 10006]);
	});

	it("says so on /ready (503, starting) and serves the routes without authentication", async () => {
		const ready = await front.http.get("/ready");
		expect([ready.status, ready.body]).toEqual([503, { status: "starting" }]);
		const list = await front.http.get("/api/product");
		expect([list.status, list.body.code]).toEqual([200, 0]);
		// A token on a route that needs none is not looked at.
		const withToken = await front.http.get("/api/product", adminToken);
		expect([withToken.status, withToken.body.code]).toEqual([200, 0]);
		expect((await front.http.get("/version")).status).toBe(200);
	});

	it("becomes ready once a user actor joins and the list is loaded: the ended session's token is then refused, the live one served", async () => {
		const t0 = Date.now();
		userNode = await startNode({ ...front.cfg, node_id: `${front.cfg.node_id}-user` }, ["user"]);
		const joined = Date.now();
		await eventually(async () => (await front.http.get("/ready")).status === 200, 10000, 20);
		const ready = Date.now();
		// The gateway learns of the user actor from its INFO, then loads the list at once.
		expect(ready - joined).toBeLessThan(3000);
		expect(t0).toBeLessThanOrEqual(joined);
		const ended = await newProduct(endedToken);
		expect([ended.status, ended.body.code]).toEqual([401, 10006]);
		const live = await newProduct(adminToken);
		expect([live.status, live.body.code]).toEqual([200, 0]);
		const lane = await front.http.post("/api/seckill", { product_id: 1 }, endedToken);
		expect([lane.status, lane.body.code]).toEqual([401, 10006]);
	}, 30000);
});

describe("a one-node start", () => {
	const spawned: NodeProcess[] = [];
	const envs: Record<string, string>[] = [];
	afterAll(async () => {
		for (const p of spawned) p.kill("SIGKILL");
		await Promise.all(spawned.map(p => p.exited));
		for (const env of envs) await removeClusterEnv(env);
	});

	it("serves authenticated routes a moment after it first answers (the list comes from its own user actor); /ready no earlier", async () => {
		const env = clusterEnv();
		envs.push(env);
		const port = await freePort();
		const cfg = testConfig();
		const token = new TokenService(cfg.jwt.secret, 600).sign({ id: 1, role: 1 }, newSessionId());
		// Polled from before the process listens: when it first answers, when /ready first says 200,
		// and when an authenticated route is first served.
		const at = { answered: 0, ready: 0, served: 0 };
		const statuses = new Set<number>();
		const get = async (path: string, auth?: string) => {
			const r = await fetch(`http://127.0.0.1:${port}${path}`, {
				headers: auth ? { authorization: `Bearer ${auth}` } : {},
				// A connection taken during start-up by the port check's probe socket is never answered.
				signal: AbortSignal.timeout(300)
			});
			await r.text();
			return r.status;
		};
		const p = spawnNode([], { ...env, GOMALL_HTTP_PORT: String(port), GOMALL_LOG_LEVEL: "info" });
		spawned.push(p);
		const end = Date.now() + 60000;
		while ((!at.ready || !at.served) && Date.now() < end) {
			const [ready, cart] = await Promise.all([get("/ready").catch(() => 0), get("/api/cart", token).catch(() => 0)]);
			const now = Date.now();
			if ((ready || cart) && !at.answered) at.answered = now;
			if (cart) statuses.add(cart);
			if (ready === 200 && !at.ready) at.ready = now;
			if (cart === 200 && !at.served) at.served = now;
			await new Promise(r => setTimeout(r, 5));
		}
		expect(at.ready && at.served).toBeTruthy();
		// Before it served, authenticated routes answered 503 (starting), never a 401 for this live token.
		expect([...statuses].every(s => s === 200 || s === 503)).toBe(true);
		const window = at.served - at.answered;
		const logTime = (re: RegExp) =>
			Number(
				JSON.parse(
					p
						.output()
						.split("\n")
						.find(l => re.test(l)) ?? "{}"
				).time
			);
		const inLog = logTime(/revoked sessions loaded/) - logTime(/API Gateway listening/);
		process.stdout.write(
			`one-node start: first answer to authenticated routes served ${window} ms (ready ${at.ready - at.answered} ms); listening to list loaded in the log ${inLog} ms\n`
		);
		// The list comes from the local user actor while the node starts: a moment, not a retry period.
		expect(inLog).toBeLessThan(1000);
		expect(window).toBeLessThan(3000);
		// /ready waits for the whole broker (every actor started), as before; never less than the list.
		expect(at.ready).toBeGreaterThanOrEqual(at.served - 50);
	}, 90000);

	it("/ready is 200 as soon as startMall returns (all actors on one node)", async () => {
		const mall = await startMall();
		try {
			expect((await mall.http.get("/ready")).status).toBe(200);
			const u = await mall.http.newUser();
			expect((await mall.http.get("/api/user/profile", u.token)).status).toBe(200);
		} finally {
			await mall.stop();
		}
	}, 60000);
});
