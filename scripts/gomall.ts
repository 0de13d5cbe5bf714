/**
 * Starts a GoMall node.
 *   npm start                                  every actor on one node
 *   npm run node -- --services user,product    a subset; it joins the running cluster over NATS
 *   npm run node -- --repl                     with the Moleculer REPL
 *   npm start -- --workers 2                   two whole nodes sharing the HTTP port
 *   --env dev|prod|test, --config extra.json   which configuration
 */
import cluster from "node:cluster";
import {
	ConfigError,
	DEV_JWT_SECRET,
	getConfig,
	loadConfig,
	reloadableChanges,
	restartOnlyChanges,
	setConfig,
	getPath,
	withReloadedKeys
} from "../config";
import { parseCliArgs } from "../bootstrap/cli";
import { assertPortFree } from "../lib/http/listen";
import { ALL_SERVICES, startNode } from "../bootstrap/node";

/**
 * `--workers N`: this process only supervises N worker processes, each a whole node (the same
 * actors) with a node id of its own, sharing the HTTP port: each binds sockets of its own to it
 * (SO_REUSEPORT, lib/listen), or with `http.listen_sockets` 1 takes connections from this
 * process through Node's cluster module. Calls stay inside a worker (Moleculer prefers local
 * actors); NATS carries discovery and the broadcasts (sold-out flags) between them. Signals
 * are passed on; a worker that dies is replaced unless the supervisor is stopping.
 */
function supervise(workers: number, port: number): void {
	const baseId = process.env.GOMALL_NODE_ID;
	const env = (i: number) => ({
		GOMALL_HTTP_PORT: String(port),
		...(baseId ? { GOMALL_NODE_ID: `${baseId}-w${i}` } : {})
	});
	const slots = new Map<number, number>();
	let stopping = false;
	const fork = (i: number) => slots.set(cluster.fork(env(i)).id, i);
	for (let i = 1; i <= workers; i++) fork(i);
	cluster.on("exit", (worker, code, signal) => {
		const i = slots.get(worker.id)!;
		slots.delete(worker.id);
		if (stopping) {
			if (!slots.size) process.exit(0);
			return;
		}
		console.error(`gomall: worker ${i} (pid ${worker.process.pid}) exited (${signal ?? code}); starting a new one`);
		fork(i);
	});
	const pass = (sig: NodeJS.Signals) => {
		if (sig !== "SIGHUP") stopping = true;
		for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(sig);
	};
	for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(sig, () => pass(sig));
}

async function main(): Promise<void> {
	const args = parseCliArgs(process.argv.slice(2));
	let cfg;
	try {
		cfg = loadConfig({ env: args.env, file: args.config });
	} catch (err) {
		if (err instanceof ConfigError) {
			console.error(`gomall: ${err.message}`);
			process.exit(2);
		}
		throw err;
	}
	// dev is the default: a node started without GOMALL_ENV (or --env) is a dev node, and says so.
	if (cfg.jwt.secret === DEV_JWT_SECRET && cluster.isPrimary) {
		console.error(
			"gomall: WARNING running as dev with the development JWT secret (jwt.secret, public in this repository): " +
				"anyone can sign tokens for this node. For anything but a laptop set GOMALL_ENV=prod and GOMALL_JWT_SECRET."
		);
	}
	// Checked once here, so a bad configuration or a port in use stops the supervisor instead of
	// every worker (workers bind the port with SO_REUSEPORT, which would share it, lib/listen).
	if (args.workers > 1 && cluster.isPrimary) {
		const serving = (args.services ?? ALL_SERVICES).includes("api");
		return supervise(args.workers, serving ? await assertPortFree(cfg.http.port, cfg.http.host) : cfg.http.port);
	}

	const node = await startNode(cfg, args.services ?? ALL_SERVICES);
	const { broker, logging } = node;
	const log = broker.getLogger("gomall");

	process.on("SIGHUP", () => {
		const before = getConfig();
		let after;
		try {
			after = loadConfig({ env: args.env, file: args.config });
		} catch (err) {
			log.error(`config reload refused, keeping the running configuration: ${(err as Error).message}`);
			return;
		}
		const changed = reloadableChanges(before, after);
		const ignored = restartOnlyChanges(before, after);
		setConfig(withReloadedKeys(before, after));
		if (changed.includes("log.level")) logging.setLevel(after.log.level);
		broker.options.requestTimeout = after.broker.request_timeout;
		broker.broadcastLocal("$config.changed", { keys: changed });
		const detail = changed.map(
			k => `${k}: ${JSON.stringify(getPath(before, k))} -> ${JSON.stringify(getPath(after, k))}`
		);
		log.warn(`config reloaded (SIGHUP): ${detail.length ? detail.join("; ") : "no reloadable change"}`);
		if (ignored.length) log.warn(`config keys changed that need a restart, kept as they were: ${ignored.join(", ")}`);
	});

	let signals = 0;
	const onSignal = (sig: string) => {
		if (++signals > 1) process.exit(1);
		log.info(`${sig} received: draining`);
		node
			.shutdown()
			.then(() => logging.root.flush())
			.then(() => process.exit(0))
			.catch(err => {
				console.error(`shutdown failed: ${err.message}`);
				process.exit(1);
			});
	};
	process.on("SIGTERM", () => onSignal("SIGTERM"));
	process.on("SIGINT", () => onSignal("SIGINT"));

	if (args.repl) {
		// Info lines written to the terminal would interleave with the prompt and the tables.
		// While the REPL is open a node logging to stdout keeps only warnings and errors
		// (`log.output: "file"` keeps every level in the file instead).
		if (cfg.log.output === "stdout" && (cfg.log.level === "info" || cfg.log.level === "debug")) {
			log.warn(
				`REPL open: terminal log level raised from ${cfg.log.level} to warn (set log.output=file to keep ${cfg.log.level} lines)`
			);
			logging.setLevel("warn");
		}
		await broker.repl();
	}
}

main().catch(err => {
	console.error(`gomall: start-up failed: ${err.message}`);
	process.exit(1);
});
