import type { Service, ServiceSchema } from "moleculer";
import type Redis from "ioredis";
import { getConfig } from "../config";
import { createRedis, LuaCommand } from "../lib/redis";

export interface RedisThis {
	redis: Redis;
}

/** An ioredis client with the namespace key prefix and the given Lua scripts defined once. */
export function RedisMixin(connectionName: string, commands: Record<string, LuaCommand> = {}): Partial<ServiceSchema> {
	return {
		created(this: Service & Record<string, any>) {
			const c = getConfig();
			this.redis = createRedis(c.redis.url, c.namespace, commands, connectionName);
		},
		async stopped(this: Service & Record<string, any>) {
			await this.redis.quit().catch(() => this.redis.disconnect());
		}
	};
}
