/**
 * `npm run bench:tail`: is a flat-out p99 tail the mall's, or any busy node:http server's under
 * wrk on this machine? The control is a server with nothing in it: it reads the body, keeps the
 * CPU busy for BENCH_BURN_US (default 30 µs: with Node's own HTTP work, about the mall's rate
 * flat out) and answers. It runs as 1 and <cores> processes (BENCH_WORKERS), BENCH_RUNS (6)
 * times flat out and BENCH_RUNS times with BENCH_RATE (10,000) req/s offered, wrk -t1 -c256
 * -d8s, the same script as `npm run bench`. Per run: req/s, p50, p99, max, wrk's mean and the
 * mean that Little's law allows 256 busy connections (bench/wrk.ts says why they can differ).
 *
 * Each of that with one listening socket per process and with BENCH_LISTEN_SOCKETS (default: the
 * mall's `http.listen_sockets`) bound with SO_REUSEPORT, as the gateway does (lib/listen).
 *
 * Then a client of its own (BENCH_RUNS runs, 256 connections opened at once, closed loop, raw
 * latencies with no correction) against a slower control (BENCH_RAW_BURN_US, 150 µs, so that
 * this one-process client keeps it saturated) says which requests are the slow ones: the first
 * request of a connection, or any.
 */
import cluster from "node:cluster";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { ChildProcess, spawn } from "node:child_process";
import { loadConfig } from "../config";
import { listenShared } from "../lib/http/listen";
import { freePort } from "../test/helpers/proc";
import { ensureWrk, littleMean, median, processCounts, reqPerSec, runWrk, WrkResult } from "./wrk";

const num = (k: string, d: number) => Number(process.env[k] ?? d);
const CONNECTIONS = 256;
const SECONDS = 8;
const RUNS = num("BENCH_RUNS", 6);
const RATE = num("BENCH_RATE", 10000);
const BURN_US = num("BENCH_BURN_US", 30);
const RAW_BURN_US = num("BENCH_RAW_BURN_US", 150);
const WORKER_COUNTS = processCounts();
const SOCKET_COUNTS = [...new Set([1, num("BENCH_LISTEN_SOCKETS", loadConfig({ env: "dev" }).http.listen_sockets)])];

/** The control server (this file, run with BENCH_TAIL_PORT set). */
function serve(port: number, workers: number, burnUs: number, sockets: number): void {
	if (workers > 1 && cluster.isPrimary) {
		for (let i = 0; i < workers; i++) cluster.fork();
		return;
	}
	const answer = JSON.stringify({ code: 60003, message: "sold out", data: null, trace_id: null });
	const server = http.createServer((req, res) => {
		req.resume();
		req.on("end", () => {
			const until = process.hrtime.bigint() + BigInt(burnUs * 1000);
			while (process.hrtime.bigint() < until);
			res.writeHead(409, {
				"Content-Type": "application/json; charset=utf-8",
				"Content-Length": Buffer.byteLength(answer)
			});
			res.end(answer);
		});
	});
	void listenShared(server, { port, host: "127.0.0.1", sockets, checkFree: false });
}

const ANSWER_END = Buffer.from('"trace_id":null}');

interface RawRun {
	requests: number;
	/** every request's latency in ms, and whether it was its connection's first */
	samples: { ms: number; first: boolean }[];
}

/** `connections` sockets opened at once, each sending its next request when the answer is in. */
function rawClient(port: number, connections: number, seconds: number): Promise<RawRun> {
	const request = Buffer.from(
		`POST /api/seckill HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: Bearer ${"x".repeat(220)}\r\nContent-Length: 16\r\n\r\n{"product_id":1}`
	);
	const samples: RawRun["samples"] = [];
	const deadline = performance.now() + seconds * 1000;
	return new Promise(resolve => {
		let open = connections;
		for (let i = 0; i < connections; i++) {
			const socket = net.connect(port, "127.0.0.1");
			socket.setNoDelay(true);
			let started = 0;
			let first = true;
			let received = Buffer.alloc(0);
			const send = () => {
				started = performance.now();
				socket.write(request);
			};
			socket.on("connect", send);
			socket.on("data", chunk => {
				received = received.length ? Buffer.concat([received, chunk]) : chunk;
				if (!received.subarray(-ANSWER_END.length).equals(ANSWER_END)) return;
				const now = performance.now();
				samples.push({ ms: now - started, first });
				first = false;
				received = Buffer.alloc(0);
				if (now < deadline) send();
				else socket.destroy();
			});
			socket.on("close", () => --open === 0 && resolve({ requests: samples.length, samples }));
			socket.on("error", () => undefined);
		}
	});
}

