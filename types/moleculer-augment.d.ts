import "moleculer";

declare module "moleculer" {
	interface ActionSchema {
		/** Who may call this action through the gateway; enforced by the api actor. */
		auth?: "user" | "admin";
	}
}
