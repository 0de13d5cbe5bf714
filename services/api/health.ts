import fs from "node:fs";
import path from "node:path";
import { getConfig } from "../../config";
import { PROJECT_ROOT } from "../../config/paths";
import { success } from "../../lib/contract/envelope";
import { redisHealthy } from "../../lib/storage/redis";
import type { ApiThis, Probe, Req, Res } from "./types";

export const VERSION: string = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, "package.json"), "utf8")).version;

/** GET /version: the API's version (the Go version's keys) and this build's. */
const VERSION_INFO = Object.freeze({
	version: "v1",
	api_prefix: "/api",
	recommended_prefix: "/api",
	app_version: VERSION,
	build: getConfig().build || null
});

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
	return Promise.race([
		p,
		new Promise<T>((_, reject) => setTimeout(() => reject(new Error("probe timeout")), ms).unref())
	]);
}

/** NATS' client, which the transit's transporter holds; Moleculer's typings stop at the transporter. */
type NatsTransit = { connected: boolean; tx: { client: { flush(): Promise<void> } } };

/** The routes of the `/` path that say how this node is. */
export const healthAliases = {
	"GET /health"(this: ApiThis, _req: Req, res: Res) {
		this.probeAll().then(components => {
			const status =
				components.database === "down"
					? "unhealthy"
					: Object.values(components).includes("down")
						? "degraded"
						: "healthy";
			this.sendJson(res, status === "unhealthy" ? 503 : 200, { status, components });
		});
	},
	"GET /version"(this: ApiThis, _req: Req, res: Res) {
		const traceId = this.broker.generateUid();
		this.sendJson(res, 200, success(VERSION_INFO, traceId), traceId);
	},
	"GET /ready"(this: ApiThis, _req: Req, res: Res) {
		const connected = !this.broker.transit || this.broker.transit.connected;
		const status = this.draining ? "draining" : this.ready && connected ? "ready" : "starting";
		this.sendJson(res, status === "ready" ? 200 : 503, { status });
	}
};

export const healthMethods = {
	async probeAll(this: ApiThis): Promise<Record<string, Probe>> {
		const probe = (p: Promise<unknown>): Promise<Probe> =>
			withTimeout(p, 1500).then(
				ok => (ok === false ? "down" : "up"),
				() => "down"
			);
		const transit = this.broker.transit as unknown as NatsTransit | undefined;
		const [database, redis, rabbitmq, nats] = await Promise.all([
			probe(this.dbPool.query("SELECT 1")),
			probe(redisHealthy(this.redis)),
			probe(this.amqp.probe()),
			transit
				? probe(transit.connected ? transit.tx.client.flush() : Promise.resolve(false))
				: Promise.resolve<Probe>("disabled")
		]);
		return { database, redis, rabbitmq, nats };
	}
} satisfies Partial<ApiThis>;
