import { clientIp, LocalBuckets, rateKey } from "../../lib/http/ratelimit";

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

describe("rateKey", () => {
	it("keys an IPv6 address by its /64, whatever its spelling", () => {
		for (const ip of [
			"2001:db8:1:2::1",
			"2001:db8:1:2:ffff:ffff:ffff:ffff",
			"2001:DB8:0001:0002:0:0:0:7",
			"2001:db8:1:2::1.2.3.4",
			"2001:db8:1:2::9%eth0"
		])
			expect(rateKey(ip)).toBe("2001:db8:1:2::/64");
		expect(rateKey("2001:db8:1:3::1")).toBe("2001:db8:1:3::/64");
		expect(rateKey("fe80::1")).toBe("fe80:0:0:0::/64");
		expect(rateKey("::1")).toBe("0:0:0:0::/64");
		expect(rateKey("1::")).toBe("1:0:0:0::/64");
		expect(rateKey("1:2:3:4:5:6:7:8")).toBe("1:2:3:4::/64");
	});

	it("keeps an IPv4 address, mapped or not, per address", () => {
		expect(rateKey("203.0.113.9")).toBe("203.0.113.9");
		for (const ip of ["::ffff:203.0.113.9", "::FFFF:203.0.113.9", "0:0:0:0:0:ffff:203.0.113.9", "::ffff:cb00:7109"])
			expect(rateKey(ip)).toBe("203.0.113.9");
		expect(rateKey("::ffff:203.0.113.10")).toBe("203.0.113.10");
	});

	it("keeps what is not an address as it is", () => {
		expect(rateKey("")).toBe("");
		expect(rateKey("unknown")).toBe("unknown");
		expect(rateKey("1:2:3")).toBe("1:2:3");
	});

	it("gives the clients of one /64 one local budget, and other /64s their own", () => {
		const b = new LocalBuckets(10);
		const tier = { rate: 0.001, burst: 2 };
		const take = (ip: string) => b.take(rateKey(clientIp(ip, undefined, new Set())), tier, 0).allowed;
		expect([take("2001:db8::1"), take("2001:db8::2"), take("2001:db8:0:0:1::3")]).toEqual([true, true, false]);
		expect(take("2001:db8:0:1::1")).toBe(true);
		expect([take("::ffff:198.51.100.1"), take("::ffff:198.51.100.1"), take("::ffff:198.51.100.2")]).toEqual([
			true,
			true,
			true
		]);
	});
});
