import { OrderNoGenerator } from "../../lib/domain/order-no";

describe("OrderNoGenerator", () => {
	it("makes fixed-width numbers that sort by time", () => {
		let t = Date.UTC(2026, 10, 24, 8, 53, 1, 123);
		const gen = new OrderNoGenerator(42, () => t);
		const a = gen.next();
		t += 5;
		const b = gen.next();
		expect(a).toBe("20261124085301123" + "0042" + "000");
		expect(b).toHaveLength(24);
		expect(a < b).toBe(true);
	});

	it("never repeats within one process, even past 1000 per millisecond or when the clock steps back", () => {
		let t = Date.UTC(2026, 0, 1);
		const gen = new OrderNoGenerator(7, () => t);
		const seen = new Set<string>();
		let prev = "";
		for (let i = 0; i < 5000; i++) {
			if (i === 2500) t -= 1000; // NTP step back
			const n = gen.next();
			expect(n > prev).toBe(true);
			prev = n;
			seen.add(n);
		}
		expect(seen.size).toBe(5000);
	});

	it("differs between workers in the same millisecond", () => {
		const t = () => 1_700_000_000_000;
		expect(new OrderNoGenerator(1, t).next()).not.toBe(new OrderNoGenerator(2, t).next());
	});

	it("refuses a worker id out of range", () => {
		expect(() => new OrderNoGenerator(10000)).toThrow(RangeError);
	});
});
