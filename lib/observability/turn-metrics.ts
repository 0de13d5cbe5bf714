import type { MetricRegistry } from "moleculer";

type Labels = Record<string, string | number>;

/** What Moleculer's histogram keeps per label set (moleculer/src/metrics/types/histogram.js). */
interface HistogramItem {
	sum: number;
	count: number;
	lastValue: number;
	timestamp: number;
	bucketValues?: Record<number, number>;
	rate?: { update(count: number): void };
}
interface HistogramMetric {
	buckets?: number[];
	observe(value: number, labels: Labels): HistogramItem;
}

/** One label set's observations of one turn. */
interface Pending {
	labels: Labels;
	count: number;
	sum: number;
	last: number;
	/** the histogram's bucket bounds, ascending (the registry's) */
	bounds: number[];
	/** observations at or below each bound (Prometheus' cumulative `le`) */
	le: number[];
}

/**
 * Counters and histograms of Moleculer's registry fed once per event-loop turn.
 *
 * Moleculer's `increment` and `observe` hash the labels on every call and its histogram walks
 * every bucket through a float-keyed object: profiled on the flash sale's lane, the two calls a
 * request made were 8-10% of the gateway's busy time. Here a request adds to a plain record
 * found by a key its caller builds (one string), and `setImmediate` hands each label set's
 * totals to the registry once: one hash per label set per turn, however many requests the turn
 * answered. The families, their names, labels and buckets are the registry's own, so
 * /metrics and every dashboard read the same series; a sample is at most one turn late.
 */
export class TurnMetrics {
	private counters = new Map<string, Map<string, { labels: Labels; n: number }>>();
	private gauges = new Map<string, Map<string, { labels: Labels; n: number }>>();
	private histograms = new Map<string, Map<string, Pending>>();
	private scheduled = false;

	constructor(private readonly registry: MetricRegistry) {}

	/** Counts one event of `name` under `labels`; `key` names the label set (the caller's cheap join of its values). */
	increment(name: string, key: string, labels: () => Labels): void {
		let family = this.counters.get(name);
		if (!family) this.counters.set(name, (family = new Map()));
		const entry = family.get(key);
		if (entry) entry.n++;
		else family.set(key, { labels: labels(), n: 1 });
		this.schedule();
	}

	/** Adds `delta` (either sign) to gauge `name` under `labels`, keyed as in increment. */
	adjust(name: string, key: string, labels: () => Labels, delta: number): void {
		let family = this.gauges.get(name);
		if (!family) this.gauges.set(name, (family = new Map()));
		const entry = family.get(key);
		if (entry) entry.n += delta;
		else family.set(key, { labels: labels(), n: delta });
		this.schedule();
	}

	/** Observes `value` into histogram `name` under `labels`, keyed as in increment. */
	observe(name: string, key: string, labels: () => Labels, value: number): void {
		let family = this.histograms.get(name);
		if (!family) this.histograms.set(name, (family = new Map()));
		let p = family.get(key);
		if (!p) {
			const bounds = (this.registry.getMetric(name) as unknown as HistogramMetric | null)?.buckets ?? [];
			family.set(key, (p = { labels: labels(), count: 0, sum: 0, last: 0, bounds, le: bounds.map(() => 0) }));
		}
		p.count++;
		p.sum += value;
		p.last = value;
		for (let i = p.bounds.length - 1; i >= 0 && value <= p.bounds[i]; i--) p.le[i]++;
		this.schedule();
	}

	/** Hands every pending count and observation to the registry now (also what each turn's flush does). */
	readonly flush = (): void => {
		this.scheduled = false;
		for (const [name, family] of this.counters) {
			// A family the registry lacks is dropped, not thrown from a timer (which would end the process).
			if (this.registry.getMetric(name))
				for (const { labels, n } of family.values()) this.registry.increment(name, labels, n);
			family.clear();
		}
		for (const [name, family] of this.gauges) {
			// A net 0 too: the series exists, as it would had each change been made alone.
			if (this.registry.getMetric(name))
				for (const { labels, n } of family.values()) this.registry.increment(name, labels, n);
			family.clear();
		}
		for (const [name, family] of this.histograms) {
			const metric = this.registry.getMetric(name) as unknown as HistogramMetric | null;
			if (metric) for (const p of family.values()) addTo(metric, p);
			family.clear();
		}
	};

	private schedule(): void {
		if (this.scheduled) return;
		this.scheduled = true;
		setImmediate(this.flush);
	}
}

/**
 * The registry's own observe for the turn's last value (which makes the label set's item if it
 * is new, and stamps it), then the rest of the turn added to that item in one step.
 */
function addTo(metric: HistogramMetric, p: Pending): void {
	const item = metric.observe(p.last, p.labels);
	if (p.count === 1) return;
	item.sum += p.sum - p.last;
	item.count += p.count - 1;
	if (item.bucketValues) {
		const { bounds, le } = p;
		for (let i = 0; i < bounds.length; i++) item.bucketValues[bounds[i]] += le[i] - (p.last <= bounds[i] ? 1 : 0);
	}
	if (item.rate) item.rate.update(item.count);
}
