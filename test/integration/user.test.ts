import jwt from "jsonwebtoken";
import { newSessionId } from "../../lib/auth/sessions";
import { startMall, TestMall } from "../helpers/node";

let mall: TestMall;

beforeAll(async () => {
	mall = await startMall();
});
afterAll(() => mall?.stop());

describe("POST /api/user/register", () => {
	it("creates a user and returns a token, never the hash", async () => {
		const r = await mall.http.post("/api/user/register", {
			username: "alice_1",
			password: "password-1",
			email: "alice@example.com",
			phone: "+8613800000000"
		});
		expect(r.status).toBe(200);
		expect(r.body.code).toBe(0);
		expect(r.body.message).toBe("success");
		expect(r.body.trace_id).toMatch(/^[0-9a-f]{32}$/);
		expect(r.body.data.token).toEqual(expect.any(String));
		expect(r.body.data.user).toEqual({
			id: expect.any(Number),
			username: "alice_1",
			email: "alice@example.com",
			phone: "+8613800000000",
			role: 1,
			created_at: expect.any(String)
		});
		expect(JSON.stringify(r.body)).not.toMatch(/password/);
	});

	it.each([
		["username too short", { username: "ab", password: "password-1" }, "username"],
		["username with bad characters", { username: "bad name!", password: "password-1" }, "username"],
		["username too long", { username: "a".repeat(33), password: "password-1" }, "username"],
		["password too short", { username: "bob_short", password: "short" }, "password"],
		["password too long", { username: "bob_long", password: "p".repeat(73) }, "password"],
		["bad email", { username: "bob_mail", password: "password-1", email: "not-an-email" }, "email"],
		["bad phone", { username: "bob_phone", password: "password-1", phone: "12ab" }, "phone"],
		["missing password", { username: "bob_nopass" }, "password"]
	])("rejects %s with 400 naming the field, and stores nothing", async (_name, body, field) => {
		const r = await mall.http.post("/api/user/register", body);
		expect(r.status).toBe(400);
		expect(r.body.code).toBe(400);
		expect(r.body.data.map((f: { field: string }) => f.field)).toContain(field);
		const users = (mall.node.broker.getLocalService("user") as any).model;
		expect(await users.count({ where: { username: body.username } })).toBe(0);
	});

	it("ignores a role sent by the client", async () => {
		const r = await mall.http.post("/api/user/register", { username: "sneaky", password: "password-1", role: 2 });
		expect(r.status).toBe(200);
		expect(r.body.data.user.role).toBe(1);
	});

	it("gives a duplicate username or email 409/10002", async () => {
		await mall.http.post("/api/user/register", {
			username: "dup_user",
			password: "password-1",
			email: "dup@example.com"
		});
		const sameName = await mall.http.post("/api/user/register", { username: "dup_user", password: "password-2" });
		expect([sameName.status, sameName.body.code]).toEqual([409, 10002]);
		const sameMail = await mall.http.post("/api/user/register", {
			username: "dup_user2",
			password: "password-2",
			email: "dup@example.com"
		});
		expect([sameMail.status, sameMail.body.code]).toEqual([409, 10002]);
	});

	it("lets exactly one of 20 concurrent registrations of one username succeed; the rest get 409", async () => {
		const results = await Promise.all(
			Array.from({ length: 20 }, (_, i) =>
				mall.http.post("/api/user/register", { username: "racer", password: `password-${i}` })
			)
		);
		const statuses = results.map(r => r.status);
		expect(statuses.filter(s => s === 200)).toHaveLength(1);
		expect(statuses.filter(s => s === 409)).toHaveLength(19);
		expect(results.filter(r => r.status === 409).every(r => r.body.code === 10002)).toBe(true);
	});
});

describe("POST /api/user/login", () => {
	beforeAll(async () => {
		await mall.http.post("/api/user/register", { username: "carol", password: "carol-password" });
	});

	it("returns a token for the right password", async () => {
		const r = await mall.http.post("/api/user/login", { username: "carol", password: "carol-password" });
		expect(r.status).toBe(200);
		expect(r.body.data.user.username).toBe("carol");
		expect(r.body.data.token).toEqual(expect.any(String));
	});

	it("refuses a wrong password and an unknown user alike with 401/10004", async () => {
		const wrong = await mall.http.post("/api/user/login", { username: "carol", password: "not-her-password" });
		const unknown = await mall.http.post("/api/user/login", { username: "nobody_here", password: "whatever-1" });
		for (const r of [wrong, unknown]) expect([r.status, r.body.code]).toEqual([401, 10004]);
	});

	it("validates its input", async () => {
		const r = await mall.http.post("/api/user/login", { username: "carol" });
		expect(r.status).toBe(400);
		expect(r.body.data[0].field).toBe("password");
	});

	it("refuses a disabled user with 403/10003", async () => {
		await mall.http.post("/api/user/register", { username: "dora", password: "dora-password" });
		const model = (mall.node.broker.getLocalService("user") as any).model;
		await model.update({ status: 0 }, { where: { username: "dora" } });
		const r = await mall.http.post("/api/user/login", { username: "dora", password: "dora-password" });
		expect([r.status, r.body.code]).toEqual([403, 10003]);
	});

	it("refuses a disabled user alike with the right and a wrong password: the answer never says the password was right", async () => {
		await mall.http.post("/api/user/register", { username: "edna", password: "edna-password" });
		const model = (mall.node.broker.getLocalService("user") as any).model;
		await model.update({ status: 0 }, { where: { username: "edna" } });
		const right = await mall.http.post("/api/user/login", { username: "edna", password: "edna-password" });
		const wrong = await mall.http.post("/api/user/login", { username: "edna", password: "not-edna-password" });
		expect([wrong.status, wrong.body]).toEqual([right.status, { ...right.body, trace_id: wrong.body.trace_id }]);
	});
});

