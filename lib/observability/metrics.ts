import type { MetricRegistry } from "moleculer";

type Labels = Record<string, string>;

/**
 * Registers a GoMall counter once per broker and gives each of its known label sets a 0
 * sample, so the series exists from start: a fresh node shows 0 instead of "no data", and
 * rate() and increase() alerts can fire on the first event. Labels whose values are not
 * known in advance (routes, statuses) simply appear with their first event.
 */
export function counter(metrics: MetricRegistry, name: string, description: string, known: Labels[] = [{}]): void {
	if (!metrics.getMetric(name)) {
		const labelNames = Object.keys(known[0] ?? {});
		metrics.register({ name, type: "counter", labelNames, description });
	}
	for (const labels of known) metrics.increment(name, labels, 0);
}

/** A gauge registered once per registry, every known label set present from the start at `initial`. */
export function gauge(
	metrics: MetricRegistry,
	name: string,
	description: string,
	known: Labels[] = [{}],
	initial = 0
): void {
	if (!metrics.getMetric(name)) {
		const labelNames = Object.keys(known[0] ?? {});
		metrics.register({ name, type: "gauge", labelNames, description });
	}
	for (const labels of known) metrics.set(name, initial, labels);
}

/** Every combination of the given label values: `{ a: [1, 2], b: [x] }` -> `[{a:1,b:x}, {a:2,b:x}]`. */
export function labelSets(values: Record<string, readonly string[]>): Labels[] {
	return Object.entries(values).reduce<Labels[]>(
		(sets, [k, vs]) => sets.flatMap(s => vs.map(v => ({ ...s, [k]: v }))),
		[{}]
	);
}