function startControl(workers: number, sockets: number, burnUs: number, port: number): ChildProcess {
	const env = {
		BENCH_TAIL_PORT: String(port),
		BENCH_TAIL_WORKERS: String(workers),
		BENCH_TAIL_SOCKETS: String(sockets),
		BENCH_TAIL_BURN_US: String(burnUs)
	};
	return spawn(process.execPath, [__filename], { env: { ...process.env, ...env }, stdio: "inherit" });
}

async function main(): Promise<void> {
	ensureWrk();
	const tokens = path.join(os.tmpdir(), `gomall-tail-${process.pid}.tokens`);
	// The server never reads them; they only give the requests the mall's size.
	fs.writeFileSync(tokens, Array.from({ length: 2000 }, () => "x".repeat(220)).join("\n") + "\n");
	console.log(
		`control server: body, ${BURN_US} µs of CPU, a JSON answer; wrk -t1 -c${CONNECTIONS} -d${SECONDS}s; ${RUNS} runs flat out and ${RUNS} with ${RATE} req/s offered;`
	);
	console.log(`then ${RUNS} runs of a raw client (no correction) against the control with ${RAW_BURN_US} µs of CPU`);
	console.log("processes  sockets  run         req/s   p50 ms  p99 ms  max ms  mean ms  Little");
	try {
		for (const [workers, sockets] of WORKER_COUNTS.flatMap(w => SOCKET_COUNTS.map(k => [w, k]))) {
			const lead = `${String(workers).padStart(9)}  ${String(sockets).padStart(7)}`;
			const port = await freePort();
			const server = startControl(workers, sockets, BURN_US, port);
			await new Promise(r => setTimeout(r, 1500)); // every worker listening
			try {
				for (const [label, rate] of [
					["flat out", 0],
					[`${RATE}/s`, RATE]
				] as const) {
					const runs: WrkResult[] = [];
					for (let i = 0; i < RUNS; i++) {
						const r = await runWrk({
							port,
							connections: CONNECTIONS,
							seconds: SECONDS,
							env: { BENCH_TOKENS: tokens, BENCH_PRODUCT: "1", BENCH_RATE: String(rate) }
						});
						runs.push(r);
						const little = rate ? "-" : littleMean(r, CONNECTIONS).toFixed(1);
						console.log(
							`${lead}  ${label.padEnd(10)} ${reqPerSec(r).toFixed(0).padStart(6)}  ${(r.p50 / 1000).toFixed(1).padStart(6)}  ${(r.p99 / 1000).toFixed(1).padStart(6)}  ${(r.max / 1000).toFixed(0).padStart(6)}  ${(r.mean / 1000).toFixed(1).padStart(7)}  ${little.padStart(6)}`
						);
					}
					const over = runs.filter(r => r.p99 > 50000).length;
					console.log(
						`${lead}  ${label.padEnd(10)} median p99 ${(median(runs.map(r => r.p99)) / 1000).toFixed(1)} ms; p99 over 50 ms in ${over} of ${RUNS} runs`
					);
				}
			} finally {
				server.kill("SIGTERM"); // cluster workers exit with their primary
			}
			const rawPort = await freePort();
			const slow = startControl(workers, sockets, RAW_BURN_US, rawPort);
			await new Promise(r => setTimeout(r, 1500));
			try {
				for (let i = 0; i < RUNS; i++) {
					const r = await rawClient(rawPort, CONNECTIONS, SECONDS);
					const ms = r.samples.map(x => x.ms).sort((a, b) => a - b);
					const at = (q: number) => ms[Math.min(ms.length - 1, Math.floor(q * ms.length))];
					const over = (first: boolean) => r.samples.filter(x => x.first === first && x.ms > 100).length;
					console.log(
						`${lead}  raw client ${(r.requests / SECONDS).toFixed(0).padStart(6)}  ${at(0.5).toFixed(1).padStart(6)}  ${at(0.99).toFixed(1).padStart(6)}  ${ms[ms.length - 1].toFixed(0).padStart(6)}` +
							`   p99.9 ${at(0.999).toFixed(1)} ms; over 100 ms: ${over(true)} first requests of a connection, ${over(false)} later ones`
					);
				}
			} finally {
				slow.kill("SIGTERM");
			}
		}
	} finally {
		fs.rmSync(tokens, { force: true });
	}
}

if (process.env.BENCH_TAIL_PORT)
	serve(
		Number(process.env.BENCH_TAIL_PORT),
		Number(process.env.BENCH_TAIL_WORKERS ?? 1),
		Number(process.env.BENCH_TAIL_BURN_US ?? BURN_US),
		Number(process.env.BENCH_TAIL_SOCKETS ?? 1)
	);
else
	main().catch(err => {
		console.error(`bench:tail failed: ${err.message}`);
		process.exit(1);
	});
