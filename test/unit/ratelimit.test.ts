import { clientIp, LocalBuckets } from "../../lib/http/ratelimit";

describe("LocalBuckets", () => {
	it("allows the burst, then the rate", () => {
		const b = new LocalBuckets(10);
		const tier = { rate: 10, burst: 5 };
		let t = 0;
		let allowed = 0;
		for (let i = 0; i < 100; i++) if (b.take("ip", tier, t).allowed) allowed++;
		expect(allowed).toBe(5);
		// one second later: 10 more tokens, capped at the burst
		t += 1000;
		allowed = 0;
		for (let i = 0; i < 100; i++) if (b.take("ip", tier, t).allowed) allowed++;
		expect(allowed).toBe(5);
		// over 10 s at 20 requests per second: burst + rate x time
		allowed = 0;
		for (let i = 0; i < 200; i++) {
			t += 50;
			if (b.take("ip2", tier, t).allowed) allowed++;
		}
		expect(allowed).toBeGreaterThanOrEqual(100);
		expect(allowed).toBeLessThanOrEqual(105);
	});

	it("says when to retry", () => {
		const b = new LocalBuckets(10);
		b.take("ip", { rate: 2, burst: 1 }, 0);
		expect(b.take("ip", { rate: 2, burst: 1 }, 100)).toEqual({ allowed: false, retryAfterMs: 400 });
	});

	it("stays bounded and evicts the least recently used key first", () => {
		const b = new LocalBuckets(3);
		const tier = { rate: 1, burst: 1 };
		b.take("a", tier, 0);
		b.take("b", tier, 0);
		b.take("a", tier, 0); // a is now the most recent (and empty)
		b.take("c", tier, 0);
		b.take("d", tier, 0); // evicts b, not a
		expect(b.size).toBe(3);
		expect(b.take("a", tier, 0).allowed).toBe(false);
		expect(b.take("b", tier, 0).allowed).toBe(true);
	});
});

describe("clientIp", () => {
	const trusted = new Set(["10.0.0.1"]);
	it("uses the socket address and ignores a spoofed X-Forwarded-For", () => {
		expect(clientIp("::ffff:203.0.113.9", "1.2.3.4", trusted)).toBe("203.0.113.9");
	});
	it("believes a trusted proxy, taking the right-most untrusted hop", () => {
		expect(clientIp("10.0.0.1", "1.2.3.4, 198.51.100.7", trusted)).toBe("198.51.100.7");
		expect(clientIp("10.0.0.1", "198.51.100.7, 10.0.0.1", trusted)).toBe("198.51.100.7");
	});
});
