/**
 * A GoMall cluster of separate node processes (dist/scripts/gomall.js) over the real NATS,
 * MariaDB, Redis and RabbitMQ on 127.0.0.1, in a namespace and database of its own, plus an
 * observer broker in the test process that joins the same namespace to see (and call) the
 * nodes as an operator's REPL would. Every process is killed by PID at the end, also when a
 * test fails or jest exits early.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import mysql from "mysql2/promise";
import { Sequelize } from "sequelize";
import { Config, loadConfig } from "../../config";
import { TokenService } from "../../lib/auth/jwt";
import { newSessionId } from "../../lib/auth/sessions";
import { PROJECT_ROOT } from "../../config/paths";
import { ADMIN, HttpClient, cleanupNamespace, dropDatabase } from "../helpers/node";
import type { TestMall } from "../helpers/node";
import { clusterEnv, eventually, freePort, NodeProcess, spawnNode } from "../helpers/proc";
import type { Buyer } from "../helpers/seckill";

/** Settings every node of a test cluster shares (a --config file), on top of env "test". */
export const CLUSTER_SETTINGS = {
	log: { level: "info", requests: false },
	broker: {
		request_timeout: 5000,
		// Moleculer's retry on, as in dev and prod (env "test" turns it off): the cluster
		// must be right with the retry middleware in play.
		retry: { enabled: true, retries: 2, delay: 100, max_delay: 500 },
		heartbeat_interval: 1,
		heartbeat_timeout: 3
	},
	// Reservations whose publish died with a node are re-queued by the first reconcile.
	seckill: { reconcile_age: 1 }
};

const alive = new Set<NodeProcess>();
// Whatever happens to the test runner, no node outlives it.
process.on("exit", () => {
	for (const p of alive)
		if (p.child.pid && p.child.exitCode === null)
			try {
				process.kill(p.child.pid, "SIGKILL");
			} catch {
				/* gone */
			}
});

export interface ClusterNode {
	name: string;
	services: string[];
	proc: NodeProcess;
}

export class ProcCluster {
	readonly env: Record<string, string>;
	readonly cfg: Config;
	readonly nodes = new Map<string, ClusterNode>();
	http!: HttpClient;
	port = 0;
	observer!: ServiceBroker;
	private configFile: string;
	private dir: string;
	private sequelize?: Sequelize;

	constructor(settings: Record<string, any> = {}) {
		this.env = { ...clusterEnv(), GOMALL_ADMIN_USERNAME: ADMIN.username, GOMALL_ADMIN_PASSWORD: ADMIN.password };
		this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-cluster-"));
		this.configFile = path.join(this.dir, "cluster.json");
		const merged = deepMerge(CLUSTER_SETTINGS, settings);
		fs.writeFileSync(this.configFile, JSON.stringify(merged));
		this.cfg = loadConfig({ env: "test", file: this.configFile, environ: { ...process.env, ...this.env } });
	}

	/** The observer joins first, so it sees every node arrive. */
	async open(): Promise<void> {
		this.port = await freePort();
		this.http = new HttpClient(`http://127.0.0.1:${this.port}`);
		this.observer = new ServiceBroker({
			namespace: this.cfg.namespace,
			nodeID: `observer-${process.pid}`,
			transporter: { type: "NATS", options: { url: this.cfg.nats.url } },
			serializer: "JSON",
			logger: false,
			heartbeatInterval: this.cfg.broker.heartbeat_interval,
			heartbeatTimeout: this.cfg.broker.heartbeat_timeout,
			requestTimeout: 10000
		});
		await this.observer.start();
	}

	/** Starts a node process with its own nodeID and waits until the observer sees its actors. */
	async start(
		name: string,
		services: string[],
		extraEnv: Record<string, string> = {},
		timeoutMs = 40000
	): Promise<ClusterNode> {
		const env: Record<string, string> = {
			...this.env,
			GOMALL_NODE_ID: name,
			GOMALL_HTTP_PORT: services.includes("api") ? String(this.port) : "0",
			...extraEnv
		};
		const proc = spawnNode(["--config", this.configFile, "--services", services.join(",")], env);
		alive.add(proc);
		proc.exited.then(() => alive.delete(proc));
		const node = { name, services, proc };
		this.nodes.set(name, node);
		await this.waitJoined(name, services, timeoutMs);
		// A gateway is ready once it has loaded the ended sessions from a user actor; before any
		// user actor runs it only answers (/ready 503, authenticated routes 503), so then wait for
		// that, and for its readiness when the user actor joins.
		const running = (s: string) => [...this.nodes.values()].some(n => n.services.includes(s) && alive.has(n.proc));
		if (services.includes("api") || (services.includes("user") && running("api"))) {
			const want = running("user") ? [200] : [200, 503];
			await eventually(async () => want.includes((await this.http.get("/ready")).status), timeoutMs);
		}
		return node;
	}

