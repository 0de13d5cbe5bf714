/**
 * Real Redis Clusters and NATS clusters started by a test (or a benchmark) on ports of its own,
 * from the `redis-server`, `redis-cli` and `nats-server` binaries, and stopped afterwards.
 */
import { ChildProcess, execFile, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import Redis from "ioredis";
import { eventually, freePort } from "./proc";

const run = promisify(execFile);

/** Ports that are free now, with port + offset free too (a cluster bus or route port). */
async function freePorts(n: number, offset: number): Promise<number[]> {
	const ports: number[] = [];
	while (ports.length < n) {
		const p = await freePort();
		if (p + offset < 65536 && !ports.includes(p) && (await isFree(p + offset))) ports.push(p);
	}
	return ports;
}

async function isFree(port: number): Promise<boolean> {
	const net = await import("node:net");
	return new Promise(resolve => {
		const srv = net.createServer().once("error", () => resolve(false));
		srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
	});
}

class Processes {
	protected readonly procs = new Map<number, ChildProcess>();
	protected readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-servers-"));
	private readonly onExit = () => this.killAll();

	constructor() {
		process.once("exit", this.onExit);
	}

	protected spawn(port: number, cmd: string, args: string[]): void {
		const log = fs.openSync(path.join(this.dir, `${port}.log`), "a");
		const child = spawn(cmd, args, { stdio: ["ignore", log, log] });
		fs.closeSync(log);
		this.procs.set(port, child);
	}

	/** SIGKILL: the server gets no chance to tell anyone. */
	kill(port: number): void {
		this.procs.get(port)?.kill("SIGKILL");
		this.procs.delete(port);
	}

	/** SIGSTOP / SIGCONT: a server that stops answering (a long GC, a stalled disk) and comes back. */
	pause(port: number): void {
		this.procs.get(port)?.kill("SIGSTOP");
	}

	resume(port: number): void {
		this.procs.get(port)?.kill("SIGCONT");
	}

	log(port: number): string {
		return fs.readFileSync(path.join(this.dir, `${port}.log`), "utf8");
	}

	private killAll(): void {
		for (const p of this.procs.values()) p.kill("SIGKILL");
		this.procs.clear();
	}

	async stop(): Promise<void> {
		const exits = [...this.procs.values()].map(
			p => new Promise(resolve => (p.exitCode !== null ? resolve(null) : p.once("exit", resolve)))
		);
		this.killAll();
		await Promise.all(exits);
		process.removeListener("exit", this.onExit);
		fs.rmSync(this.dir, { recursive: true, force: true });
	}
}

/** 3 masters + 3 replicas (by default), cluster-enabled, created with `redis-cli --cluster create`. */
export class RedisCluster extends Processes {
	ports: number[] = [];

	constructor(
		private readonly size = 6,
		private readonly nodeTimeoutMs = 1000
	) {
		super();
	}

	/** The seed list GoMall is given (redis.cluster_nodes). */
	get nodes(): string[] {
		return this.ports.map(p => `127.0.0.1:${p}`);
	}

	async start(): Promise<this> {
		this.ports = await freePorts(this.size, 10000);
		for (const p of this.ports) this.launch(p);
		await Promise.all(this.ports.map(p => eventually(() => this.ping(p), 10000, 50)));
		await run("redis-cli", ["--cluster", "create", ...this.nodes, "--cluster-replicas", "1", "--cluster-yes"], {
			timeout: 30000
		});
		await this.waitHealthy();
		return this;
	}

	private launch(port: number): void {
		// No persistence: a restarted node comes back empty and re-syncs from its master, as a
		// replaced machine would. nodes-<port>.conf (the cluster's view) survives in the dir.
		this.spawn(port, "redis-server", [
			"--port",
			String(port),
			"--bind",
			"127.0.0.1",
			"--protected-mode",
			"no",
			"--cluster-enabled",
			"yes",
			"--cluster-config-file",
			`nodes-${port}.conf`,
			"--cluster-node-timeout",
			String(this.nodeTimeoutMs),
			"--dir",
			this.dir,
			"--save",
			"",
			"--appendonly",
			"no",
			"--loglevel",
			"warning"
		]);
	}

	/** Starts a killed node again on its port; it rejoins as a replica of whoever took its slots. */
	async restart(port: number): Promise<void> {
		this.launch(port);
		await eventually(() => this.ping(port), 10000, 50);
	}

	private async ask<T>(port: number, fn: (r: Redis) => Promise<T>): Promise<T> {
		const r = new Redis(port, "127.0.0.1", {
			lazyConnect: true,
			maxRetriesPerRequest: 0,
			retryStrategy: () => null,
			connectTimeout: 1000
		});
		r.on("error", () => undefined);
		try {
			await r.connect();
			return await fn(r);
		} finally {
			r.disconnect();
		}
	}

	private ping(port: number): Promise<boolean> {
		return this.ask(port, r => r.ping()).then(
			() => true,
			() => false
		);
	}

	/**
	 * Every live node says cluster_state:ok, every live replica's link to its master is up, and
	 * every master has a replica online: a master brought back after a failover starts as a
	 * master of nothing until the cluster makes it a replica, and until then its old partner
	 * has no replica (WAIT 1 refuses everything, and a test has no replica to freeze).
	 */
	async waitHealthy(timeoutMs = 30000): Promise<void> {
		await eventually(
			async () => {
				for (const p of this.procs.keys()) {
					const ok = await this.ask(p, async r => {
						const info = String(await r.cluster("INFO"));
						const repl = await r.info("replication");
						const linked = repl.includes("role:slave")
							? repl.includes("master_link_status:up")
							: /^slave\d+:[^\n]*state=online/m.test(repl);
						return info.includes("cluster_state:ok") && linked;
					}).catch(() => false);
					if (!ok) return false;
				}
				return true;
			},
			timeoutMs,
			200
		);
	}

	/** The port of the master now serving a key's slot (the key as it is stored, prefix included). */
	async masterOf(key: string): Promise<number> {
		const [port] = [...this.procs.keys()];
		return this.ask(port, async r => {
			const slot = Number(await r.cluster("KEYSLOT", key));
			const range = (await r.cluster("SLOTS")).find(([from, to]) => slot >= from && slot <= to);
			if (!range?.[2]) throw new Error(`no master serves slot ${slot}`);
			return Number(range[2][1]);
		}).then(async seen => {
			// The node asked may not have heard of a failover yet: the one it names knows its own role.
			const role = (await this.ask(seen, r => r.call("ROLE"))) as [string, string?, number?];
			return role[0] === "master" ? seen : Number(role[2]);
		});
	}

	/** Runs a command on one node (CLIENT KILL, CONFIG, ...). */
	command(port: number, ...args: (string | number)[]): Promise<unknown> {
		return this.ask(port, r => r.call(String(args[0]), ...args.slice(1)));
	}

	/** The replica ports of a master. */
	async replicasOf(masterPort: number): Promise<number[]> {
		return this.ask(masterPort, async r => {
			const info = await r.info("replication");
			return [...info.matchAll(/^slave\d+:ip=[^,]+,port=(\d+)/gm)].map(m => Number(m[1]));
		});
	}
}

/** Three nats-server processes joined by routes into one cluster. */
export class NatsCluster extends Processes {
	ports: number[] = [];
	private routePorts: number[] = [];
	private monitorPorts: number[] = [];

	constructor(private readonly size = 3) {
		super();
	}

	url(port: number): string {
		return `nats://127.0.0.1:${port}`;
	}

	/** Every server's URL, the given one first, as GOMALL_NATS_URL takes them. */
	urls(first = this.ports[0]): string {
		return [first, ...this.ports.filter(p => p !== first)].map(p => this.url(p)).join(",");
	}

	async start(): Promise<this> {
		this.ports = await freePorts(this.size, 0);
		this.routePorts = await freePorts(this.size, 0);
		this.monitorPorts = await freePorts(this.size, 0);
		const routes = this.routePorts.map(p => `nats://127.0.0.1:${p}`).join(",");
		this.ports.forEach((p, i) =>
			this.spawn(p, "nats-server", [
				"-a",
				"127.0.0.1",
				"-p",
				String(p),
				"-m",
				String(this.monitorPorts[i]),
				"-n",
				`gomall-nats-${i}`,
				"--cluster_name",
				"gomall-test",
				"--cluster",
				`nats://127.0.0.1:${this.routePorts[i]}`,
				"--routes",
				routes
			])
		);
		// Each server sees the other two: the cluster is one.
		await eventually(
			async () => {
				for (const m of this.monitorPorts) {
					const r = await fetch(`http://127.0.0.1:${m}/routez`)
						.then(res => res.json() as Promise<{ num_routes: number }>)
						.catch(() => null);
					if (!r || r.num_routes < this.size - 1) return false;
				}
				return true;
			},
			15000,
			100
		);
		return this;
	}

	/** How many clients a server has now. */
	async connections(port: number): Promise<number> {
		const m = this.monitorPorts[this.ports.indexOf(port)];
		const r = (await (await fetch(`http://127.0.0.1:${m}/connz`)).json()) as { num_connections: number };
		return r.num_connections;
	}
}
