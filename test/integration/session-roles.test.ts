import crypto from "node:crypto";
import jwt from "jsonwebtoken";
import { QueryTypes, Sequelize } from "sequelize";
import { nodesRunning } from "../../lib/messaging/each-node";
import { ADMIN, HttpClient, startMall, TestMall } from "../helpers/node";
import { eventually, freePort, NodeProcess, spawnNode } from "../helpers/proc";

let mall: TestMall;
let http: HttpClient;
let gw2: HttpClient;
let root: { id: number; token: string };
const spawned: NodeProcess[] = [];

/** A gateway of its own, in its own process, on the mall's namespace and database (as in session.test.ts). */
async function secondGateway(): Promise<HttpClient> {
	const port = await freePort();
	const nodeID = `gw2-${crypto.randomBytes(3).toString("hex")}`;
	const p = spawnNode(["--services", "api"], {
		GOMALL_NAMESPACE: mall.cfg.namespace,
		GOMALL_DB_NAME: mall.cfg.db.name,
		GOMALL_HTTP_PORT: String(port),
		GOMALL_NODE_ID: nodeID,
		GOMALL_LOG_FORMAT: "json"
	});
	spawned.push(p);
	const client = new HttpClient(`http://127.0.0.1:${port}`);
	await eventually(
		async () =>
			(await client.get("/ready")).status === 200 && (await client.post("/api/user/login", {})).status === 400,
		30000
	);
	// Known to the user actor, so its announcements reach this gateway.
	await eventually(async () => nodesRunning(mall.node.broker, "api").includes(nodeID), 30000, 50);
	return client;
}

beforeAll(async () => {
	// The default resync (30 s) on both gateways: what ends a session within a second here is the announcement.
	mall = await startMall();
	http = mall.http;
	const r = await http.post("/api/user/login", ADMIN);
	root = { id: r.body.data.user.id, token: r.body.data.token };
	gw2 = await secondGateway();
}, 60000);
afterAll(async () => {
	for (const p of spawned) p.kill("SIGKILL");
	await Promise.all(spawned.map(p => p.exited));
	await mall?.stop();
});

const db = (): Sequelize => (mall.node.broker.getLocalService("user") as any).adapter.db;
const rows = <T>(sql: string, replacements: unknown[] = []) =>
	db().query(sql, { replacements, type: QueryTypes.SELECT }) as Promise<T[]>;

interface Session {
	id: number;
	username: string;
	token: string;
	refresh_token: string;
}

async function register(): Promise<Session> {
	const username = `r_${crypto.randomBytes(5).toString("hex")}`;
	const r = await http.post("/api/user/register", { username, password: "password-123" });
	expect(r.status).toBe(200);
	return { id: r.body.data.user.id, username, token: r.body.data.token, refresh_token: r.body.data.refresh_token };
}

async function login(username: string): Promise<Session> {
	const r = await http.post("/api/user/login", { username, password: "password-123" });
	expect([r.status, r.body.code]).toEqual([200, 0]);
	return { id: r.body.data.user.id, username, token: r.body.data.token, refresh_token: r.body.data.refresh_token };
}

/** The status and business code of GET /api/user/profile with this access token. */
async function profile(token: string, client = http): Promise<[number, number]> {
	const r = await client.get("/api/user/profile", token);
	return [r.status, r.body.code];
}

const sidOf = (token: string): string => JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString()).sid;

/** A user that is an admin, with a session opened after the promotion (a promotion ends the older ones). */
async function newAdmin(): Promise<Session> {
	const s = await register();
	const r = await http.put(`/api/user/${s.id}`, { role: 2 }, root.token);
	expect([r.status, r.body.code, r.body.data?.role]).toEqual([200, 0, 2]);
	return login(s.username);
}

/** Polls until the token is refused on that gateway; how long it took (ms), or throws after `withinMs`. */
async function refusedWithin(token: string, client: HttpClient, withinMs = 1000): Promise<number> {
	const t0 = Date.now();
	await eventually(async () => (await profile(token, client))[0] === 401, withinMs, 20);
	return Date.now() - t0;
}

