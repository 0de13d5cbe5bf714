/**
 * How cheap are flash-sale rejections? Runs a whole mall on this machine (test database and
 * namespace of its own, rate limits and request logs off), then measures, in the same run:
 *   baseline   GET /ready                      (the gateway's cheapest route, no action call)
 *   sold out   POST /api/seckill, sold out     (answered from the in-memory flag)
 *   Lua        POST /api/seckill, over limit   (one EVALSHA, rejected by the script)
 *   winning    POST /api/seckill, a win        (Lua + confirmed RabbitMQ publish)
 * Each case runs 5 rounds of a bounded burst (N requests, C at a time, loopback only) and
 * prints the median requests/s and its ratio to the baseline.
 *   npm run bench
 */
import { performance } from "node:perf_hooks";
import { startMall, TestMall } from "../test/helpers/node";
import { arm, makeBuyers, newProduct } from "../test/helpers/seckill";

const N = Number(process.env.BENCH_REQUESTS ?? 4000);
const C = Number(process.env.BENCH_CONCURRENCY ?? 64);
const ROUNDS = 5;

async function burst(send: (i: number) => Promise<{ status: number }>, expectStatus: number): Promise<number> {
	let next = 0;
	const started = performance.now();
	const worker = async () => {
		while (next < N) {
			const r = await send(next++);
			if (r.status !== expectStatus) throw new Error(`unexpected status ${r.status}`);
		}
	};
	await Promise.all(Array.from({ length: C }, worker));
	return N / ((performance.now() - started) / 1000);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
	const mall: TestMall = await startMall({ rate_limit: { enabled: false }, log: { level: "error", requests: false } });
	try {
		const admin = await mall.http.adminToken();
		const buyers = await makeBuyers(mall, N * ROUNDS + 10, "bench");
		const soldOut = await newProduct(mall, admin);
		await arm(mall, admin, { product_id: soldOut, stock: 1 });
		await mall.http.post("/api/seckill", { product_id: soldOut }, buyers[0].token);
		const limited = await newProduct(mall, admin);
		await arm(mall, admin, { product_id: limited, stock: 1_000_000 });
		await mall.http.post("/api/seckill", { product_id: limited }, buyers[1].token);
		const winning = await newProduct(mall, admin);
		await arm(mall, admin, { product_id: winning, stock: 1_000_000 });

		let w = 2;
		const cases: [string, () => Promise<number>][] = [
			["baseline GET /ready", () => burst(() => mall.http.get("/ready"), 200)],
			["sold out (memory)", () => burst(() => mall.http.post("/api/seckill", { product_id: soldOut }, buyers[2].token), 409)],
			["over limit (Lua)", () => burst(() => mall.http.post("/api/seckill", { product_id: limited }, buyers[1].token), 409)],
			["winning (Lua + publish)", () => burst(() => mall.http.post("/api/seckill", { product_id: winning }, buyers[w++].token), 200)]
		];
		const results: Record<string, number[]> = {};
		await cases[0][1](); // warm-up
		for (let round = 0; round < ROUNDS; round++) for (const [name, run] of cases) (results[name] ??= []).push(await run());
		const base = median(results[cases[0][0]]);
		console.log(`${N} requests per round, ${C} concurrent, ${ROUNDS} rounds, loopback, Node ${process.version}`);
		for (const [name] of cases) {
			const m = median(results[name]);
			console.log(`${name.padEnd(26)} median ${m.toFixed(0).padStart(7)} req/s   ${(m / base).toFixed(2)}x baseline`);
		}
	} finally {
		await mall.stop();
	}
}

main().catch(err => {
	console.error(err);
	process.exit(1);
});
