import "moleculer";

declare module "moleculer" {
	interface ActionSchema {
		/** Who may call this action through the gateway; enforced by the api actor. */
		auth?: "user" | "admin";
		/** Accepts an Idempotency-Key header (the gateway copies it into ctx.meta.idempotency_key). */
		idempotent?: boolean;
		/** The business codes (lib/contract/codes.ts keys) this action answers besides the general ones, for the OpenAPI document. */
		codes?: string[];
	}
}
