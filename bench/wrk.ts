/**
 * What the benches share. wrk, as they drive it: one thread, bench/wrk-seckill.lua (POST
 * /api/seckill with the next buyer's token, answers counted by status and code), figures read
 * from the script's BENCH_RESULT and BENCH_ANSWERS lines.
 *
 * wrk 4 corrects its latencies for coordinated omission before it reports them: every sample
 * longer than twice the expected interval (run time / requests per connection) adds copies of
 * itself shortened by one interval at a time. So a handful of requests that took a second turn
 * into the top percent, and wrk's mean can exceed what Little's law allows the connections
 * (`littleMean`); the benches print both so a reader can tell.
 */
import { execFileSync, spawn } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { PROJECT_ROOT } from "../config/paths";

export interface WrkResult {
	requests: number;
	duration_us: number;
	connect: number;
	read: number;
	write: number;
	timeout: number;
	/** latencies in µs, as wrk reports them (corrected for coordinated omission) */
	p50: number;
	p90: number;
	p99: number;
	max: number;
	mean: number;
	/** ms from the run's first request to its last win's answer: the sale's opening as buyers see it (0: no win) */
	last_win_ms: number;
	answers: Record<string, number>;
}

export interface WrkRun {
	port: number;
	connections: number;
	seconds: number;
	/** BENCH_TOKENS, BENCH_PRODUCT and the script's other settings */
	env: Record<string, string>;
	/** Stop (SIGINT: wrk still prints its figures) half a second after this says so. */
	stopWhen?: () => Promise<boolean>;
}

export function ensureWrk(): void {
	try {
		execFileSync("wrk", ["--version"], { stdio: "ignore" });
	} catch (err) {
		// wrk prints its version and exits 1; only a missing binary is ENOENT.
		if ((err as NodeJS.ErrnoException).code !== "ENOENT") return;
		console.log("bench: installing wrk (Debian package)");
		execFileSync(
			"bash",
			["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null"],
			{ stdio: "inherit" }
		);
	}
}

export function runWrk(run: WrkRun): Promise<WrkResult> {
	const script = path.join(PROJECT_ROOT, "bench", "wrk-seckill.lua");
	const child = spawn(
		"wrk",
		[
			"-t1",
			`-c${run.connections}`,
			`-d${run.seconds}s`,
			"--timeout",
			"5s",
			"-s",
			script,
			`http://127.0.0.1:${run.port}`
		],
		{
			env: { ...process.env, ...run.env },
			stdio: ["ignore", "pipe", "inherit"]
		}
	);
	let out = "";
	child.stdout.on("data", d => (out += d));
	let running = true;
	const watch = async (stopWhen: () => Promise<boolean>) => {
		while (running && !(await stopWhen())) await new Promise(r => setTimeout(r, 100));
		await new Promise(r => setTimeout(r, 500));
		if (running) child.kill("SIGINT");
	};
	if (run.stopWhen) void watch(run.stopWhen);
	return new Promise((resolve, reject) => {
		child.once("error", reject);
		child.once("exit", () => {
			running = false;
			const line = out.split("\n").find(l => l.startsWith("BENCH_RESULT "));
			const answers = out.split("\n").find(l => l.startsWith("BENCH_ANSWERS "));
			if (!line || !answers) return reject(new Error(`wrk printed no result:\n${out}`));
			resolve({
				...JSON.parse(line.slice("BENCH_RESULT ".length)),
				answers: JSON.parse(answers.slice("BENCH_ANSWERS ".length))
			});
		});
	});
}

export const reqPerSec = (r: WrkResult): number => r.requests / (r.duration_us / 1e6);
export const wrkErrors = (r: WrkResult): number => r.connect + r.read + r.write + r.timeout;
/** The mean latency (ms) that `connections` always-busy connections allow at the rate served. */
export const littleMean = (r: WrkResult, connections: number): number => (connections / reqPerSec(r)) * 1000;

export function median(xs: number[]): number {
	const s = [...xs].sort((a, b) => a - b);
	return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** BENCH_WORKERS: the process counts to measure, in order (default "1,<cores>"). */
export function processCounts(): number[] {
	const raw = process.env.BENCH_WORKERS ?? `1,${os.cpus().length}`;
	const counts = [...new Set(raw.split(",").map(Number))];
	if (!counts.every(n => Number.isInteger(n) && n >= 1 && n <= 64))
		throw new Error(`BENCH_WORKERS: process counts from 1 to 64, comma-separated, got "${raw}"`);
	return counts;
}
