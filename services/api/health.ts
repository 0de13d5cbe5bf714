import fs from "node:fs";
import path from "node:path";
import { getConfig } from "../../config";
import { PROJECT_ROOT } from "../../config/paths";
import { success } from "../../lib/contract/envelope";
import { callEachNode } from "../../lib/messaging/each-node";
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

/** How old a probe's result /health may answer with, from the probe's start. */
const HEALTH_MAX_AGE_MS = 1000;

/** NATS' client, which the transit's transporter holds; Moleculer's typings stop at the transporter. */
type NatsTransit = { connected: boolean; tx: { client: { flush(): Promise<void> } } };

/** The routes of the `/` path that say how this node is. */
export const healthAliases = {
	"GET /health"(this: ApiThis, _req: Req, res: Res) {
		this.health().then(
			components => {
				const status =
					components.database === "down"
						? "unhealthy"
						: Object.values(components).includes("down")
							? "degraded"
							: "healthy";
				this.sendJson(res, status === "unhealthy" ? 503 : 200, { status, components });
			},
			() => this.sendJson(res, 503, { status: "unhealthy", components: {} })
		);
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
	/**
	 * What /health answers: a probe's result at most HEALTH_MAX_AGE_MS old (from its start), and
	 * one probe in flight at a time, shared by every caller meanwhile. So a flood of /health
	 * costs the database, Redis, RabbitMQ and the order nodes about one probe a second.
	 */
	health(this: ApiThis): Promise<Record<string, Probe>> {
		const last = this.healthLast;
		if (last && performance.now() - last.at < HEALTH_MAX_AGE_MS) return Promise.resolve(last.components);
		if (!this.healthProbe) {
			const at = performance.now();
			this.healthProbe = this.probeAll()
				.then(components => {
					this.healthLast = { at, components };
					return components;
				})
				.finally(() => (this.healthProbe = null));
		}
		return this.healthProbe;
	},

	async probeAll(this: ApiThis): Promise<Record<string, Probe>> {
		const probe = (p: Promise<unknown>): Promise<Probe> =>
			withTimeout(p, 1500).then(
				ok => (ok === false ? "down" : "up"),
				() => "down"
			);
		const transit = this.broker.transit as unknown as NatsTransit | undefined;
		const [database, redis, rabbitmq, nats, consumers] = await Promise.all([
			probe(this.dbPool.query("SELECT 1")),
			probe(redisHealthy(this.redis)),
			probe(this.amqpLiveness.check(1000)),
			transit
				? probe(transit.connected ? transit.tx.client.flush() : Promise.resolve(false))
				: Promise.resolve<Probe>("disabled"),
			this.probeConsumers()
		]);
		return { database, redis, rabbitmq, nats, consumers };
	},

	/**
	 * The order actor's queue consumers on every node that runs it: up when each one consumes,
	 * down when one does not or a node does not answer, disabled when no order actor is known.
	 */
	async probeConsumers(this: ApiThis): Promise<Probe> {
		const answers = await withTimeout(
			callEachNode<{ queue: string; consuming: boolean }[]>(this.broker, "order", "order.consumers", {}, 1000),
			1500
		).catch(() => null);
		if (!answers) return "down";
		if (!answers.length) return "disabled";
		return answers.every(a => Array.isArray(a.result) && a.result.every(c => c.consuming)) ? "up" : "down";
	}
} satisfies Partial<ApiThis>;
