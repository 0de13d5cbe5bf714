import type { ActionSchema } from "moleculer";

/**
 * Errors raised before a request reached any handler of the callee: no endpoint to send it
 * to, the callee's bulkhead queue full (refused before the handler ran), the transporter
 * down when publishing. Replaying such a request cannot run the action twice.
 */
const NEVER_RAN = new Set([
	"ServiceNotAvailableError",
	"ServiceNotFoundError",
	"QueueIsFullError",
	"BrokerDisconnectedError"
]);

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

/**
 * The retryPolicy of an action a replay could do twice (a reservation, a payment, a delete):
 * retried only after errors proving it never ran. Moleculer's typings know no extra field.
 */
export const NEVER_RAN_ONLY = { onlyNeverRan: true } as unknown as NonNullable<ActionSchema["retryPolicy"]>;
