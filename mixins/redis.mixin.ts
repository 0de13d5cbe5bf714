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
			this.redis = createRedis(c.redis, c.namespace, commands, connectionName);
		},
		async stopped(this: Service & Record<string, any>) {
			await this.redis.quit().catch(() => this.redis.disconnect());
		}
	};
}
