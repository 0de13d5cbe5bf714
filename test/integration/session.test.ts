import crypto from "node:crypto";
import { QueryTypes, Sequelize } from "sequelize";
import { nodesRunning } from "../../lib/messaging/each-node";
import { HttpClient, startMall, TestMall } from "../helpers/node";
import { eventually, freePort, NodeProcess, spawnNode } from "../helpers/proc";

let mall: TestMall;
let http: HttpClient;
const spawned: NodeProcess[] = [];

beforeAll(async () => {
	// Resync every second here, so a missed announcement is repaired within the test's patience.
	mall = await startMall({ jwt: { revocation_sync_interval: 1 } });
	http = mall.http;
});
afterAll(async () => {
	for (const p of spawned) p.kill("SIGKILL");
	await Promise.all(spawned.map(p => p.exited));
	await mall?.stop();
});

const db = (): Sequelize => (mall.node.broker.getLocalService("user") as any).adapter.db;
const rows = <T>(sql: string, replacements: unknown[]) =>
	db().query(sql, { replacements, type: QueryTypes.SELECT }) as Promise<T[]>;

interface Session {
	username: string;
	token: string;
	refresh_token: string;
}

async function register(password = "password-123"): Promise<Session> {
	const username = `s_${crypto.randomBytes(5).toString("hex")}`;
	const r = await http.post("/api/user/register", { username, password });
	expect(r.status).toBe(200);
	return { username, token: r.body.data.token, refresh_token: r.body.data.refresh_token };
}

async function login(username: string, password = "password-123"): Promise<Session> {
	const r = await http.post("/api/user/login", { username, password });
	expect(r.status).toBe(200);
	return { username, token: r.body.data.token, refresh_token: r.body.data.refresh_token };
}

const sidOf = (token: string): string => JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString()).sid;

/** The status and business code of GET /api/user/profile with this access token. */
async function profile(token: string, client = http): Promise<[number, number]> {
	const r = await client.get("/api/user/profile", token);
	return [r.status, r.body.code];
}

/** A gateway of its own, in its own process, on the mall's namespace and database. */
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
	// Ready, routing to the user actor on the first node, and known to it.
	await eventually(
		async () =>
			(await client.get("/ready")).status === 200 && (await client.post("/api/user/login", {})).status === 400,
		30000
	);
	// (A gateway's INFO reaches the others some 0.5 s after it is ready; it reloads the list once more then.)
	await eventually(async () => nodesRunning(mall.node.broker, "api").includes(nodeID), 30000, 50);
	return client;
}

describe("login and register open a session", () => {
	it("answer a refresh token and the access token's lifetime beside the access token; the access token names its session", async () => {
		const s = await register();
		const r = await http.post("/api/user/login", { username: s.username, password: "password-123" });
		expect(r.body.data).toEqual({
			token: expect.any(String),
			refresh_token: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/),
			expires_in: mall.cfg.jwt.expires_in,
			user: expect.objectContaining({ username: s.username })
		});
		expect(sidOf(r.body.data.token)).toMatch(/^[0-9a-f]{32}$/);
		expect(sidOf(r.body.data.token)).not.toBe(sidOf(s.token));
		// The server keeps a hash of each refresh token, never the token.
		const stored = await rows<{ token_hash: Buffer }>(
			"SELECT r.token_hash FROM refresh_tokens r WHERE r.session_id = ?",
			[sidOf(s.token)]
		);
		expect(stored).toHaveLength(1);
		expect(stored[0].token_hash.equals(crypto.createHash("sha256").update(s.refresh_token).digest())).toBe(true);
	});
});

