import path from "node:path";
import { ServiceBroker, ServiceSchema, BrokerOptions } from "moleculer";
import { Config, setConfig } from "../config";
import { brokerOptions } from "../moleculer.config";
import { createLogging, GomallLogging } from "../lib/observability/logger";
import { migrate } from "../lib/storage/migrate";
import { replCommands } from "./repl";

/** Every actor, in start order. One node runs them all unless told otherwise. */
export const ALL_SERVICES = ["user", "product", "cart", "stock", "order", "upload", "api"] as const;
/** Actors that own tables: a node running any of them applies pending migrations first. */
const DB_SERVICES = new Set(["user", "product", "cart", "order", "stock"]);

export function loadServiceSchema(name: string): ServiceSchema {
	if (!(ALL_SERVICES as readonly string[]).includes(name)) {
		throw new Error(`unknown service "${name}"; known: ${ALL_SERVICES.join(", ")}`);
	}
	// Required late: service schemas read the configuration when their module loads.
	// eslint-disable-next-line @typescript-eslint/no-require-imports
	return require(path.join(__dirname, "..", "services", `${name}.service`)).default;
}

export interface GomallNode {
	broker: ServiceBroker;
	logging: GomallLogging;
	config: Config;
	/** Readiness 503, in-flight requests finish, connections close. */
	shutdown(): Promise<void>;
}

/**
 * Builds and starts one node: configuration, migrations (if it owns tables), the broker with
 * the chosen actors. Used by the runner and by the tests, so both start the mall the same way.
 */
export async function startNode(
	cfg: Config,
	services: readonly string[] = ALL_SERVICES,
	extra: Partial<BrokerOptions> = {}
): Promise<GomallNode> {
	setConfig(cfg);
	const logging = createLogging(cfg.log);
	const schemas = services.map(loadServiceSchema);
	if (services.some(s => DB_SERVICES.has(s))) {
		await migrate(cfg.db, msg => logging.root.info(msg));
	}
	const broker = new ServiceBroker({
		...brokerOptions(cfg, logging),
		replOptions: { customCommands: replCommands },
		...extra
	});
	// Every node says who it is on /metrics (gateway nodes) and in $node.metrics (all nodes),
	// so per-node series can be joined to a node and the actors it runs.
	broker.metrics.register({
		name: "gomall_node_info",
		type: "gauge",
		labelNames: ["node_id", "namespace", "services"],
		description: "This node: its nodeID, namespace and actors (always 1)"
	});
	broker.metrics.set("gomall_node_info", 1, {
		node_id: broker.nodeID,
		namespace: cfg.namespace,
		services: services.join(",")
	});
	for (const schema of schemas) broker.createService(schema);
	await broker.start();

	let stopping: Promise<void> | null = null;
	const shutdown = () => {
		if (!stopping) {
			stopping = (async () => {
				broker.broadcastLocal("$gomall.draining");
				if (cfg.shutdown.drain_delay) await new Promise(r => setTimeout(r, cfg.shutdown.drain_delay));
				// The gateway goes first: it stops accepting and lets accepted requests finish
				// while the actors they call are still up.
				const api = broker.getLocalService("api");
				if (api) await broker.destroyService(api);
				await broker.stop();
			})();
		}
		return stopping;
	};
	return { broker, logging, config: cfg, shutdown };
}
