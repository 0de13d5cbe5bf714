import fs from "node:fs";
import path from "node:path";
import Redis, { Cluster, ClusterNode, ClusterOptions, RedisOptions } from "ioredis";
import type { RedisConfig } from "../../config";
import { LUA_DIR } from "../../config/paths";

/** One Redis or a Redis Cluster: the mall's code speaks to either through the same commands. */
export type RedisClient = Redis | Cluster;

/** Defined on every client: leases (lib/storage/lease.ts) are taken by several actors. */
const LEASE_COMMANDS: Record<string, LuaCommand> = { leaseOwn: { file: "lease.lua", numberOfKeys: 1 } };

/** Where a client connects: `cluster_nodes` when set, else `url`. */
export type RedisTarget = Pick<RedisConfig, "url" | "cluster_nodes">;

/** Every GoMall key starts with this, so two deployments (namespaces) can share one Redis. */
export function redisKeyPrefix(namespace: string): string {
	return namespace ? `gomall:${namespace}:` : "gomall:";
}

/**
 * A Redis Cluster redirection or refusal (MOVED, ASK, TRYAGAIN, CLUSTERDOWN): the node did not run
 * the command. Every other failure of a command that was sent (a timeout, a connection closed
 * before the answer, even one closed under a pipeline's later command) leaves its outcome unknown.
 */
export const isRedirection = (err: unknown): boolean =>
	/^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN) /.test((err as Error)?.message ?? "");

export interface LuaCommand {
	/** file in lua/ */
	file: string;
	/** absent: as many as the caller says, in the call's first argument */
	numberOfKeys?: number;
}

/** `host:port` or `redis://[user:pass@]host:port` -> the seed node and the options its URL carries. */
export function parseClusterNode(node: string): { node: ClusterNode; options: RedisOptions } {
	const url = new URL(/^rediss?:\/\//.test(node) ? node : `redis://${node}`);
	const options: RedisOptions = {};
	if (url.username) options.username = decodeURIComponent(url.username);
	if (url.password) options.password = decodeURIComponent(url.password);
	if (url.protocol === "rediss:") options.tls = {};
	return { node: { host: url.hostname, port: Number(url.port || 6379) }, options };
}

/**
 * How the Cluster client rides out a failover: a command to a master that died is retried
 * (every 200 ms, up to 16 times) while the cluster promotes its replica and the client
 * refreshes its slot map, so a failover of a few seconds is a wait, not an error.
 */
export function clusterOptions(
	target: RedisTarget,
	redisOptions: RedisOptions,
	overrides: ClusterOptions = {}
): { nodes: ClusterNode[]; options: ClusterOptions } {
	const parsed = target.cluster_nodes.map(parseClusterNode);
	return {
		nodes: parsed.map(p => p.node),
		options: {
			scaleReads: "master",
			retryDelayOnFailover: 200,
			retryDelayOnClusterDown: 200,
			retryDelayOnTryAgain: 200,
			maxRedirections: 16,
			slotsRefreshTimeout: 2000,
			clusterRetryStrategy: times => Math.min(100 * times, 2000),
			...overrides,
			redisOptions: { ...parsed[0]?.options, ...redisOptions }
		}
	};
}

export function isCluster(client: RedisClient): client is Cluster {
	return client instanceof Cluster;
}

/** The masters a client writes to: one Redis, or every master of the cluster. */
export function masters(client: RedisClient): Redis[] {
	return isCluster(client) ? client.nodes("master") : [client];
}

/**
 * An ioredis client (one Redis, or ioredis' Cluster client when `cluster_nodes` is set) whose
 * keys carry the namespace prefix and whose Lua scripts are defined once with defineCommand
 * (ioredis runs them by EVALSHA and falls back to EVAL on NOSCRIPT, on whichever node).
 * On a cluster the scripts are also loaded into every node as it connects, so a replica
 * promoted in a failover serves EVALSHA without that first miss.
 */
export function createRedis(
	target: RedisTarget,
	namespace: string,
	commands: Record<string, LuaCommand> = {},
	name = "gomall",
	options: RedisOptions = {}
): RedisClient {
	const base: RedisOptions = {
		connectionName: name,
		maxRetriesPerRequest: 2,
		enableOfflineQueue: true,
		lazyConnect: false,
		...options
	};
	let client: RedisClient;
	if (target.cluster_nodes.length) {
		// Auto-pipelining stays off on a cluster: ioredis groups an EVALSHA by its first argument
		// (the script's sha, not a key: redis/ioredis#2109) and answers a whole batch's MOVED at
		// once in a failover (#2075). On one Redis it is what batches a loop turn's commands.
		const { enableOfflineQueue, lazyConnect, ...perNode } = base;
		delete perNode.enableAutoPipelining;
		const c = clusterOptions(target, perNode, {
			keyPrefix: redisKeyPrefix(namespace),
			enableOfflineQueue,
			lazyConnect
		});
		client = new Cluster(c.nodes, c.options);
	} else {
		client = new Redis(target.url, { keyPrefix: redisKeyPrefix(namespace), ...base });
	}
	const scripts = Object.entries({ ...commands, ...LEASE_COMMANDS }).map(([cmd, def]) => ({
		cmd,
		numberOfKeys: def.numberOfKeys,
		lua: fs.readFileSync(path.join(LUA_DIR, def.file), "utf8")
	}));
	for (const s of scripts) client.defineCommand(s.cmd, { numberOfKeys: s.numberOfKeys, lua: s.lua });
	if (isCluster(client) && scripts.length) {
		client.on("+node", (node: Redis) => {
			const load = () => Promise.all(scripts.map(s => node.script("LOAD", s.lua))).catch(() => undefined);
			if (node.status === "ready") void load();
			else node.once("ready", load);
		});
	}
	// ioredis emits "error" on every failed reconnect; the owner decides what to log.
	client.on("error", () => undefined);
	return client;
}

/** The server answers, and a cluster says every slot is served (`cluster_state:ok`). */
export async function redisHealthy(client: RedisClient): Promise<boolean> {
	if (!isCluster(client)) return (await client.ping()) === "PONG";
	return String(await client.cluster("INFO")).includes("cluster_state:ok");
}

/** Options for Moleculer's Redis cacher on the same target (it builds its own client). */
export function cacherRedisOptions(target: RedisTarget): Record<string, unknown> {
	if (!target.cluster_nodes.length) return { redis: target.url };
	const c = clusterOptions(target, {});
	return { cluster: { nodes: c.nodes, options: c.options } };
}