describe("POST /api/auth/refresh-token", () => {
	it("rotates: a new access token and a new refresh token for the same session; both access tokens work", async () => {
		const s = await register();
		const r = await http.post("/api/auth/refresh-token", { refresh_token: s.refresh_token });
		expect(r.status).toBe(200);
		expect(r.body).toMatchObject({
			code: 0,
			data: { token: expect.any(String), refresh_token: expect.any(String), expires_in: mall.cfg.jwt.expires_in }
		});
		expect(r.body.data.refresh_token).not.toBe(s.refresh_token);
		expect(sidOf(r.body.data.token)).toBe(sidOf(s.token));
		expect(await profile(r.body.data.token)).toEqual([200, 0]);
		expect(await profile(s.token)).toEqual([200, 0]);
		// And the new one rotates in turn.
		const again = await http.post("/api/auth/refresh-token", { refresh_token: r.body.data.refresh_token });
		expect(again.status).toBe(200);
	});

	it("ends the whole session when a rotated refresh token is presented again (theft): every token of the session fails at once", async () => {
		const s = await register();
		const other = await login(s.username); // another session of the same user: untouched
		const rotated = await http.post("/api/auth/refresh-token", { refresh_token: s.refresh_token });
		expect(rotated.status).toBe(200);

		const reuse = await http.post("/api/auth/refresh-token", { refresh_token: s.refresh_token });
		expect([reuse.status, reuse.body.code, reuse.body.data]).toEqual([401, 10006, null]);
		expect(reuse.body.message).toMatch(/session has ended/);
		expect(reuse.body.trace_id).toMatch(/^[0-9a-f]{32}$/);

		const next = await http.post("/api/auth/refresh-token", { refresh_token: rotated.body.data.refresh_token });
		expect([next.status, next.body.code]).toEqual([401, 10006]);
		expect(await profile(s.token)).toEqual([401, 10006]);
		expect(await profile(rotated.body.data.token)).toEqual([401, 10006]);
		expect(await profile(other.token)).toEqual([200, 0]);
		expect(
			await rows("SELECT 1 FROM user_sessions WHERE id = ? AND revoke_reason = 'reuse'", [sidOf(s.token)])
		).toHaveLength(1);
	});

	it("lets one of 10 concurrent refreshes with one token rotate; the others count as reuse and end the session", async () => {
		const s = await register();
		const answers = await Promise.all(
			Array.from({ length: 10 }, () => http.post("/api/auth/refresh-token", { refresh_token: s.refresh_token }))
		);
		expect(answers.filter(a => a.status === 200)).toHaveLength(1);
		expect(answers.filter(a => a.status === 401 && a.body.code === 10006)).toHaveLength(9);
		expect(
			await rows("SELECT 1 FROM refresh_tokens WHERE session_id = ? AND used_at IS NOT NULL", [sidOf(s.token)])
		).toHaveLength(1);
		expect(
			await rows("SELECT 1 FROM user_sessions WHERE id = ? AND revoke_reason = 'reuse'", [sidOf(s.token)])
		).toHaveLength(1);
		const winner = answers.find(a => a.status === 200)!;
		expect(await profile(winner.body.data.token)).toEqual([401, 10006]);
	});

	it.each([
		["no body", undefined, 400, 400],
		["an empty token", { refresh_token: "" }, 400, 400],
		["a token of the wrong type", { refresh_token: 12345 }, 400, 400],
		["an unknown token", { refresh_token: crypto.randomBytes(32).toString("base64url") }, 401, 10006],
		["an access token instead (longer than any refresh token)", "access", 400, 400]
	])("refuses %s with the envelope and changes nothing", async (_name, body, status, code) => {
		const s = await register();
		const before = await rows<{ n: number }>("SELECT COUNT(*) AS n FROM refresh_tokens", []);
		const r = await http.post("/api/auth/refresh-token", body === "access" ? { refresh_token: s.token } : body);
		expect([r.status, r.body.code]).toEqual([status, code]);
		if (status === 400) expect(r.body.data.map((f: { field: string }) => f.field)).toContain("refresh_token");
		expect(await rows<{ n: number }>("SELECT COUNT(*) AS n FROM refresh_tokens", [])).toEqual(before);
		expect(await profile(s.token)).toEqual([200, 0]);
	});

	it("refuses an expired refresh token with 10005", async () => {
		const s = await register();
		await db().query("UPDATE refresh_tokens SET expires_at = NOW(3) - INTERVAL 1 SECOND WHERE session_id = ?", {
			replacements: [sidOf(s.token)]
		});
		const r = await http.post("/api/auth/refresh-token", { refresh_token: s.refresh_token });
		expect([r.status, r.body.code]).toEqual([401, 10005]);
	});
});

describe("POST /api/auth/logout", () => {
	it("ends the session: its access token fails at once, on this gateway and on a second gateway process, and its refresh token is dead", async () => {
		const gw2 = await secondGateway();
		const s = await register();
		const other = await login(s.username);
		// Both gateways have the token in their verify cache before the logout.
		expect(await profile(s.token)).toEqual([200, 0]);
		expect(await profile(s.token, gw2)).toEqual([200, 0]);

		const out = await http.post("/api/auth/logout", undefined, s.token);
		expect([out.status, out.body.code, out.body.data]).toEqual([200, 0, null]);
		// No waiting: the logout answered after every gateway took the revocation.
		expect(await profile(s.token, gw2)).toEqual([401, 10006]);
		expect(await profile(s.token)).toEqual([401, 10006]);
		const refresh = await http.post("/api/auth/refresh-token", { refresh_token: s.refresh_token });
		expect([refresh.status, refresh.body.code]).toEqual([401, 10006]);
		// The user's other session goes on, on both.
		expect(await profile(other.token)).toEqual([200, 0]);
		expect(await profile(other.token, gw2)).toEqual([200, 0]);
		expect(
			await rows("SELECT 1 FROM user_sessions WHERE id = ? AND revoke_reason = 'logout'", [sidOf(s.token)])
		).toHaveLength(1);
	}, 60000);

	it("is known to a gateway that starts after it (loaded from the user actor at start)", async () => {
		const s = await register();
		expect((await http.post("/api/auth/logout", undefined, s.token)).status).toBe(200);
		const late = await secondGateway();
		expect(await profile(s.token, late)).toEqual([401, 10006]);
	}, 60000);

	it("is caught up with by a gateway that missed the announcement, at its next resync", async () => {
		const s = await register();
		// Ended in the database without telling the gateways, as for a gateway cut off from NATS.
		await db().query("UPDATE user_sessions SET revoked_at = NOW(3), revoke_reason = 'logout' WHERE id = ?", {
			replacements: [sidOf(s.token)]
		});
		const started = Date.now();
		await eventually(async () => (await profile(s.token))[0] === 401, 5000, 100);
		expect(Date.now() - started).toBeLessThan(3000);
		expect(await profile(s.token)).toEqual([401, 10006]);
	});

	it("needs a valid access token (401 envelope)", async () => {
		const none = await http.post("/api/auth/logout");
		expect([none.status, none.body.code]).toEqual([401, 401]);
		const bad = await http.post("/api/auth/logout", undefined, "not-a-token");
		expect([bad.status, bad.body.code]).toEqual([401, 10006]);
	});
});

