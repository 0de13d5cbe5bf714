import crypto from "node:crypto";
import os from "node:os";
import type { BrokerOptions } from "moleculer";
import { MetricReporters } from "moleculer";
import type { Config } from "./config";
import type { GomallLogging } from "./lib/logger";

/**
 * Moleculer's Prometheus reporter, without the HTTP server it would open on its own port:
 * the gateway serves `generatePrometheusResponse()` at /metrics on the API port (SPEC).
 */
export class GatewayPrometheusReporter extends MetricReporters.Prometheus {
	override init(registry: any): void {
		// Skip Prometheus.init (it listens on :3030) but keep the base reporter's wiring.
		(MetricReporters.Base.prototype as any).init.call(this, registry);
	}

	override stop(): Promise<void> {
		return Promise.resolve();
	}
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
		cacher: { type: "Redis", options: { redis: cfg.redis.url as any, ttl: cfg.cache.product_ttl, monitor: false } },
		serializer: "JSON",
		requestTimeout: b.request_timeout,
		retryPolicy: { enabled: b.retry.enabled, retries: b.retry.retries, delay: b.retry.delay, maxDelay: b.retry.max_delay, factor: 2 },
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
		metrics: { enabled: true, reporter: [new GatewayPrometheusReporter({}) as any] },
		tracing: { enabled: cfg.tracing.enabled, exporter: [], tags: { action: { meta: ["user.id"] } } },
		// Request ids double as trace ids: 32 hex digits, as W3C and OTLP expect.
		uidGenerator: () => crypto.randomBytes(16).toString("hex"),
		skipProcessEventRegistration: true,
		...extra
	};
}
