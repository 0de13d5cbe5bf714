import { Errors, ServiceBroker } from "moleculer";
import { BROKER_MIDDLEWARES } from "../../moleculer.config";

const turn = () => new Promise(r => setImmediate(r));

const FAMILIES = [
	"moleculer.request.total",
	"moleculer.request.active",
	"moleculer.request.levels",
	"moleculer.request.time",
	"moleculer.request.error.total"
];

/** The same calls on a broker with Moleculer's own middlewares and on one with the mall's list. */
async function seriesAfterCalls(middlewares: Partial<ConstructorParameters<typeof ServiceBroker>[0]>) {
	const broker = new ServiceBroker({
		logger: false,
		metrics: { enabled: true, reporter: [], defaultQuantiles: null as any },
		...middlewares
	});
	broker.createService({
		name: "probe",
		actions: {
			ok: () => "ok",
			slow: () => new Promise(r => setTimeout(() => r("slow"), 30)),
			fail: () => {
				throw new Errors.MoleculerClientError("no", 409, "NOPE");
			},
			nested: { handler: ctx => ctx.call("probe.ok") }
		}
	});
	await broker.start();
	try {
		// Many calls in one turn, some across turns, a nested call (level 2, its caller the service probe), errors.
		await Promise.all(Array.from({ length: 50 }, () => broker.call("probe.ok")));
		const slow = Promise.all(Array.from({ length: 5 }, () => broker.call("probe.slow")));
		await turn();
		const activeMidway = (broker.metrics.getMetric("moleculer.request.active") as any)
			.snapshot()
			.find((s: any) => s.labels.action === "probe.slow")?.value;
		await slow;
		await Promise.all(Array.from({ length: 7 }, () => broker.call("probe.nested")));
		await Promise.allSettled(Array.from({ length: 3 }, () => broker.call("probe.fail")));
		await turn();
		const series = FAMILIES.flatMap(name =>
			(broker.metrics.getMetric(name) as any)
				.snapshot()
				.filter((s: any) => String(s.labels.action).startsWith("probe."))
				.map((s: any) => ({ name, labels: s.labels, value: s.value, count: s.count }))
		).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
		const time = (broker.metrics.getMetric("moleculer.request.time") as any).snapshot();
		return { series, activeMidway, time };
	} finally {
		await broker.stop();
	}
}

it("feeds Moleculer's request families per turn: the same series, labels and counts as its own Metrics middleware", async () => {
	const own = await seriesAfterCalls({});
	const mall = await seriesAfterCalls({ internalMiddlewares: false, middlewares: BROKER_MIDDLEWARES });
	expect(mall.series).toEqual(own.series);
	expect(
		mall.series.find(
			s => s.name === "moleculer.request.total" && s.labels.action === "probe.ok" && s.labels.caller === null
		)?.value
	).toBe(50);
	expect(mall.series.find(s => s.name === "moleculer.request.total" && s.labels.caller === "probe")?.value).toBe(7);
	expect(mall.series.filter(s => s.name === "moleculer.request.active").every(s => s.value === 0)).toBe(true);
	expect(mall.series.find(s => s.name === "moleculer.request.error.total")).toMatchObject({
		labels: { action: "probe.fail", errorName: "MoleculerClientError", errorCode: 409, errorType: "NOPE" },
		value: 3
	});
	// Five slow calls in flight after their turn ended: counted as active, as Moleculer's own did.
	expect([mall.activeMidway, own.activeMidway]).toEqual([5, 5]);
	// The time histogram: the slow calls in the buckets above 30 ms, with the same bounds.
	const slow = (t: any[]) => t.find(s => s.labels.action === "probe.slow");
	expect(Object.keys(slow(mall.time).buckets)).toEqual(Object.keys(slow(own.time).buckets));
	expect(slow(mall.time).sum).toBeGreaterThanOrEqual(5 * 29);
});