	async waitJoined(name: string, services: string[], timeoutMs = 40000): Promise<void> {
		await eventually(
			async () => {
				const n = (this.observer.registry.getNodeList({ onlyAvailable: true, withServices: true }) as any[]).find(
					x => x.id === name
				);
				return !!n && services.every(s => n.services.some((x: any) => x.name === s));
			},
			timeoutMs,
			100
		).catch(() => {
			throw new Error(
				`node ${name} did not join with ${services.join(",")}:\n${this.nodes.get(name)?.proc.output().slice(-3000)}`
			);
		});
	}

	/** Waits until the observer has dropped a node (heartbeats stopped, or it said goodbye). */
	async waitGone(name: string, timeoutMs = 20000): Promise<void> {
		await eventually(
			async () => !(this.observer.registry.getNodeList({ onlyAvailable: true }) as any[]).some(x => x.id === name),
			timeoutMs,
			100
		);
	}

	kill(name: string, signal: NodeJS.Signals = "SIGKILL"): Promise<number | null> {
		const node = this.nodes.get(name)!;
		node.proc.kill(signal);
		return node.proc.exited;
	}

	/** The mall's database, for checks. */
	db(): Sequelize {
		if (!this.sequelize)
			this.sequelize = new Sequelize(this.cfg.db.name, this.cfg.db.user, this.cfg.db.password, {
				host: this.cfg.db.host,
				port: this.cfg.db.port,
				dialect: "mysql",
				logging: false,
				pool: { max: 2 }
			});
		return this.sequelize;
	}

	/** The shape the single-process helpers (counts, drained) read the database through. */
	asMall(): TestMall {
		const db = this.db();
		return { cfg: this.cfg, node: { broker: { getLocalService: () => ({ adapter: { db } }) } } } as unknown as TestMall;
	}

	async adminToken(): Promise<string> {
		const r = await this.http.post("/api/user/login", ADMIN);
		if (r.status !== 200) throw new Error(`admin login failed: ${JSON.stringify(r.body)}`);
		return r.body.data.token;
	}

	/** Many buyers at once: rows written directly, tokens signed with the cluster's secret. */
	async buyers(n: number, prefix: string): Promise<Buyer[]> {
		const conn = await mysql.createConnection({
			host: this.cfg.db.host,
			port: this.cfg.db.port,
			user: this.cfg.db.user,
			password: this.cfg.db.password,
			database: this.cfg.db.name
		});
		try {
			const values = Array.from({ length: n }, (_, i) => `('${prefix}_${i}', 'x', 1, 1)`).join(",");
			await conn.query(`INSERT INTO users (username, password_hash, role, status) VALUES ${values}`);
			const [rows] = await conn.query(`SELECT id FROM users WHERE username LIKE ? ORDER BY id`, [`${prefix}\\_%`]);
			const tokens = new TokenService(this.cfg.jwt.secret, 3600);
			return (rows as { id: number }[]).map(r => ({
				id: Number(r.id),
				// A session id of its own: gateways refuse a token without one.
				token: tokens.sign({ id: Number(r.id), role: 1 }, newSessionId())
			}));
		} finally {
			await conn.end();
		}
	}

	/**
	 * A node with no actors and the REPL (`--repl`), its stdin a pipe: the operator's console.
	 * `run(cmd)` types a line and resolves with what was printed until the next prompt.
	 */
	async repl(name: string): Promise<ReplSession> {
		const child = spawn(
			process.execPath,
			[
				path.join(PROJECT_ROOT, "dist", "scripts", "gomall.js"),
				"--env",
				"test",
				"--config",
				this.configFile,
				"--services",
				"",
				"--repl"
			],
			{
				cwd: PROJECT_ROOT,
				env: { ...process.env, ...this.env, GOMALL_NODE_ID: name, GOMALL_HTTP_PORT: "0" },
				stdio: ["pipe", "pipe", "pipe"]
			}
		);
		let out = "";
		child.stdout.on("data", d => (out += d.toString()));
		child.stderr.on("data", d => (out += d.toString()));
		const exited = new Promise<number | null>(resolve => child.on("exit", code => resolve(code)));
		const proc: NodeProcess = {
			child,
			output: () => out,
			exited,
			kill: (signal = "SIGTERM") => void (child.exitCode === null && child.kill(signal)),
			waitFor: () => Promise.reject(new Error("not used"))
		};
		alive.add(proc);
		exited.then(() => alive.delete(proc));
		this.nodes.set(name, { name, services: [], proc });
		const PROMPT = "mol $ ";
		const prompts = () => out.split(PROMPT).length - 1;
		await eventually(async () => prompts() >= 1, 40000, 50).catch(() => {
			throw new Error(`no REPL prompt:\n${out.slice(-3000)}`);
		});
		await this.waitJoined(name, []);
		return {
			output: () => out,
			run: async (cmd: string, timeoutMs = 15000) => {
				const before = prompts();
				const from = out.length;
				child.stdin.write(cmd + "\n");
				await eventually(async () => prompts() > before, timeoutMs, 50);
				return out.slice(from, out.lastIndexOf(PROMPT));
			}
		};
	}

