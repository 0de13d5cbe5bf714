import { TokenService } from "../../lib/jwt";

describe("TokenService's cache of verified tokens", () => {
	afterEach(() => jest.restoreAllMocks());

	it("answers a token it verified from the cache, and only that exact string", () => {
		const tokens = new TokenService("a-secret-of-some-length-for-tests", 60, 100);
		const t = tokens.sign({ id: 7, role: 1 });
		expect(tokens.verify(t)).toEqual({ id: 7, role: 1 });
		expect(tokens.verify(t)).toEqual({ id: 7, role: 1 });
		// Same header and claims, another signature: not the cached string, so checked, and refused.
		const forged = t.slice(0, -2) + (t.endsWith("AA") ? "BB" : "AA");
		expect(tokens.verify(forged)).toBe("TOKEN_INVALID");
		expect(new TokenService("another-secret-of-some-length-xx", 60, 100).verify(t)).toBe("TOKEN_INVALID");
	});

	it("refuses a cached token once it has expired", () => {
		const tokens = new TokenService("a-secret-of-some-length-for-tests", 60, 100);
		const t = tokens.sign({ id: 7, role: 1 });
		expect(tokens.verify(t)).toEqual({ id: 7, role: 1 });
		const now = Date.now();
		jest.spyOn(Date, "now").mockReturnValue(now + 61_000);
		expect(tokens.verify(t)).toBe("TOKEN_EXPIRED");
		expect(tokens.verify(t)).toBe("TOKEN_EXPIRED");
	});

	it("with the cache off, verifies every time", () => {
		const tokens = new TokenService("a-secret-of-some-length-for-tests", 60, 0);
		const t = tokens.sign({ id: 3, role: 2 });
		expect(tokens.verify(t)).toEqual({ id: 3, role: 2 });
		const now = Date.now();
		jest.spyOn(Date, "now").mockReturnValue(now + 61_000);
		expect(tokens.verify(t)).toBe("TOKEN_EXPIRED");
	});
});
