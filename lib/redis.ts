import fs from "node:fs";
import path from "node:path";
import Redis, { RedisOptions } from "ioredis";
import { LUA_DIR } from "./paths";

/** Every GoMall key starts with this, so two deployments (namespaces) can share one Redis. */
export function redisKeyPrefix(namespace: string): string {
	return namespace ? `gomall:${namespace}:` : "gomall:";
}

export interface LuaCommand {
	/** file in lua/ */
	file: string;
	numberOfKeys: number;
}

/**
 * An ioredis client whose keys carry the namespace prefix and whose Lua scripts are defined
 * once with defineCommand (ioredis runs them by EVALSHA and reloads on NOSCRIPT).
 */
export function createRedis(url: string, namespace: string, commands: Record<string, LuaCommand> = {}, name = "gomall", options: RedisOptions = {}): Redis {
	const client = new Redis(url, {
		keyPrefix: redisKeyPrefix(namespace),
		connectionName: name,
		maxRetriesPerRequest: 2,
		enableOfflineQueue: true,
		lazyConnect: false,
		...options
	});
	for (const [cmd, def] of Object.entries(commands)) {
		client.defineCommand(cmd, { numberOfKeys: def.numberOfKeys, lua: fs.readFileSync(path.join(LUA_DIR, def.file), "utf8") });
	}
	// ioredis emits "error" on every failed reconnect; the owner decides what to log.
	client.on("error", () => undefined);
	return client;
}