	/** SIGTERM to each node, SIGKILL to what is left after 15 s; then the namespace's data goes. */
	async close(): Promise<void> {
		const procs = [...this.nodes.values()].map(n => n.proc);
		for (const p of procs) p.kill("SIGTERM");
		const timer = setTimeout(() => procs.forEach(p => p.kill("SIGKILL")), 15000);
		await Promise.all(procs.map(p => p.exited));
		clearTimeout(timer);
		await this.observer?.stop().catch(() => undefined);
		await this.sequelize?.close().catch(() => undefined);
		await dropDatabase(this.cfg).catch(() => undefined);
		await cleanupNamespace(this.cfg).catch(() => undefined);
		fs.rmSync(this.dir, { recursive: true, force: true });
	}
}

function deepMerge(a: Record<string, any>, b: Record<string, any>): Record<string, any> {
	const out = { ...a };
	for (const [k, v] of Object.entries(b))
		out[k] = v && typeof v === "object" && !Array.isArray(v) && typeof out[k] === "object" ? deepMerge(out[k], v) : v;
	return out;
}

export interface ReplSession {
	output(): string;
	run(cmd: string, timeoutMs?: number): Promise<string>;
}

/**
 * The rows of the table printed under `title` (lib/repl.ts formatTable): the header's words
 * are the keys; cells are split on runs of two or more spaces.
 */
export function parseTable(text: string, title: string): Record<string, string>[] {
	const lines = text.split("\n").map(l => l.replace(/^mol \$ /, ""));
	const at = lines.findIndex(l => l.startsWith(title));
	if (at < 0) throw new Error(`no table "${title}" in:\n${text}`);
	if (lines[at + 1]?.trim() === "(none)") return [];
	const header = lines[at + 1].trim().split(/\s{2,}/);
	const rows: Record<string, string>[] = [];
	for (const line of lines.slice(at + 3)) {
		if (!line.trim()) break;
		const cells = line.trim().split(/\s{2,}/);
		rows.push(Object.fromEntries(header.map((h, i) => [h, cells[i] ?? ""])));
	}
	return rows;
}

/** Answers counted by HTTP status and business code, e.g. "200/0", "409/60003", "503/503". */
export class Tally {
	readonly byKey = new Map<string, number>();
	add(status: number, code: unknown): void {
		const key = `${status}/${code ?? "-"}`;
		this.byKey.set(key, (this.byKey.get(key) ?? 0) + 1);
	}
	get(key: string): number {
		return this.byKey.get(key) ?? 0;
	}
	total(): number {
		return [...this.byKey.values()].reduce((a, b) => a + b, 0);
	}
	toJSON(): Record<string, number> {
		return Object.fromEntries([...this.byKey].sort());
	}
}

/**
 * Sends one request per item, at most `concurrency` in flight, in order; `at` hooks run when
 * the given number of requests has been started (they may return a promise that holds the
 * feeder back, e.g. "wait until the new node has joined"). Bounded by count and by time.
 */
export async function drive<T>(
	items: T[],
	concurrency: number,
	send: (item: T, i: number) => Promise<void>,
	at: Record<number, () => unknown> = {},
	deadlineMs = 180000
): Promise<void> {
	const end = Date.now() + deadlineMs;
	let next = 0;
	// A hook holds every worker, not only the one that reached it: the others finish the
	// request they have in flight, then wait at the gate until the hook is done.
	let gate: Promise<unknown> = Promise.resolve();
	const worker = async () => {
		for (;;) {
			await gate;
			if (next >= items.length) return;
			if (Date.now() > end) throw new Error(`drive: not done within ${deadlineMs} ms`);
			const i = next++;
			if (at[i]) await (gate = Promise.resolve().then(at[i]));
			await send(items[i], i);
		}
	};
	await Promise.all(Array.from({ length: concurrency }, worker));
}
