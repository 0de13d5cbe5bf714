import type { Service, ServiceSchema } from "moleculer";
import DbService from "moleculer-db";
import SequelizeAdapter from "moleculer-db-adapter-sequelize";
import type { ModelAttributes, ModelOptions, Model, ModelStatic, Sequelize } from "sequelize";
import { getConfig } from "../config";

export interface ModelDefinition {
	name: string;
	define: ModelAttributes;
	options: ModelOptions;
}

/** What the mixin adds to a service's `this`. */
export interface DbThis {
	adapter: { db: Sequelize; model: ModelStatic<Model> };
	model: ModelStatic<Model>;
	clearCache(): Promise<void>;
}

/**
 * A server-side bound on every statement of a pooled connection: a query stuck behind a lock or
 * a plan gone wrong fails instead of holding its caller (and its pool slot) for ever. MariaDB
 * takes seconds (max_statement_time, every statement); MySQL 8 milliseconds (max_execution_time,
 * SELECTs only; its writes are bounded by innodb_lock_wait_timeout).
 */
function limitStatementTime(connection: unknown, ms: number): Promise<void> {
	if (!ms) return Promise.resolve();
	const conn = connection as { query(sql: string, cb: (err: Error | null) => void): void };
	const run = (sql: string) =>
		new Promise<void>((resolve, reject) => conn.query(sql, err => (err ? reject(err) : resolve())));
	return run(`SET SESSION max_statement_time = ${ms / 1000}`).catch(() =>
		run(`SET SESSION max_execution_time = ${Math.round(ms)}`)
	);
}

/** moleculer-db's generic CRUD actions: each actor publishes its own, validated ones instead. */
const GENERIC_ACTIONS = ["find", "count", "list", "create", "insert", "get", "update", "remove"];

/**
 * moleculer-db over Sequelize/mysql2 for one table. The schema comes from migrations/, so the
 * adapter never calls sync(). moleculer-db supplies connect-with-retry on start, disconnect on
 * stop and clearCache(); transactions use `this.adapter.db` (the Sequelize instance) directly.
 */
export function DbMixin(model: ModelDefinition): Partial<ServiceSchema> {
	const actions: Record<string, false> = {};
	for (const a of GENERIC_ACTIONS) actions[a] = false;
	return {
		mixins: [DbService],
		model,
		actions,
		settings: { idField: "id" },
		// One adapter (one pool) per service instance, made when the instance is: a schema
		// object is shared by every broker that loads it, so the adapter cannot live on it.
		created(this: Service & Record<string, any>) {
			const db = getConfig().db;
			this.adapter = new (SequelizeAdapter as any)(db.name, db.user, db.password, {
				host: db.host,
				port: db.port,
				dialect: "mysql",
				logging: false,
				noSync: true,
				pool: { max: db.pool_max, min: 0, idle: 10000, acquire: 20000 },
				timezone: "+00:00",
				define: { freezeTableName: true },
				hooks: { afterConnect: (connection: unknown) => limitStatementTime(connection, db.statement_timeout_ms) }
			});
			this.adapter.init(this.broker, this);
		}
	} as Partial<ServiceSchema>;
}
