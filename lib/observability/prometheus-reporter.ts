import { MetricReporters } from "moleculer";

/**
 * Moleculer's Prometheus reporter, without the HTTP server it would open on its own port:
 * the gateway serves `generatePrometheusResponse()` at /metrics on the API port (SPEC).
 */
export class GomallPrometheusReporter extends MetricReporters.Prometheus {
	override init(registry: any): void {
		// With metrics.port set, every node (not only a gateway) serves its own /metrics there,
		// so Prometheus can scrape the stock and order nodes' counters one by one.
		if ((this as any).opts.listen) return super.init(registry);
		// Otherwise skip Prometheus.init (it would listen on :3030) but keep the base wiring.
		(MetricReporters.Base.prototype as any).init.call(this, registry);
	}

	override stop(): Promise<void> {
		return (this as any).server ? super.stop() : Promise.resolve();
	}

	/**
	 * The exposition, written so that `promtool check metrics` accepts it: Moleculer's own
	 * names break Prometheus conventions (counters without `_total`, gauges with it, camelCase
	 * labels, quantiles on a gauge, `_rate` series without help), so names and types are
	 * normalised here, in one place, for built-in and GoMall metrics alike.
	 */
	override generatePrometheusResponse(): string {
		const out: string[] = [];
		const registry = (this as any).registry;
		registry.store.forEach((metric: any) => {
			if (metric.name.startsWith("os.datetime")) return;
			const snapshot = metric.snapshot() as any[];
			if (!snapshot.length) return;
			let name = promName(metric.name);
			const help = escapeHelp(metric.description || metric.name + (metric.unit ? ` (${metric.unit})` : ""));
			const line = (suffix: string, labels: Record<string, unknown>, value: unknown) =>
				out.push(`${name}${suffix}${promLabels(labels)} ${value == null ? "NaN" : value}`);
			if (metric.type === "counter") {
				if (!name.endsWith("_total")) name += "_total";
				out.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
				for (const item of snapshot) line("", item.labels, item.value);
			} else if (metric.type === "gauge" || metric.type === "info") {
				if (name.endsWith("_total")) name = name.slice(0, -"_total".length) + "_all";
				out.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`);
				for (const item of snapshot) {
					if (metric.type === "info") line("", { ...item.labels, value: item.value }, 1);
					else line("", item.labels, item.value);
				}
			} else if (metric.type === "histogram") {
				const buckets = snapshot.some(i => i.buckets);
				out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${buckets ? "histogram" : "summary"}`);
				for (const item of snapshot) {
					if (buckets) {
						const bounds = Object.keys(item.buckets ?? {}).sort((x, y) => Number(x) - Number(y));
						for (const le of bounds) line("_bucket", { ...item.labels, le }, item.buckets[le]);
						line("_bucket", { ...item.labels, le: "+Inf" }, item.count);
					} else {
						for (const q of Object.keys(item.quantiles ?? {}))
							line("", { ...item.labels, quantile: q }, item.quantiles[q]);
					}
					line("_sum", item.labels, item.sum ?? 0);
					line("_count", item.labels, item.count ?? 0);
				}
			}
			out.push("");
		});
		return out.join("\n");
	}
}

function promName(name: string): string {
	return name
		.replace(/[^a-zA-Z0-9_]/g, "_")
		.replace(/([a-z0-9])([A-Z])/g, "$1_$2")
		.toLowerCase();
}

function promLabels(labels: Record<string, unknown> = {}): string {
	const keys = Object.keys(labels).filter(k => labels[k] !== undefined && labels[k] !== null);
	if (!keys.length) return "";
	return `{${keys.map(k => `${promName(k)}="${String(labels[k]).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`).join(",")}}`;
}

function escapeHelp(text: string): string {
	return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** The reporter's type name in the broker options (`metrics.reporter: [{ type, options }]`). */
export const PROMETHEUS_REPORTER = "GomallPrometheus";
// Moleculer's typings declare the registered value an instance; its registry holds classes.
MetricReporters.register(
	PROMETHEUS_REPORTER,
	GomallPrometheusReporter as unknown as InstanceType<typeof MetricReporters.Base>
);
