import os from "node:os";
import type { BrokerOptions } from "moleculer";
import type { Config } from "./config";
import type { GomallLogging } from "./lib/observability/logger";
import { idGenerator } from "./lib/observability/ids";
import { ClusterSafeRedisCacher } from "./lib/storage/cacher";
import { cacherRedisOptions } from "./lib/storage/redis";
import { OtlpTraceExporter } from "./lib/observability/otlp-exporter";
import { PROMETHEUS_REPORTER } from "./lib/observability/prometheus-reporter";
import { TurnRequestMetricsMiddleware } from "./lib/observability/request-metrics";
import { actionSpanTags } from "./lib/observability/span-tags";
import { retryable } from "./lib/messaging/retry";

/** Moleculer's internal middlewares in its own order, with TurnRequestMetricsMiddleware for "Metrics". */
export const BROKER_MIDDLEWARES = [
	"ActionHook",
	"Validator",
	"Bulkhead",
	"Cacher",
	"ContextTracker",
	"CircuitBreaker",
	"Timeout",
	"Retry",
	"Fallback",
	"ErrorHandler",
	"Tracing",
	TurnRequestMetricsMiddleware,
	"Debounce",
	"Throttle"
] as unknown as BrokerOptions["middlewares"];

/** The broker options for a GoMall node, all taken from the node's configuration. */
export function brokerOptions(cfg: Config, logging: GomallLogging, extra: Partial<BrokerOptions> = {}): BrokerOptions {
	const b = cfg.broker;
	return {
		namespace: cfg.namespace,
		nodeID: cfg.node_id || `${os.hostname()}-${process.pid}`,
		logger: logging.moleculerLogger as unknown as BrokerOptions["logger"],
		logLevel: cfg.log.level,
		transporter: cfg.nats.url ? { type: "NATS", options: { url: cfg.nats.url, maxReconnectAttempts: -1 } } : undefined,
		cacher: new ClusterSafeRedisCacher({
			...cacherRedisOptions(cfg.redis),
			ttl: cfg.cache.product_ttl,
			monitor: false
		}),
		serializer: "JSON",
		requestTimeout: b.request_timeout,
		// A SIGKILLed node says no goodbye: its peers drop it from their registries only when
		// its heartbeats stop, and the check runs every heartbeat_timeout seconds, so a dead
		// node is gone after heartbeat_timeout to 2 x heartbeat_timeout (Moleculer's defaults,
		// 10 s / 30 s, left calls going to a dead stock node for up to a minute). Until then
		// calls sent to it fail as 503s; once it is dropped they go to the live nodes only.
		heartbeatInterval: b.heartbeat_interval,
		heartbeatTimeout: b.heartbeat_timeout,
		retryPolicy: {
			enabled: b.retry.enabled,
			retries: b.retry.retries,
			delay: b.retry.delay,
			maxDelay: b.retry.max_delay,
			factor: 2,
			check: retryable
		},
		circuitBreaker: {
			enabled: b.circuit_breaker.enabled,
			threshold: b.circuit_breaker.threshold,
			minRequestCount: b.circuit_breaker.min_request_count,
			windowTime: b.circuit_breaker.window_time,
			halfOpenTime: b.circuit_breaker.half_open_time,
			// Business rejections (4xx) say nothing about the health of the callee.
			check: (err: any) => !(err && err.code >= 400 && err.code < 500)
		},
		bulkhead: {
			enabled: b.bulkhead.enabled,
			concurrency: b.bulkhead.concurrency,
			maxQueueSize: b.bulkhead.max_queue_size
		},
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
			// A registered type (lib/observability/prometheus-reporter); Moleculer's typings list only its own.
			reporter: [
				{
					type: PROMETHEUS_REPORTER,
					options:
						cfg.metrics.port > 0 ? { listen: true, port: cfg.metrics.port, host: "0.0.0.0", path: "/metrics" } : {}
				}
			] as unknown as "Prometheus"[]
		},
		tracing: {
			enabled: cfg.tracing.enabled,
			exporter: cfg.tracing.otlp_endpoint
				? [new OtlpTraceExporter({ endpoint: cfg.tracing.otlp_endpoint, serviceName: cfg.tracing.service_name }) as any]
				: [],
			// Moleculer records every param by default; passwords must never reach a collector.
			tags: {
				action: actionSpanTags,
				event: { params: ["product_id", "order_no", "activity_id"] }
			}
		},
		// Moleculer's own middlewares, in its own order, but its Metrics middleware's action
		// metrics fed once per turn (lib/observability/request-metrics.ts).
		internalMiddlewares: false,
		middlewares: BROKER_MIDDLEWARES,
		// Request ids double as trace ids: 32 hex digits, as W3C and OTLP expect.
		uidGenerator: idGenerator(),
		skipProcessEventRegistration: true,
		...extra
	};
}