describe("login timing", () => {
	let slow: TestMall;
	// The production-like cost (prod uses 12): the test environment's cost 4 would hide the gap.
	beforeAll(async () => {
		slow = await startMall({ bcrypt: { cost: 10 } });
	});
	afterAll(() => slow?.stop());

	it("takes as long for an unknown user as for a known one with a wrong password (medians within 25%)", async () => {
		await slow.http.post("/api/user/register", { username: "timed_user", password: "timed-password" });
		const took = async (username: string) => {
			const t0 = process.hrtime.bigint();
			const r = await slow.http.post("/api/user/login", { username, password: "wrong-password-1" });
			expect(r.body.code).toBe(10004);
			return Number(process.hrtime.bigint() - t0) / 1e6;
		};
		const known: number[] = [];
		const unknown: number[] = [];
		for (let i = 0; i < 25; i++) {
			known.push(await took("timed_user"));
			unknown.push(await took(`nobody_${i}`));
		}
		const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
		const [k, u] = [median(known), median(unknown)];
		// The medians are printed on failure: the ratio is what is asserted, never an absolute time.
		expect({ known: k, unknown: u, within25: Math.min(k, u) / Math.max(k, u) >= 0.75 }).toEqual({
			known: k,
			unknown: u,
			within25: true
		});
	});
});

describe("GET /api/user/profile", () => {
	it("returns the caller", async () => {
		const u = await mall.http.newUser();
		const r = await mall.http.get("/api/user/profile", u.token);
		expect(r.status).toBe(200);
		expect(r.body.data).toMatchObject({ id: u.id, username: u.username, role: 1 });
	});

	it("is 401 without a token", async () => {
		const r = await mall.http.get("/api/user/profile");
		expect([r.status, r.body.code]).toEqual([401, 401]);
	});

	it("is 401/10006 with a forged token", async () => {
		// With a session id: refused for the signature alone.
		const forged = jwt.sign({ role: 2, sid: newSessionId() }, "not-the-secret", { subject: "1", expiresIn: 3600 });
		const r = await mall.http.get("/api/user/profile", forged);
		expect([r.status, r.body.code]).toEqual([401, 10006]);
		const garbage = await mall.http.get("/api/user/profile", "abc.def.ghi");
		expect([garbage.status, garbage.body.code]).toEqual([401, 10006]);
	});

	it("refuses the none algorithm", async () => {
		const unsigned = jwt.sign({ role: 2, sid: newSessionId() }, "", {
			subject: "1",
			algorithm: "none"
		} as jwt.SignOptions);
		const r = await mall.http.get("/api/user/profile", unsigned);
		expect([r.status, r.body.code]).toEqual([401, 10006]);
	});

	it("is 401/10005 with an expired token", async () => {
		const expired = jwt.sign(
			{ role: 1, sid: newSessionId(), exp: Math.floor(Date.now() / 1000) - 60 },
			mall.cfg.jwt.secret,
			{
				subject: "1"
			}
		);
		const r = await mall.http.get("/api/user/profile", expired);
		expect([r.status, r.body.code]).toEqual([401, 10005]);
	});

	it("is 404/10001 when the user behind a valid token is gone", async () => {
		// A well-formed token of a session that was never ended: only the user is missing.
		const token = jwt.sign({ role: 1, sid: newSessionId() }, mall.cfg.jwt.secret, { subject: "999999", expiresIn: 60 });
		const r = await mall.http.get("/api/user/profile", token);
		expect([r.status, r.body.code]).toEqual([404, 10001]);
	});
});

describe("first admin", () => {
	it("is created from the configured credentials", async () => {
		const token = await mall.http.adminToken();
		const r = await mall.http.get("/api/user/profile", token);
		expect(r.body.data.role).toBe(2);
	});
});
