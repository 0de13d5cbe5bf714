import { TracerExporters } from "moleculer";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";

export interface OtlpExporterOptions {
	/** OTLP/HTTP traces endpoint, e.g. http://jaeger:4318/v1/traces */
	endpoint: string;
	serviceName: string;
	flushIntervalMs?: number;
	maxBatch?: number;
}

const SPAN_KIND = { INTERNAL: 0, SERVER: 1, CLIENT: 2, CONSUMER: 4 } as const;
const STATUS = { UNSET: 0, OK: 1, ERROR: 2 } as const;

/**
 * Moleculer ids are 32 hex digits (lib/ids.ts: a per-process prefix and a counter); OTLP span
 * ids are 16. Folding the halves together keeps them unique within a process (the counter) and
 * across processes (the prefix).
 */
const spanId = (id: string) => {
	const hex = id.replace(/-/g, "").padEnd(32, "0");
	return (BigInt(`0x${hex.slice(0, 16)}`) ^ BigInt(`0x${hex.slice(16, 32)}`)).toString(16).padStart(16, "0");
};
const traceId = (id: string) => id.replace(/-/g, "").slice(0, 32).padEnd(32, "0");

function hrTime(ms: number): [number, number] {
	const seconds = Math.floor(ms / 1000);
	return [seconds, Math.round((ms - seconds * 1000) * 1e6)];
}

/** The attributes GoMall promises on spans, lifted out of Moleculer's nested tags. */
const PROMOTED: [string, string][] = [
	["meta.user.id", "user_id"],
	["params.product_id", "product_id"],
	["params.order_no", "order_no"],
	["response.order_no", "order_no"]
];

function flatten(
	obj: unknown,
	prefix = "",
	out: Record<string, string | number | boolean> = {}
): Record<string, string | number | boolean> {
	if (obj === null || obj === undefined) return out;
	if (typeof obj !== "object") {
		if (prefix)
			out[prefix] = typeof obj === "string" || typeof obj === "number" || typeof obj === "boolean" ? obj : String(obj);
		return out;
	}
	for (const [k, v] of Object.entries(obj as Record<string, unknown>)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
	return out;
}

/**
 * A Moleculer tracing exporter that hands finished spans, in batches, to the OpenTelemetry
 * OTLP/HTTP exporter. Moleculer already propagates trace and parent ids across nodes, so a
 * request that crosses nodes arrives at the collector as one trace with its parent links.
 */
export class OtlpTraceExporter extends TracerExporters.Base {
	private queue: any[] = [];
	private timer: NodeJS.Timeout | null = null;
	private exporter!: OTLPTraceExporter;
	private resource!: ReturnType<typeof resourceFromAttributes>;
	private warnedAt = 0;

	constructor(private readonly options: OtlpExporterOptions) {
		super({});
	}

	override init(tracer: any): void {
		super.init(tracer);
		const broker = (this as any).broker;
		this.exporter = new OTLPTraceExporter({ url: this.options.endpoint, timeoutMillis: 5000 });
		this.resource = resourceFromAttributes({
			"service.name": this.options.serviceName,
			"service.namespace": broker.namespace || "default",
			"service.instance.id": broker.nodeID
		});
		this.timer = setInterval(() => this.flush(), this.options.flushIntervalMs ?? 1000);
		this.timer.unref();
	}

	override spanFinished(span: any): void {
		this.queue.push(this.toReadableSpan(span));
		if (this.queue.length >= (this.options.maxBatch ?? 512)) this.flush();
	}

	private toReadableSpan(span: any) {
		const tags = flatten(span.tags);
		const attributes: Record<string, string | number | boolean> = {};
		for (const [key, value] of Object.entries(tags)) {
			// Params other than the whitelisted ones never get here (see moleculer.config tags).
			attributes[`moleculer.${key}`] = value;
		}
		for (const [from, to] of PROMOTED) if (tags[from] !== undefined) attributes[to] = tags[from];
		attributes["moleculer.span_type"] = span.type;
		if (span.service?.fullName) attributes["moleculer.service"] = span.service.fullName;
		const ctx = { traceId: traceId(span.traceID), spanId: spanId(span.id), traceFlags: 1 };
		const error = span.error && span.error !== true ? span.error : null;
		return {
			name: span.name,
			kind:
				span.type === "action" && !span.parentID
					? SPAN_KIND.SERVER
					: span.type === "event"
						? SPAN_KIND.CONSUMER
						: SPAN_KIND.INTERNAL,
			spanContext: () => ctx,
			parentSpanContext: span.parentID
				? { traceId: ctx.traceId, spanId: spanId(span.parentID), traceFlags: 1, isRemote: false }
				: undefined,
			startTime: hrTime(span.startTime),
			endTime: hrTime(span.finishTime),
			duration: hrTime(span.duration),
			status: span.error
				? { code: STATUS.ERROR, message: error ? `${error.name}: ${error.message}` : "error" }
				: { code: STATUS.UNSET },
			attributes,
			links: [],
			events: [],
			ended: true,
			droppedAttributesCount: 0,
			droppedEventsCount: 0,
			droppedLinksCount: 0,
			resource: this.resource,
			instrumentationScope: { name: "gomall-moleculer" }
		};
	}

	flush(): void {
		const batch = this.queue.splice(0);
		if (!batch.length) return;
		this.exporter.export(batch as any, result => {
			if (result.code !== 0 && Date.now() - this.warnedAt > 10000) {
				this.warnedAt = Date.now();
				(this as any).logger.warn(
					`OTLP export to ${this.options.endpoint} failed: ${result.error?.message ?? "unknown error"}`
				);
			}
		});
	}

	override async stop(): Promise<void> {
		if (this.timer) clearInterval(this.timer);
		this.flush();
		await this.exporter?.forceFlush().catch(() => undefined);
		await this.exporter?.shutdown().catch(() => undefined);
	}
}
