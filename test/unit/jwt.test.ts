import crypto from "node:crypto";
import jwt from "jsonwebtoken";
import { TokenService } from "../../lib/auth/jwt";
import { newSessionId, RevokedSessions } from "../../lib/auth/sessions";

const SID = "0123456789abcdef0123456789abcdef";

describe("TokenService's cache of verified tokens", () => {
	afterEach(() => jest.restoreAllMocks());

	it("answers a token it verified from the cache, and only that exact string", () => {
		const tokens = new TokenService("a-secret-of-some-length-for-tests", 60, 100);
		const t = tokens.sign({ id: 7, role: 1 }, SID);
		expect(tokens.verify(t)).toEqual({ id: 7, role: 1, sid: SID });
		expect(tokens.verify(t)).toEqual({ id: 7, role: 1, sid: SID });
		// Same header and claims, another signature: not the cached string, so checked, and refused.
		const forged = t.slice(0, -2) + (t.endsWith("AA") ? "BB" : "AA");
		expect(tokens.verify(forged)).toBe("TOKEN_INVALID");
		expect(new TokenService("another-secret-of-some-length-xx", 60, 100).verify(t)).toBe("TOKEN_INVALID");
	});

	it("refuses a cached token once it has expired", () => {
		const tokens = new TokenService("a-secret-of-some-length-for-tests", 60, 100);
		const t = tokens.sign({ id: 7, role: 1 }, SID);
		expect(tokens.verify(t)).toEqual({ id: 7, role: 1, sid: SID });
		const now = Date.now();
		jest.spyOn(Date, "now").mockReturnValue(now + 61_000);
		expect(tokens.verify(t)).toBe("TOKEN_EXPIRED");
		expect(tokens.verify(t)).toBe("TOKEN_EXPIRED");
	});

	it("with the cache off, verifies every time", () => {
		const tokens = new TokenService("a-secret-of-some-length-for-tests", 60, 0);
		const t = tokens.sign({ id: 3, role: 2 }, SID);
		expect(tokens.verify(t)).toEqual({ id: 3, role: 2, sid: SID });
		const now = Date.now();
		jest.spyOn(Date, "now").mockReturnValue(now + 61_000);
		expect(tokens.verify(t)).toBe("TOKEN_EXPIRED");
	});
});

describe("the session id claim", () => {
	const secret = "a-secret-of-some-length-for-tests";

	it("comes back from verify, from the cache too", () => {
		const tokens = new TokenService(secret, 60, 100);
		const sid = newSessionId();
		const t = tokens.sign({ id: 7, role: 1 }, sid);
		expect(tokens.verify(t)).toEqual({ id: 7, role: 1, sid });
		expect(tokens.verify(t)).toEqual({ id: 7, role: 1, sid });
	});

	it("is required: a signed, unexpired token without one is refused, every time (it is never cached)", () => {
		const key = crypto.createSecretKey(Buffer.from(secret, "utf8"));
		const t = jwt.sign({ role: 1 }, key, { algorithm: "HS256", subject: "7", expiresIn: 60 });
		for (const size of [100, 0]) {
			const tokens = new TokenService(secret, 60, size);
			expect(tokens.verify(t)).toBe("TOKEN_INVALID");
			expect(tokens.verify(t)).toBe("TOKEN_INVALID");
		}
	});

	it("refuses a signed token whose sid is not a session id", () => {
		const key = crypto.createSecretKey(Buffer.from(secret, "utf8"));
		for (const sid of ["short", 42, "0123456789ABCDEF0123456789ABCDEF"]) {
			const t = jwt.sign({ role: 1, sid }, key, { algorithm: "HS256", subject: "7", expiresIn: 60 });
			expect(new TokenService(secret, 60, 100).verify(t)).toBe("TOKEN_INVALID");
		}
	});
});

describe("RevokedSessions", () => {
	afterEach(() => jest.restoreAllMocks());

	it("refuses a session until its tokens would have expired anyway, then forgets it", () => {
		const revoked = new RevokedSessions();
		const now = Date.now();
		revoked.add([{ sid: "a".repeat(32), until: Math.floor(now / 1000) + 10 }]);
		expect(revoked.has("a".repeat(32))).toBe(true);
		expect(revoked.has("b".repeat(32))).toBe(false);
		jest.spyOn(Date, "now").mockReturnValue(now + 11_000);
		expect(revoked.has("a".repeat(32))).toBe(false);
		jest.spyOn(Date, "now").mockReturnValue(now + 120_000);
		revoked.has("a".repeat(32));
		expect(revoked.size).toBe(0);
	});

	it("keeps the later end when a session is announced twice", () => {
		const revoked = new RevokedSessions();
		const now = Math.floor(Date.now() / 1000);
		revoked.add([{ sid: "a".repeat(32), until: now + 100 }]);
		revoked.add([{ sid: "a".repeat(32), until: now + 1 }]);
		jest.spyOn(Date, "now").mockReturnValue((now + 50) * 1000);
		expect(revoked.has("a".repeat(32))).toBe(true);
	});
});