describe("an access token without a session id", () => {
	const noSid = (id: number, role = 1) =>
		jwt.sign({ role }, mall.cfg.jwt.secret, { algorithm: "HS256", subject: String(id), expiresIn: 600 });

	it("is refused with 401/10006 on a user route, every time (the verify cache never lets it through)", async () => {
		const u = await register();
		const token = noSid(u.id);
		for (let i = 0; i < 3; i++) {
			const r = await http.get("/api/user/profile", token);
			expect([r.status, r.body.code, r.body.data]).toEqual([401, 10006, null]);
			expect(r.body.trace_id).toEqual(expect.any(String));
		}
		expect(await profile(token, gw2)).toEqual([401, 10006]);
		// The same user's real token works.
		expect(await profile(u.token)).toEqual([200, 0]);
	});

	it("is refused with 401/10006 on POST /api/seckill (the flash-sale lane) and on an admin route", async () => {
		const u = await register();
		for (let i = 0; i < 2; i++) {
			const r = await http.post("/api/seckill", { product_id: 1 }, noSid(u.id));
			expect([r.status, r.body.code]).toEqual([401, 10006]);
		}
		const admin = await http.post("/api/product", { name: "no sid", price: 1, stock: 1 }, noSid(root.id, 2));
		expect([admin.status, admin.body.code]).toEqual([401, 10006]);
	});

	it("is never issued: login, register and refresh all answer tokens naming their session", async () => {
		const u = await register();
		const l = await login(u.username);
		const r = await http.post("/api/auth/refresh-token", { refresh_token: l.refresh_token });
		for (const t of [u.token, l.token, r.body.data.token]) expect(sidOf(t)).toMatch(/^[0-9a-f]{32}$/);
	});
});

