/**
 * `npm run bench:tail`: is a flat-out p99 tail the mall's, or any busy node:http server's under
 * wrk on this machine? The control is a server with nothing in it: it reads the body, keeps the
 * CPU busy for BENCH_BURN_US (default 30 µs: with Node's own HTTP work, about the mall's rate flat out) and
 * answers. It runs as 1 and <cores> processes (BENCH_WORKERS), each BENCH_RUNS (6) times flat out
 * and BENCH_RUNS times with BENCH_RATE (10,000) req/s offered, wrk -t1 -c256 -d8s, the same
 * script as `npm run bench`. Per run: req/s, p50, p99, max, wrk's mean and the mean that Little's
 * law allows 256 busy connections (bench/wrk.ts says why they can differ).
 */
import cluster from "node:cluster";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { ChildProcess, spawn } from "node:child_process";
import { freePort } from "../test/helpers/proc";
import { ensureWrk, littleMean, median, reqPerSec, runWrk, WrkResult } from "./wrk";

const num = (k: string, d: number) => Number(process.env[k] ?? d);
const CONNECTIONS = 256;
const SECONDS = 8;
const RUNS = num("BENCH_RUNS", 6);
const RATE = num("BENCH_RATE", 10000);
const BURN_US = num("BENCH_BURN_US", 30);
const WORKER_COUNTS = [...new Set((process.env.BENCH_WORKERS ?? `1,${os.cpus().length}`).split(",").map(Number))];

/** The control server (this file, run with BENCH_TAIL_PORT set). */
function serve(port: number, workers: number): void {
	if (workers > 1 && cluster.isPrimary) {
		for (let i = 0; i < workers; i++) cluster.fork();
		return;
	}
	const answer = JSON.stringify({ code: 60003, message: "sold out", data: null, trace_id: null });
	http
		.createServer((req, res) => {
			req.resume();
			req.on("end", () => {
				const until = process.hrtime.bigint() + BigInt(BURN_US * 1000);
				while (process.hrtime.bigint() < until);
				res.writeHead(409, { "Content-Type": "application/json; charset=utf-8" });
				res.end(answer);
			});
		})
		.listen(port, "127.0.0.1");
}

async function main(): Promise<void> {
	ensureWrk();
	const tokens = path.join(os.tmpdir(), `gomall-tail-${process.pid}.tokens`);
	// The server never reads them; they only give the requests the mall's size.
	fs.writeFileSync(tokens, Array.from({ length: 2000 }, () => "x".repeat(220)).join("\n") + "\n");
	console.log(`control server: body, ${BURN_US} µs of CPU, a JSON answer; wrk -t1 -c${CONNECTIONS} -d${SECONDS}s; ${RUNS} runs flat out and ${RUNS} with ${RATE} req/s offered`);
	console.log("processes  run         req/s   p50 ms  p99 ms  max ms  mean ms  Little");
	try {
		for (const workers of WORKER_COUNTS) {
			const port = await freePort();
			const server: ChildProcess = spawn(process.execPath, [__filename], { env: { ...process.env, BENCH_TAIL_PORT: String(port), BENCH_TAIL_WORKERS: String(workers) }, stdio: "inherit" });
			await new Promise(r => setTimeout(r, 1500)); // every worker listening
			try {
				for (const [label, rate] of [["flat out", 0], [`${RATE}/s`, RATE]] as const) {
					const runs: WrkResult[] = [];
					for (let i = 0; i < RUNS; i++) {
						const r = await runWrk({ port, connections: CONNECTIONS, seconds: SECONDS, env: { BENCH_TOKENS: tokens, BENCH_PRODUCT: "1", BENCH_RATE: String(rate) } });
						runs.push(r);
						const little = rate ? "-" : littleMean(r, CONNECTIONS).toFixed(1);
						console.log(`${String(workers).padStart(9)}  ${label.padEnd(10)} ${reqPerSec(r).toFixed(0).padStart(6)}  ${(r.p50 / 1000).toFixed(1).padStart(6)}  ${(r.p99 / 1000).toFixed(1).padStart(6)}  ${(r.max / 1000).toFixed(0).padStart(6)}  ${(r.mean / 1000).toFixed(1).padStart(7)}  ${little.padStart(6)}`);
					}
					const over = runs.filter(r => r.p99 > 50000).length;
					console.log(`${String(workers).padStart(9)}  ${label.padEnd(10)} median p99 ${(median(runs.map(r => r.p99)) / 1000).toFixed(1)} ms; p99 over 50 ms in ${over} of ${RUNS} runs`);
				}
			} finally {
				server.kill("SIGTERM"); // cluster workers exit with their primary
			}
		}
	} finally {
		fs.rmSync(tokens, { force: true });
	}
}

if (process.env.BENCH_TAIL_PORT) serve(Number(process.env.BENCH_TAIL_PORT), Number(process.env.BENCH_TAIL_WORKERS ?? 1));
else
	main().catch(err => {
		console.error(`bench:tail failed: ${err.message}`);
		process.exit(1);
	});
