import { Codes, CodeDef, isCodeKey } from "./codes";
import { isRejection } from "./errors";

/** The body of every /api response (SPEC "REST contract"). */
export interface Envelope<T = unknown> {
	code: number;
	message: string;
	data: T | null;
	trace_id: string | null;
}

export interface RenderedError {
	status: number;
	body: Envelope;
	/** Seconds, for a 429. */
	retryAfter?: number;
	/** True when the error is ours to fix (5xx not caused by load), so worth one log line. */
	unexpected: boolean;
}

export function success<T>(data: T, traceId: string | null): Envelope<T> {
	return { code: 0, message: "success", data, trace_id: traceId };
}

function fromDef(def: CodeDef, traceId: string | null, data: unknown = null, message?: string): Envelope {
	return { code: def.biz, message: message ?? def.message, data, trace_id: traceId };
}

/**
 * The envelope and status of an action's result: its data, or a rejection it returned
 * (lib/contract/errors), rendered exactly as renderError renders `bizError(key)`.
 */
export function resultEnvelope(data: unknown, traceId: string | null): { status: number; body: Envelope } {
	if (isRejection(data)) {
		const def = Codes[data.$rejected];
		return { status: def.http, body: fromDef(def, traceId) };
	}
	return { status: 200, body: success(data ?? null, traceId) };
}

interface ErrorLike {
	name?: string;
	message?: string;
	code?: unknown;
	status?: unknown;
	statusCode?: unknown;
	type?: unknown;
	data?: any;
}

/** Validation failures list the bad fields, and nothing of the validator's internals. */
function validationFields(data: unknown): { field: string; message: string }[] {
	if (!Array.isArray(data)) return [];
	return data.map((d: any) => ({
		field: String(d.field ?? "").replace(/^params\./, ""),
		message: String(d.message ?? "invalid")
	}));
}

/**
 * Maps any error that reaches the gateway to an HTTP status and the envelope. This is the one
 * place where Moleculer, moleculer-web and body-parser errors become business codes; anything
 * not recognised is a 500 whose message reveals nothing.
 */
export function renderError(err: unknown, traceId: string | null): RenderedError {
	const e = (err ?? {}) as ErrorLike;
	const type = typeof e.type === "string" ? e.type : "";

	switch (e.name) {
		case "ValidationError":
			return {
				status: 400,
				body: fromDef(Codes.BAD_REQUEST, traceId, validationFields(e.data), "validation failed"),
				unexpected: false
			};
		case "NotFoundError":
			return { status: 404, body: fromDef(Codes.NOT_FOUND, traceId, null, "route not found"), unexpected: false };
		case "UnAuthorizedError":
			return { status: 401, body: fromDef(Codes.UNAUTHORIZED, traceId), unexpected: false };
		case "ForbiddenError":
			return { status: 403, body: fromDef(Codes.FORBIDDEN, traceId), unexpected: false };
		case "BadRequestError":
		case "InvalidRequestBodyError":
			return {
				status: 400,
				body: fromDef(Codes.BAD_REQUEST, traceId, null, "malformed request body"),
				unexpected: false
			};
		case "PayloadTooLarge":
			return { status: 413, body: fromDef(Codes.PAYLOAD_TOO_LARGE, traceId), unexpected: false };
		case "RateLimitExceeded":
			return { status: 429, body: fromDef(Codes.TOO_MANY_REQUESTS, traceId), retryAfter: 1, unexpected: false };
		case "QueueIsFullError":
		case "ServiceNotFoundError":
		case "ServiceNotAvailableError":
		case "ServiceUnavailableError":
		case "RequestTimeoutError":
		case "RequestSkippedError":
		case "RequestRejectedError":
		case "BrokerDisconnectedError":
		case "CircuitBreakerOpenError":
			return { status: 503, body: fromDef(Codes.UNAVAILABLE, traceId), unexpected: false };
	}

	// Our business errors: the code key travels as the error type (lib/errors.ts).
	if (isCodeKey(type)) {
		const def = Codes[type];
		return {
			status: def.http,
			body: fromDef(def, traceId, e.data ?? null, e.message || def.message),
			unexpected: false
		};
	}

	// Any other error Moleculer marks retryable is about the cluster, not the request.
	if ((e as { retryable?: unknown }).retryable === true)
		return { status: 503, body: fromDef(Codes.UNAVAILABLE, traceId), unexpected: false };

	// body-parser errors carry an HTTP status and a type such as entity.parse.failed.
	const status = Number(e.status ?? e.statusCode ?? e.code);
	if (
		(typeof e.type === "string" && e.type.startsWith("entity.")) ||
		e.type === "encoding.unsupported" ||
		e.type === "charset.unsupported"
	) {
		if (status === 413) return { status: 413, body: fromDef(Codes.PAYLOAD_TOO_LARGE, traceId), unexpected: false };
		return {
			status: 400,
			body: fromDef(
				Codes.BAD_REQUEST,
				traceId,
				null,
				e.type === "entity.parse.failed" ? "malformed JSON body" : "bad request body"
			),
			unexpected: false
		};
	}

	return { status: 500, body: fromDef(Codes.INTERNAL, traceId), unexpected: true };
}
