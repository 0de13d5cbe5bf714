import os from "node:os";
import type { BrokerOptions } from "moleculer";
import { MetricReporters } from "moleculer";
import type { Config } from "./config";
import type { GomallLogging } from "./lib/logger";
import { idGenerator } from "./lib/ids";
import { ClusterSafeRedisCacher } from "./lib/cacher";
import { cacherRedisOptions } from "./lib/redis";
import { OtlpTraceExporter } from "./lib/otlp-exporter";

/**
 * Moleculer's Prometheus reporter, without the HTTP server it would open on its own port:
 * the gateway serves `generatePrometheusResponse()` at /metrics on the API port (SPEC).
 */
export class GatewayPrometheusReporter extends MetricReporters.Prometheus {
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
			const line = (suffix: string, labels: Record<string, unknown>, value: unknown) => out.push(`${name}${suffix}${promLabels(labels)} ${value == null ? "NaN" : value}`);
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
						for (const q of Object.keys(item.quantiles ?? {})) line("", { ...item.labels, quantile: q }, item.quantiles[q]);
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
	return name.replace(/[^a-zA-Z0-9_]/g, "_").replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase();
}

function promLabels(labels: Record<string, unknown> = {}): string {
	const keys = Object.keys(labels).filter(k => labels[k] !== undefined && labels[k] !== null);
	if (!keys.length) return "";
	return `{${keys.map(k => `${promName(k)}="${String(labels[k]).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`).join(",")}}`;
}

function escapeHelp(text: string): string {
	return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

const TRACED_PARAMS = ["id", "product_id", "order_no", "quantity", "page", "page_size", "status"];

/**
 * An action span's tags: the whitelisted params and the caller's user id when it starts, the
 * response's order_no when it ends. The same tags Moleculer's path lists would give, without
 * lodash parsing a path per field on every call (it showed in the flash sale's profile).
 */
function actionSpanTags(this: unknown, ctx: { params?: any; meta?: any }, res?: any): Record<string, unknown> {
	if (arguments.length > 1) return res && typeof res === "object" && res.order_no !== undefined ? { response: { order_no: res.order_no } } : {};
	const params: Record<string, unknown> = {};
	const p = ctx.params;
	if (p && typeof p === "object") for (const k of TRACED_PARAMS) if (p[k] !== undefined) params[k] = p[k];
	const userId = ctx.meta?.user?.id;
	return userId === undefined ? { params } : { params, meta: { user: { id: userId } } };
}

/**
 * Errors raised before a request reached any handler of the callee: no endpoint to send it
 * to, the callee's bulkhead queue full (refused before the handler ran), the transporter
 * down when publishing. Replaying such a request cannot run the action twice.
 */
const NEVER_RAN = new Set(["ServiceNotAvailableError", "ServiceNotFoundError", "QueueIsFullError", "BrokerDisconnectedError"]);

/**
 * The retry check. Moleculer calls it as `opts.check(err)` with `opts` the broker policy
 * merged with the action's own `retryPolicy`, which travels to other nodes in the action's
 * definition (a function would not survive that trip, a flag does). An action that is not
 * idempotent (the flash-sale reserve: a replay could reserve a second unit) declares
 * `retryPolicy: { enabled: true, onlyNeverRan: true }` and is retried only for errors that
 * prove it never ran. A timeout, or a request rejected because its node vanished, may have
 * run (only the reply was lost), so those reach the buyer as a retryable 503 instead.
 */
export function retryable(this: { onlyNeverRan?: boolean } | undefined, err: any): boolean {
	if (!err) return false;
	if (this?.onlyNeverRan) return NEVER_RAN.has(err.name);
	return err.retryable === true;
}

/** The broker options for a GoMall node, all taken from the node's configuration. */
export function brokerOptions(cfg: Config, logging: GomallLogging, extra: Partial<BrokerOptions> = {}): BrokerOptions {
	const b = cfg.broker;
	return {
		namespace: cfg.namespace,
		nodeID: cfg.node_id || `${os.hostname()}-${process.pid}`,
		logger: logging.moleculerLogger as unknown as BrokerOptions["logger"],
		logLevel: cfg.log.level,
		transporter: cfg.nats.url ? { type: "NATS", options: { url: cfg.nats.url, maxReconnectAttempts: -1 } } : undefined,
		cacher: new ClusterSafeRedisCacher({ ...cacherRedisOptions(cfg.redis), ttl: cfg.cache.product_ttl, monitor: false }),
		serializer: "JSON",
		requestTimeout: b.request_timeout,
		// A SIGKILLed node says no goodbye: its peers drop it from their registries only when
		// its heartbeats stop, and the check runs every heartbeat_timeout seconds, so a dead
		// node is gone after heartbeat_timeout to 2 x heartbeat_timeout (Moleculer's defaults,
		// 10 s / 30 s, left calls going to a dead stock node for up to a minute). Until then
		// calls sent to it fail as 503s; once it is dropped they go to the live nodes only.
		heartbeatInterval: b.heartbeat_interval,
		heartbeatTimeout: b.heartbeat_timeout,
		retryPolicy: { enabled: b.retry.enabled, retries: b.retry.retries, delay: b.retry.delay, maxDelay: b.retry.max_delay, factor: 2, check: retryable },
		circuitBreaker: {
			enabled: b.circuit_breaker.enabled,
			threshold: b.circuit_breaker.threshold,
			minRequestCount: b.circuit_breaker.min_request_count,
			windowTime: b.circuit_breaker.window_time,
			halfOpenTime: b.circuit_breaker.half_open_time,
			// Business rejections (4xx) say nothing about the health of the callee.
			check: (err: any) => !(err && err.code >= 400 && err.code < 500)
		},
		bulkhead: { enabled: b.bulkhead.enabled, concurrency: b.bulkhead.concurrency, maxQueueSize: b.bulkhead.max_queue_size },
		// In-flight contexts finish before a service stops (graceful shutdown).
		tracking: { enabled: true, shutdownTimeout: cfg.shutdown.timeout },
		registry: { strategy: "RoundRobin", preferLocal: true },
		validator: true,
		metrics: {
			enabled: true,
			// No client-side quantiles: for them Moleculer keeps every sample of the last 60 s
			// (every request's time, at 20k req/s over a million numbers) and sorts them all on the
			// event loop at each scrape, which the bench measured at 120-200 ms per scrape, with a
			// p99 of 76-114 ms in the runs a scrape fell in. The request and event histograms keep
			// their buckets, from which Prometheus computes quantiles across every node
			// (histogram_quantile); the cacher's timings keep their sum and count.
			defaultQuantiles: null as unknown as number[],
			reporter: [new GatewayPrometheusReporter(cfg.metrics.port > 0 ? ({ listen: true, port: cfg.metrics.port, host: "0.0.0.0", path: "/metrics" } as object) : {}) as any]
		},
		tracing: {
			enabled: cfg.tracing.enabled,
			exporter: cfg.tracing.otlp_endpoint ? [new OtlpTraceExporter({ endpoint: cfg.tracing.otlp_endpoint, serviceName: cfg.tracing.service_name }) as any] : [],
			// Moleculer records every param by default; passwords must never reach a collector.
			tags: {
				action: actionSpanTags,
				event: { params: ["product_id", "order_no", "activity_id"] }
			}
		},
		// Request ids double as trace ids: 32 hex digits, as W3C and OTLP expect.
		uidGenerator: idGenerator(),
		skipProcessEventRegistration: true,
		...extra
	};
}
