import type { Service, ServiceSchema } from "moleculer";
import { getConfig } from "../config";
import { createRedis, LuaCommand, RedisClient } from "../lib/storage/redis";

export interface RedisThis {
	redis: RedisClient;
}

/** An ioredis client (one Redis or a Redis Cluster, from the config) with the namespace key prefix and the given Lua scripts defined once. */
export function RedisMixin(connectionName: string, commands: Record<string, LuaCommand> = {}): Partial<ServiceSchema> {
	return {
		created(this: Service & Record<string, any>) {
			const c = getConfig();
			// Bounded: a Redis that stops answering fails a call instead of holding it (and the
			// buyer) until the request timeout; the caller treats the outcome as unknown.
			this.redis = createRedis(c.redis, c.namespace, commands, connectionName, {
				commandTimeout: c.redis.command_timeout_ms,
				// A loop turn's commands (the reservations, claims and marks of many buyers) leave in
				// one write, not a socket write each (one Redis only: lib/storage/redis.ts).
				enableAutoPipelining: true
			});
		},
		async stopped(this: Service & Record<string, any>) {
			await this.redis.quit().catch(() => this.redis.disconnect());
		}
	};
}
