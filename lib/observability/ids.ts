import crypto from "node:crypto";

/**
 * Context, span and trace ids: 32 hex digits, as W3C trace context and OTLP expect. A random
 * 64-bit prefix per process plus a counter: unique across nodes without drawing 16 random
 * bytes for every context (a flash-sale request makes several, and the draw showed in the
 * gateway's profile). Ids are not secrets; nothing grants access by one.
 */
export function idGenerator(): () => string {
	const prefix = crypto.randomBytes(8).toString("hex");
	let n = 0;
	return () => prefix + (++n).toString(16).padStart(16, "0");
}
