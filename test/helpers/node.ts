import crypto from "node:crypto";
import amqp from "amqplib";
import Redis, { Cluster } from "ioredis";
import { Config, loadConfig } from "../../config";
import { names } from "../../lib/messaging/topology";
import { clusterOptions, isCluster, masters, RedisClient } from "../../lib/storage/redis";
import { connectAdmin } from "../../lib/storage/migrate";
import { ALL_SERVICES, GomallNode, startNode } from "../../bootstrap/node";

export const ADMIN = { username: "root_admin", password: "admin-password-1" };

/** A namespace and database of the test's own, so a running dev instance is untouched. */
export function testConfig(overrides: Record<string, any> = {}): Config {
	const id = crypto.randomBytes(4).toString("hex");
	return loadConfig({
		env: "test",
		overrides: deepMerge(
			{
				namespace: `t${id}`,
				node_id: `test-${id}`,
				db: { name: `gomall_t_${id}` },
				http: { port: 0, host: "127.0.0.1" },
				admin: ADMIN
			},
			overrides
		)
	});
}

function deepMerge(a: Record<string, any>, b: Record<string, any>): Record<string, any> {
	const out = { ...a };
	for (const [k, v] of Object.entries(b))
		out[k] = v && typeof v === "object" && !Array.isArray(v) && typeof out[k] === "object" ? deepMerge(out[k], v) : v;
	return out;
}

export interface TestMall {
	node: GomallNode;
	cfg: Config;
	baseUrl: string;
	http: HttpClient;
	stop(): Promise<void>;
}

/** Starts a whole mall on one node (real MariaDB, Redis, RabbitMQ, NATS) and an HTTP client for it. */
export function startMall(
	overrides: Record<string, any> = {},
	services: readonly string[] = ALL_SERVICES
): Promise<TestMall> {
	return startMallWith(testConfig(overrides), services);
}

/** The same with a given configuration: a mall started again on the namespace of an earlier one. */
export async function startMallWith(cfg: Config, services: readonly string[] = ALL_SERVICES): Promise<TestMall> {
	const node = await startNode(cfg, services);
	const api = node.broker.getLocalService("api") as any;
	const baseUrl = api ? `http://127.0.0.1:${api.port()}` : "";
	return {
		node,
		cfg,
		baseUrl,
		http: new HttpClient(baseUrl),
		async stop() {
			await node.shutdown();
			await dropDatabase(cfg);
			await cleanupNamespace(cfg);
		}
	};
}

export async function dropDatabase(cfg: Config): Promise<void> {
	const conn = await connectAdmin(cfg.db);
	try {
		await conn.query(`DROP DATABASE IF EXISTS \`${cfg.db.name}\``);
	} finally {
		await conn.end();
	}
}

export interface HttpResult<T = any> {
	status: number;
	body: { code: number; message: string; data: T; trace_id: string | null } & Record<string, any>;
	headers: Headers;
}

export class HttpClient {
	constructor(readonly baseUrl: string) {}

	async request<T = any>(
		method: string,
		path: string,
		opts: { body?: unknown; token?: string; raw?: string; headers?: Record<string, string> } = {}
	): Promise<HttpResult<T>> {
		const headers: Record<string, string> = { ...opts.headers };
		if (opts.token) headers.authorization = `Bearer ${opts.token}`;
		let body: string | undefined;
		if (opts.raw !== undefined) body = opts.raw;
		else if (opts.body !== undefined) body = JSON.stringify(opts.body);
		if (body !== undefined && !headers["content-type"]) headers["content-type"] = "application/json";
		const res = await fetch(this.baseUrl + path, { method, headers, body });
		const text = await res.text();
		let parsed: any;
		try {
			parsed = text ? JSON.parse(text) : null;
		} catch {
			parsed = { text };
		}
		return { status: res.status, body: parsed, headers: res.headers };
	}

	get<T = any>(path: string, token?: string) {
		return this.request<T>("GET", path, { token });
	}
	post<T = any>(path: string, body?: unknown, token?: string) {
		return this.request<T>("POST", path, { body, token });
	}
	put<T = any>(path: string, body?: unknown, token?: string) {
		return this.request<T>("PUT", path, { body, token });
	}
	del<T = any>(path: string, body?: unknown, token?: string) {
		return this.request<T>("DELETE", path, { body, token });
	}

	/** Registers a fresh user and returns its token and id. */
	async newUser(prefix = "u"): Promise<{ token: string; id: number; username: string }> {
		const username = `${prefix}_${crypto.randomBytes(5).toString("hex")}`;
		const r = await this.post("/api/user/register", { username, password: "password-123" });
		if (r.status !== 200) throw new Error(`register failed: ${JSON.stringify(r.body)}`);
		return { token: r.body.data.token, id: r.body.data.user.id, username };
	}

	async adminToken(): Promise<string> {
		const r = await this.post("/api/user/login", ADMIN);
		if (r.status !== 200) throw new Error(`admin login failed: ${JSON.stringify(r.body)}`);
		return r.body.data.token;
	}
}

/**
 * Removes everything the nodes of a clusterEnv() (test/helpers/proc.ts) left behind: the
 * database, the RabbitMQ queues, the Redis keys. Durable quorum queues left by every run pile
 * up in the broker until it stops answering.
 */
export async function removeClusterEnv(env: Record<string, string>): Promise<void> {
	const cfg = loadConfig({
		env: "test",
		overrides: { namespace: env.GOMALL_NAMESPACE, db: { name: env.GOMALL_DB_NAME } }
	});
	await dropDatabase(cfg);
	await cleanupNamespace(cfg);
}

/** A client of the mall's Redis (or Redis Cluster) without the key prefix: it sees every key. */
export function plainRedis(cfg: Config): RedisClient {
	if (!cfg.redis.cluster_nodes.length) return new Redis(cfg.redis.url);
	const c = clusterOptions(cfg.redis, {});
	return new Cluster(c.nodes, c.options);
}

/** Deletes what a test namespace left in RabbitMQ and Redis (queues are durable, keys live on). */
export async function cleanupNamespace(cfg: Config): Promise<void> {
	const conn = await amqp.connect(cfg.amqp.url);
	try {
		const ch = await conn.createChannel();
		ch.on("error", () => undefined);
		const n = names(cfg.namespace);
		const retries = [n.closeQueue, n.seckillQueue].flatMap(q =>
			cfg.amqp.retry_delays_ms.map(ms => n.retryQueue(q, ms))
		);
		for (const q of [
			n.closeQueue,
			n.closeDlq,
			n.seckillQueue,
			n.seckillDlq,
			n.payTimeoutQueue(Math.round(cfg.order.pay_timeout * 1000)),
			...retries
		])
			await ch.deleteQueue(q);
		for (const x of [n.orderExchange, n.deadLetterExchange]) await ch.deleteExchange(x);
		await ch.close();
	} finally {
		await conn.close();
	}
	// No key prefix: the cacher's keys are not under the mall's prefix. On a cluster every
	// master is scanned, and keys are deleted one by one (they live in different slots).
	const redis = plainRedis(cfg);
	try {
		if (isCluster(redis)) await new Promise<void>(resolve => redis.once("ready", resolve));
		for (const node of masters(redis)) {
			for (const pattern of [`gomall:${cfg.namespace}:*`, `MOL-${cfg.namespace}-*`]) {
				let cursor = "0";
				do {
					const [next, keys] = await node.scan(cursor, "MATCH", pattern, "COUNT", 1000);
					for (const key of keys) await node.del(key);
					cursor = next;
				} while (cursor !== "0");
			}
		}
	} finally {
		redis.disconnect();
	}
}