describe("PUT /api/user/:id (admin)", () => {
	it("demoting an admin ends every session of it at once: its token fails on a second gateway within a second, its refresh token is dead", async () => {
		const a = await newAdmin();
		const other = await login(a.username); // a second session of the same admin
		// Both gateways know (and have cached) its tokens, and it is an admin there.
		expect(await profile(a.token, gw2)).toEqual([200, 0]);
		expect(await profile(other.token, gw2)).toEqual([200, 0]);
		expect(await profile(a.token)).toEqual([200, 0]);

		const r = await http.put(`/api/user/${a.id}`, { role: 1 }, root.token);
		expect([r.status, r.body.code]).toEqual([200, 0]);
		expect(r.body.data).toEqual({
			id: a.id,
			username: a.username,
			email: null,
			phone: null,
			role: 1,
			status: 1,
			created_at: expect.any(String)
		});
		const took = await refusedWithin(a.token, gw2);
		expect(await profile(a.token, gw2)).toEqual([401, 10006]);
		expect(await profile(other.token, gw2)).toEqual([401, 10006]);
		expect(await profile(a.token)).toEqual([401, 10006]);
		expect(took).toBeLessThan(1000);
		for (const s of [a, other]) {
			const refresh = await http.post("/api/auth/refresh-token", { refresh_token: s.refresh_token });
			expect([refresh.status, refresh.body.code]).toEqual([401, 10006]);
		}
		expect(await rows("SELECT id FROM user_sessions WHERE user_id = ? AND revoked_at IS NULL", [a.id])).toHaveLength(0);
		expect(
			await rows("SELECT 1 FROM user_sessions WHERE id IN (?) AND revoke_reason = 'role'", [
				[sidOf(a.token), sidOf(other.token)]
			])
		).toHaveLength(2);
		// Logged in again, it is a plain user: the admin routes refuse it, on both gateways.
		const again = await login(a.username);
		for (const client of [http, gw2]) {
			const p = await client.post("/api/product", { name: "not allowed", price: 1, stock: 1 }, again.token);
			expect([p.status, p.body.code]).toEqual([403, 10010]);
		}
		// Root's own session is untouched.
		expect(await profile(root.token, gw2)).toEqual([200, 0]);
	}, 30000);

	it("disabling a user ends every session of it at once, on a second gateway within a second; it cannot log in or refresh until enabled again", async () => {
		const u = await register();
		const other = await login(u.username);
		expect(await profile(u.token, gw2)).toEqual([200, 0]);
		expect(await profile(other.token, gw2)).toEqual([200, 0]);

		const r = await http.put(`/api/user/${u.id}`, { status: 0 }, root.token);
		expect([r.status, r.body.code, r.body.data.status, r.body.data.role]).toEqual([200, 0, 0, 1]);
		expect(await refusedWithin(other.token, gw2)).toBeLessThan(1000);
		expect(await profile(u.token, gw2)).toEqual([401, 10006]);
		expect(await profile(u.token)).toEqual([401, 10006]);
		for (const s of [u, other]) {
			const refresh = await http.post("/api/auth/refresh-token", { refresh_token: s.refresh_token });
			expect([refresh.status, refresh.body.code]).toEqual([401, 10006]);
		}
		const denied = await http.post("/api/user/login", { username: u.username, password: "password-123" });
		expect([denied.status, denied.body.code]).toEqual([403, 10003]);
		expect(
			await rows<{ revoke_reason: string }>("SELECT revoke_reason FROM user_sessions WHERE user_id = ?", [u.id])
		).toEqual([{ revoke_reason: "disabled" }, { revoke_reason: "disabled" }]);

		const enabled = await http.put(`/api/user/${u.id}`, { status: 1 }, root.token);
		expect([enabled.status, enabled.body.data.status]).toEqual([200, 1]);
		const back = await login(u.username);
		expect(await profile(back.token, gw2)).toEqual([200, 0]);
	}, 30000);

	it("leaves no live session with the old rights to logins racing a demotion or a disabling", async () => {
		const roleOf = (token: string): number => JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString()).role;
		const a = await newAdmin();
		const logins = Array.from({ length: 20 }, () =>
			http.post("/api/user/login", { username: a.username, password: "password-123" })
		);
		const [demoted, ...answers] = await Promise.all([
			http.put(`/api/user/${a.id}`, { role: 1 }, root.token),
			...logins
		]);
		expect(demoted.status).toBe(200);
		const live = new Set(
			(await rows<{ id: string }>("SELECT id FROM user_sessions WHERE user_id = ? AND revoked_at IS NULL", [a.id])).map(
				r => r.id
			)
		);
		for (const r of answers.filter(x => x.status === 200)) {
			const token = r.body.data.token as string;
			// An admin's token only for a session the demotion ended; a live session's token is a user's.
			if (roleOf(token) === 2) expect(live.has(sidOf(token))).toBe(false);
			else expect(r.body.data.user.role).toBe(1);
		}

		const u = await register();
		const more = Array.from({ length: 20 }, () =>
			http.post("/api/user/login", { username: u.username, password: "password-123" })
		);
		const [disabled, ...tried] = await Promise.all([http.put(`/api/user/${u.id}`, { status: 0 }, root.token), ...more]);
		expect(disabled.status).toBe(200);
		expect(tried.every(r => r.status === 200 || (r.status === 403 && r.body.code === 10003))).toBe(true);
		expect(await rows("SELECT id FROM user_sessions WHERE user_id = ? AND revoked_at IS NULL", [u.id])).toHaveLength(0);
	});

	it("changes nothing and ends no session when the role and status are already those asked for", async () => {
		const u = await register();
		const r = await http.put(`/api/user/${u.id}`, { role: 1, status: 1 }, root.token);
		expect([r.status, r.body.code, r.body.data.role, r.body.data.status]).toEqual([200, 0, 1, 1]);
		expect(await profile(u.token)).toEqual([200, 0]);
		expect(await profile(u.token, gw2)).toEqual([200, 0]);
		expect((await http.post("/api/auth/refresh-token", { refresh_token: u.refresh_token })).status).toBe(200);
	});

	it("counts the sessions it ends by reason", async () => {
		const text = await (await fetch(`${mall.baseUrl}/metrics`)).text();
		const value = (reason: string) =>
			Number(
				text
					.split("\n")
					.find(l => l.startsWith(`gomall_user_sessions_revoked_total{`) && l.includes(`reason="${reason}"`))
					?.split(" ")
					.pop() ?? NaN
			);
		// From the tests above: at least the two sessions of the demoted admin, two of the disabled user.
		expect(value("role")).toBeGreaterThanOrEqual(2);
		expect(value("disabled")).toBeGreaterThanOrEqual(2);
	});

	it.each([
		["a role that is not 1 or 2", { role: 3 }, "role"],
		["a role as a string", { role: "2" }, "role"],
		["a status that is not 0 or 1", { status: 2 }, "status"],
		["neither role nor status", {}, "role"],
		["neither role nor status (other fields are ignored)", { username: "renamed" }, "status"]
	])("refuses %s with 400 naming the field, and changes nothing", async (_name, body, field) => {
		const u = await register();
		const r = await http.put(`/api/user/${u.id}`, body, root.token);
		expect([r.status, r.body.code]).toEqual([400, 400]);
		expect(r.body.data.map((f: { field: string }) => f.field)).toContain(field);
		expect(await rows("SELECT username, role, status FROM users WHERE id = ?", [u.id])).toEqual([
			{ username: u.username, role: 1, status: 1 }
		]);
		expect(await profile(u.token)).toEqual([200, 0]);
	});

	it("refuses an id that is not a positive integer (400) and an unknown user (404/10001)", async () => {
		const bad = await http.put("/api/user/abc", { role: 2 }, root.token);
		expect([bad.status, bad.body.code]).toEqual([400, 400]);
		expect(bad.body.data.map((f: { field: string }) => f.field)).toContain("id");
		const unknown = await http.put("/api/user/987654321", { role: 2 }, root.token);
		expect([unknown.status, unknown.body.code, unknown.body.data]).toEqual([404, 10001, null]);
	});

	it("is for admins only: 401 without a token, 403/10010 for a user, and nothing changes", async () => {
		const u = await register();
		const none = await http.put(`/api/user/${u.id}`, { role: 2 });
		expect([none.status, none.body.code]).toEqual([401, 401]);
		const self = await http.put(`/api/user/${u.id}`, { role: 2 }, u.token);
		expect([self.status, self.body.code]).toEqual([403, 10010]);
		const onRoot = await http.put(`/api/user/${root.id}`, { status: 0 }, u.token);
		expect([onRoot.status, onRoot.body.code]).toEqual([403, 10010]);
		expect(await rows("SELECT role, status FROM users WHERE id IN (?) ORDER BY id", [[root.id, u.id]])).toEqual([
			{ role: 2, status: 1 },
			{ role: 1, status: 1 }
		]);
	});
});

