import { ChildProcess, spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { assertPortFree } from "../../lib/http/listen";
import { PROJECT_ROOT } from "../../config/paths";

/** A port nothing listens on now (the system's pick). */
export const freePort = (): Promise<number> => assertPortFree(0, "127.0.0.1");

/** Listening TCP sockets on `port` (IPv4), as the kernel lists them. */
export function listeningSockets(port: number): number {
	const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
	return fs
		.readFileSync("/proc/net/tcp", "utf8")
		.split("\n")
		.filter(line => {
			const f = line.trim().split(/\s+/);
			return f[1]?.endsWith(`:${hexPort}`) && f[3] === "0A";
		}).length;
}

export interface NodeProcess {
	child: ChildProcess;
	output: () => string;
	waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
	exited: Promise<number | null>;
	kill(signal?: NodeJS.Signals): void;
}

/** A cluster of the test's own: namespace and database names nobody else uses. */
export function clusterEnv(): Record<string, string> {
	const id = crypto.randomBytes(4).toString("hex");
	return { GOMALL_NAMESPACE: `p${id}`, GOMALL_DB_NAME: `gomall_p_${id}`, GOMALL_LOG_FORMAT: "json" };
}

/** Runs the built runner (dist/scripts/gomall.js) as its own process, as an operator would. */
export function spawnNode(args: string[], env: Record<string, string>): NodeProcess {
	const child = spawn(
		process.execPath,
		[path.join(PROJECT_ROOT, "dist", "scripts", "gomall.js"), "--env", "test", ...args],
		{
			cwd: PROJECT_ROOT,
			env: { ...process.env, ...env },
			stdio: ["ignore", "pipe", "pipe"]
		}
	);
	let out = "";
	const waiters: { re: RegExp; resolve: (s: string) => void }[] = [];
	const onData = (d: Buffer) => {
		out += d.toString();
		for (const w of waiters.slice()) {
			const m = out.match(w.re);
			if (m) {
				waiters.splice(waiters.indexOf(w), 1);
				w.resolve(m[0]);
			}
		}
	};
	child.stdout!.on("data", onData);
	child.stderr!.on("data", onData);
	const exited = new Promise<number | null>(resolve => child.on("exit", code => resolve(code)));
	return {
		child,
		output: () => out,
		exited,
		kill: (signal = "SIGTERM") => {
			if (child.exitCode === null) child.kill(signal);
		},
		waitFor(re, timeoutMs = 20000) {
			const m = out.match(re);
			if (m) return Promise.resolve(m[0]);
			return new Promise((resolve, reject) => {
				const timer = setTimeout(
					() => reject(new Error(`timed out waiting for ${re} in:\n${out.slice(-3000)}`)),
					timeoutMs
				);
				waiters.push({ re, resolve: s => (clearTimeout(timer), resolve(s)) });
			});
		}
	};
}

/** Polls until fn returns true or the time is up. */
export async function eventually(fn: () => Promise<boolean>, timeoutMs = 15000, stepMs = 200): Promise<void> {
	const end = Date.now() + timeoutMs;
	for (;;) {
		if (await fn().catch(() => false)) return;
		if (Date.now() > end) throw new Error("condition not met in time");
		await new Promise(r => setTimeout(r, stepMs));
	}
}