describe("POST /api/auth/change-password", () => {
	it("checks the old password (400/10004, nothing changed), then changes it and ends every other session of the user", async () => {
		const current = await register();
		const other = await login(current.username);
		const wrong = await http.post(
			"/api/auth/change-password",
			{ old_password: "not-the-password", new_password: "new-password-456" },
			current.token
		);
		expect([wrong.status, wrong.body.code, wrong.body.data]).toEqual([400, 10004, null]);
		expect(await profile(other.token)).toEqual([200, 0]);
		await login(current.username, "password-123");

		const ok = await http.post(
			"/api/auth/change-password",
			{ old_password: "password-123", new_password: "new-password-456" },
			current.token
		);
		expect([ok.status, ok.body.code]).toEqual([200, 0]);
		expect(await profile(other.token)).toEqual([401, 10006]);
		expect((await http.post("/api/auth/refresh-token", { refresh_token: other.refresh_token })).status).toBe(401);
		// The session that changed it goes on.
		expect(await profile(current.token)).toEqual([200, 0]);
		expect((await http.post("/api/auth/refresh-token", { refresh_token: current.refresh_token })).status).toBe(200);
		const old = await http.post("/api/user/login", { username: current.username, password: "password-123" });
		expect([old.status, old.body.code]).toEqual([401, 10004]);
		await login(current.username, "new-password-456");
	});

	it.each([
		["a new password too short", { old_password: "password-123", new_password: "short" }, "new_password"],
		["a new password too long", { old_password: "password-123", new_password: "p".repeat(73) }, "new_password"],
		["no old password", { new_password: "new-password-456" }, "old_password"],
		["the same password again", { old_password: "password-123", new_password: "password-123" }, "new_password"]
	])("refuses %s with 400 naming the field, and changes nothing", async (_name, body, field) => {
		const s = await register();
		const r = await http.post("/api/auth/change-password", body, s.token);
		expect([r.status, r.body.code]).toEqual([400, 400]);
		expect(r.body.data.map((f: { field: string }) => f.field)).toContain(field);
		await login(s.username, "password-123");
	});

	it("needs a valid access token", async () => {
		const r = await http.post("/api/auth/change-password", {
			old_password: "password-123",
			new_password: "new-password-456"
		});
		expect([r.status, r.body.code]).toEqual([401, 401]);
	});
});

describe("old sessions are purged", () => {
	it("removes refresh tokens a day past expiry and sessions with nothing left to live for; keeps the rest", async () => {
		const live = await register();
		const stale = await register();
		const endedRecently = await register();
		expect((await http.post("/api/auth/logout", undefined, endedRecently.token)).status).toBe(200);
		await db().query("UPDATE refresh_tokens SET expires_at = NOW(3) - INTERVAL 2 DAY WHERE session_id IN (?)", {
			replacements: [[sidOf(stale.token), sidOf(endedRecently.token)]]
		});
		await db().query("UPDATE user_sessions SET created_at = NOW(3) - INTERVAL 9 DAY WHERE id IN (?)", {
			replacements: [[sidOf(stale.token), sidOf(endedRecently.token)]]
		});

		expect(await (mall.node.broker.getLocalService("user") as any).purgeSessions()).toEqual({ tokens: 2, sessions: 1 });
		const left = (sid: string) =>
			rows<{ n: number }>(
				"SELECT (SELECT COUNT(*) FROM user_sessions WHERE id = ?) + (SELECT COUNT(*) FROM refresh_tokens WHERE session_id = ?) AS n",
				[sid, sid]
			);
		expect((await left(sidOf(stale.token)))[0].n).toBe(0);
		// Its access tokens may still be live: gateways must be able to load it.
		expect((await left(sidOf(endedRecently.token)))[0].n).toBe(1);
		expect((await left(sidOf(live.token)))[0].n).toBe(2);
		expect(await profile(live.token)).toEqual([200, 0]);
	});
});