describe("the last active admin", () => {
	beforeAll(async () => {
		// Root alone: every other admin of the tests above demoted behind the actor's back.
		await db().query("UPDATE users SET role = 1 WHERE role = 2 AND id <> ?", { replacements: [root.id] });
	});

	it.each([
		["demote", { role: 1 }],
		["disable", { status: 0 }],
		["demote and disable", { role: 1, status: 0 }]
	])("cannot %s itself: 409, a clear message, nothing changed, its session goes on", async (_name, body) => {
		const r = await http.put(`/api/user/${root.id}`, body, root.token);
		expect([r.status, r.body.code, r.body.data]).toEqual([409, 409, null]);
		expect(r.body.message).toMatch(/last active admin/);
		expect(await rows("SELECT role, status FROM users WHERE id = ?", [root.id])).toEqual([{ role: 2, status: 1 }]);
		expect(await profile(root.token)).toEqual([200, 0]);
		expect(await profile(root.token, gw2)).toEqual([200, 0]);
	});

	it("does not count a disabled admin: with only a disabled one beside it, root is still the last", async () => {
		const d = await newAdmin();
		expect((await http.put(`/api/user/${d.id}`, { status: 0 }, root.token)).status).toBe(200);
		const r = await http.put(`/api/user/${root.id}`, { role: 1 }, root.token);
		expect([r.status, r.body.code]).toEqual([409, 409]);
	});

	it("an admin that is not the last may demote itself; its own token then fails too", async () => {
		const a = await newAdmin();
		const r = await http.put(`/api/user/${a.id}`, { role: 1 }, a.token);
		expect([r.status, r.body.code, r.body.data.role]).toEqual([200, 0, 1]);
		expect(await refusedWithin(a.token, gw2)).toBeLessThan(1000);
		expect(await profile(a.token)).toEqual([401, 10006]);
	});

	it("of two admins demoting each other at once, one wins and the other is refused: one active admin is left", async () => {
		const a = await newAdmin();
		const b = await newAdmin();
		const [ab, ba] = await Promise.all([
			http.put(`/api/user/${b.id}`, { role: 1 }, a.token),
			http.put(`/api/user/${a.id}`, { role: 1 }, b.token)
		]);
		const statuses = [ab.status, ba.status].sort();
		// The loser was no longer an admin once the winner's change committed (403/10010), or its
		// session had already ended at the gateway (401/10006).
		expect(statuses[0]).toBe(200);
		expect([401, 403]).toContain(statuses[1]);
		const left = await rows<{ id: number }>("SELECT id FROM users WHERE id IN (?) AND role = 2 AND status = 1", [
			[a.id, b.id]
		]);
		expect(left).toHaveLength(1);
	});
});
