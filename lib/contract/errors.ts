import { Errors } from "moleculer";
import { Codes, CodeKey } from "./codes";

/**
 * A business error: a MoleculerClientError whose `type` is the code key. It survives the trip
 * between nodes (name, code, type and data are serialized) and the gateway turns it into the
 * envelope. Use for ordinary request paths; hot-path rejections use `rejection()` instead.
 */
export function bizError(key: CodeKey, data?: unknown, message?: string): Errors.MoleculerClientError {
	const def = Codes[key];
	return new Errors.MoleculerClientError(message ?? def.message, def.http, key, data);
}

/**
 * A rejection returned (not thrown) by hot-path actions such as the flash sale: creating an
 * Error captures a stack trace, which costs more than the whole rejection should. The gateway
 * renders `{ $rejected: key }` exactly as it renders `bizError(key)`.
 */
export interface Rejection {
	readonly $rejected: CodeKey;
}

const rejections = new Map<CodeKey, Rejection>();

export function rejection(key: CodeKey): Rejection {
	let r = rejections.get(key);
	if (!r) {
		r = Object.freeze({ $rejected: key });
		rejections.set(key, r);
	}
	return r;
}

export function isRejection(value: unknown): value is Rejection {
	return typeof value === "object" && value !== null && typeof (value as Rejection).$rejected === "string";
}
