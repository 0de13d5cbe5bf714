/**
 * The ceilings a flash-sale request is measured against: a bare node:http server doing only
 * the work no implementation can skip (read and parse the JSON body, verify the HS256 JWT
 * with a pre-built KeyObject, one EVALSHA, a JSON envelope back). No framework, no limiter,
 * no metrics, no tracing, no queue. Two kinds (BENCH_CEILING):
 *   full  the mall's own reservation script (six keys: limit, sequence, reservation record)
 *   lean  issue #24's: a two-key stock script (stock, buyers), and each verified token
 *         remembered until its `exp` as the mall's gateway does, so the ratio to it cannot
 *         hide work both sides do
 * Run by bench/seckill.ts, with as many processes (Node's cluster module) and listening sockets
 * per process (lib/listen) as the mall it is compared with.
 *   BENCH_PORT, BENCH_REDIS_URL, BENCH_NAMESPACE, BENCH_JWT_SECRET, BENCH_ARMING, BENCH_WORKERS,
 *   BENCH_LISTEN_SOCKETS, BENCH_CEILING (full | lean)
 */
import cluster from "node:cluster";
import http from "node:http";
import { TokenService } from "../lib/auth/jwt";
import { listenShared } from "../lib/http/listen";
import { createRedis } from "../lib/storage/redis";
import { activityKeys } from "../lib/domain/seckill";
import { leanKeys } from "./lean-keys";

type ReserveRedis = ReturnType<typeof createRedis> & {
	seckillReserve(...args: (string | number)[]): Promise<[number, number, number]>;
	leanStock(stock: string, buyers: string, userId: number): Promise<number>;
};

/** The lean ceiling's decision: 1 won, 0 sold out, 2 bought already. */
const LEAN_STOCK_LUA = `
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 2 end
if tonumber(redis.call('GET', KEYS[1]) or '0') <= 0 then return 0 end
redis.call('DECR', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[1])
return 1`;

const workers = Number(process.env.BENCH_WORKERS ?? 1);
if (workers > 1 && cluster.isPrimary) {
	let listening = 0;
	cluster.on(
		"message",
		(_worker, message) => message === "listening" && ++listening === workers && console.log("ceiling listening")
	);
	for (let i = 0; i < workers; i++) cluster.fork();
	process.on("SIGTERM", () => {
		for (const w of Object.values(cluster.workers ?? {})) w?.process.kill("SIGTERM");
		process.exit(0);
	});
} else serve();

function serve(): void {
	const env = (k: string) => {
		const v = process.env[k];
		if (v === undefined) throw new Error(`${k} is not set`);
		return v;
	};

	const lean = process.env.BENCH_CEILING === "lean";
	// The mall's gateway remembers verified tokens (jwt.verify_cache_size); the lean ceiling too.
	const tokens = new TokenService(env("BENCH_JWT_SECRET"), 3600, lean ? 10000 : 0);
	const redis = createRedis(
		{ url: env("BENCH_REDIS_URL"), cluster_nodes: [] },
		env("BENCH_NAMESPACE"),
		{ seckillReserve: { file: "seckill_reserve.lua", numberOfKeys: 6 } },
		"bench-ceiling"
	) as ReserveRedis;
	redis.defineCommand("leanStock", { numberOfKeys: 2, lua: LEAN_STOCK_LUA });
	const k = activityKeys(env("BENCH_ARMING"));
	const lk = leanKeys(env("BENCH_ARMING"));
	let n = 0;

	const send = (res: http.ServerResponse, status: number, body: unknown) => {
		res.writeHead(status, { "Content-Type": "application/json; charset=utf-8" });
		res.end(JSON.stringify(body));
	};

	const server = http.createServer((req, res) => {
		const chunks: Buffer[] = [];
		req.on("data", c => chunks.push(c));
		req.on("end", () => {
			let productId: number;
			try {
				productId = Number(JSON.parse(Buffer.concat(chunks).toString("utf8")).product_id);
			} catch {
				return send(res, 400, { code: 400, message: "malformed JSON body", data: null, trace_id: null });
			}
			if (!Number.isSafeInteger(productId) || productId <= 0)
				return send(res, 400, { code: 400, message: "validation failed", data: null, trace_id: null });
			const header = req.headers.authorization ?? "";
			const user = tokens.verify(header.startsWith("Bearer ") ? header.slice(7) : "");
			if (typeof user === "string") return send(res, 401, { code: 401, message: user, data: null, trace_id: null });
			const traceId = (++n).toString(16).padStart(32, "0");
			const decided = lean
				? redis.leanStock(lk.stock, lk.buyers, user.id).then(code => [code])
				: redis.seckillReserve(k.info, k.bought, k.seqs, k.resv, k.last, k.tokens, user.id, `${process.pid}${n}`, "");
			decided.then(
				([code]) =>
					send(res, code === 1 ? 200 : 409, {
						code: code === 1 ? 0 : code === 2 ? 60004 : 60003,
						message: code === 1 ? "success" : code === 2 ? "limit reached" : "sold out",
						data: null,
						trace_id: traceId
					}),
				() => send(res, 503, { code: 503, message: "unavailable", data: null, trace_id: traceId })
			);
		});
	});

	const sockets = Number(process.env.BENCH_LISTEN_SOCKETS ?? 1);
	void listenShared(server, { port: Number(env("BENCH_PORT")), host: "127.0.0.1", sockets, checkFree: false }).then(
		() => (cluster.isWorker ? process.send!("listening") : console.log("ceiling listening"))
	);
	process.on("SIGTERM", () => {
		server.close();
		redis.disconnect();
		process.exit(0);
	});
}
