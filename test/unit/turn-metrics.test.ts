import { ServiceBroker } from "moleculer";
import { TurnMetrics } from "../../lib/observability/turn-metrics";

const BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const turn = () => new Promise(r => setImmediate(r));

/** The same observations fed one by one into one family and per turn into another: the same series. */
it("hands each turn's counts and observations to Moleculer's registry as if each had been made alone", async () => {
	const broker = new ServiceBroker({
		logger: false,
		metrics: { enabled: true, reporter: [], defaultQuantiles: null as any }
	});
	const m = broker.metrics;
	for (const name of ["direct", "batched"]) {
		m.register({ name: `${name}_total`, type: "counter", labelNames: ["route", "status"] });
		m.register({ name: `${name}_seconds`, type: "histogram", labelNames: ["route", "status"], buckets: BUCKETS });
	}
	const batch = new TurnMetrics(m);
	let seed = 7;
	const random = () => ((seed = (seed * 48271) % 2147483647) / 2147483647) * 6; // 0-6 s: past the last bound too
	for (let t = 0; t < 20; t++) {
		for (let i = 0; i < 1 + (t % 7) * 9; i++) {
			const labels = { route: i % 3 ? "/api/seckill" : "/health", status: i % 5 ? 409 : 200 };
			const key = `${labels.route} ${labels.status}`;
			const v = i === 0 ? BUCKETS[t % BUCKETS.length] : random() / 10 ** (i % 4); // bounds themselves included
			m.increment("direct_total", labels);
			m.observe("direct_seconds", v, labels);
			batch.increment("batched_total", key, () => labels);
			batch.observe("batched_seconds", key, () => labels, v);
		}
		await turn();
	}
	const strip = (name: string) =>
		(m.getMetric(name) as any).snapshot().map((s: any) => ({
			labels: s.labels,
			value: s.value,
			count: s.count,
			sum: s.sum === undefined ? undefined : Math.round(s.sum * 1e9),
			buckets: s.buckets
		}));
	expect(strip("batched_total")).toEqual(strip("direct_total"));
	expect(strip("batched_seconds")).toEqual(strip("direct_seconds"));
	expect(strip("batched_seconds").reduce((n: number, s: any) => n + s.count, 0)).toBe(
		Array.from({ length: 20 }, (_, t) => 1 + (t % 7) * 9).reduce((a, b) => a + b)
	);
});

it("drops a family the registry does not have instead of throwing from its timer", async () => {
	const broker = new ServiceBroker({ logger: false, metrics: { enabled: true, reporter: [] } });
	broker.metrics.register({ name: "known_total", type: "counter", labelNames: ["k"] });
	const batch = new TurnMetrics(broker.metrics);
	batch.increment("unknown_total", "a", () => ({ k: "a" }));
	batch.increment("known_total", "a", () => ({ k: "a" }));
	expect(() => batch.flush()).not.toThrow();
	expect((broker.metrics.getMetric("known_total") as any).snapshot()).toEqual([
		expect.objectContaining({ labels: { k: "a" }, value: 1 })
	]);
});
