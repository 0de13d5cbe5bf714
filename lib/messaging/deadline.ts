import type { Context } from "moleculer";

/**
 * How long the caller of this context still waits for its answer, in ms: its timeout less
 * what has passed since this node took the request (Moleculer's timeout middleware stamps
 * `startHrTime` on arrival, before the bulkhead queue). Infinity when the call has no timeout.
 */
export function msLeft(ctx: Context): number {
	const timeout = ctx.options.timeout ?? 0;
	if (!(timeout > 0) || !ctx.startHrTime) return Infinity;
	const [s, ns] = process.hrtime(ctx.startHrTime);
	return timeout - (s * 1e3 + ns / 1e6);
}
