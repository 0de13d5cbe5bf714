/**
 * `npm run bench:redis-cluster`: what the Redis Cluster and WAIT cost the flash-sale decision,
 * measured on the reservation script alone (no gateway, no queue), from one Node process
 * keeping BENCH_CONCURRENCY reservations in flight for BENCH_SECONDS, modes alternated
 * (A B C D, BENCH_ROUNDS times), medians printed:
 *   single        the one Redis on 127.0.0.1:6379 (the ceiling the others are compared with)
 *   cluster       a Redis Cluster started here (3 masters + 3 replicas), one hot activity
 *   cluster+WAIT  the same with WAIT 1 (redis.wait_replicas = 1): the stock actor's ReplicatedReserver
 *   cluster x3    three activities whose slots live on three different masters
 *   buckets 3, 6  one hot activity split into 3 and 6 stock buckets (README "stock buckets"),
 *                 tags chosen as arming chooses them (spread over the masters), each call on its
 *                 buyer's home bucket; compared with "cluster" (the same activity in 1 bucket)
 * Stock is large enough that every call takes a unit (the costly path; no bucket runs dry, so
 * no lending: the steady state of a bucketed sale). Each run also reads the Redis CPU time it
 * cost (INFO used_cpu_user + used_cpu_sys of every master, before and after), per reservation.
 * Bounded: BENCH_SECONDS per run and at most BENCH_MAX_OPS reservations per run.
 */
import os from "node:os";
import { createRedis, redisKeyPrefix } from "../lib/storage/redis";
import Redis from "ioredis";
import { activityKeys, newArmingId, ReplicatedReserver, ReserveRedis } from "../lib/domain/seckill";
import { bucketKeys, BucketTags, chooseBucketTags, homeBucket } from "../lib/domain/seckill-buckets";
import { RedisCluster } from "../test/helpers/servers";

const num = (k: string, d: number) => Number(process.env[k] ?? d);
const SECONDS = num("BENCH_SECONDS", 5);
const ROUNDS = num("BENCH_ROUNDS", 3);
const CONCURRENCY = num("BENCH_CONCURRENCY", 64);
const MAX_OPS = num("BENCH_MAX_OPS", 2_000_000);
const NAMESPACE = `bench-rc-${process.pid}`;

interface Mode {
	name: string;
	redis: ReserveRedis;
	armings: string[];
	wait: number;
	reserver?: ReplicatedReserver;
	/** stock buckets of the (one) arming; absent: unbucketed */
	tags?: BucketTags;
	/** the masters whose CPU time the run costs */
	masters: () => Redis[];
}

interface Result {
	ops: number;
	p50: number;
	p99: number;
	refused: number;
	/** Redis CPU time (user + sys, all masters) per reservation, µs */
	cpuUs: number;
}

/** used_cpu_user + used_cpu_sys of each master, summed (seconds). */
async function redisCpu(masters: Redis[]): Promise<number> {
	const infos = await Promise.all(masters.map(m => m.info("cpu")));
	return infos.reduce((sum, info) => {
		const get = (k: string) => Number(new RegExp(`^${k}:([\\d.]+)`, "m").exec(info)?.[1] ?? 0);
		return sum + get("used_cpu_user") + get("used_cpu_sys");
	}, 0);
}

const reserveScript = { seckillReserve: { file: "seckill_reserve.lua", numberOfKeys: 6 } };

async function armAll(redis: ReserveRedis, armings: string[], tags?: BucketTags): Promise<void> {
	const now = Date.now();
	for (const a of armings)
		for (let b = 0; b < (tags?.length ?? 1); b++)
			await redis.hset(tags ? bucketKeys(a, tags, b).info : activityKeys(a).info, {
				stock: 1e9,
				start: now - 1000,
				end: now + 3600_000,
				limit: 1e9,
				active: 1
			});
}

async function run(mode: Mode): Promise<Result> {
	const latencies: number[] = [];
	let refused = 0;
	let n = 0;
	const masters = mode.masters();
	const cpuBefore = await redisCpu(masters);
	const started = Date.now();
	const end = started + SECONDS * 1000;
	const loop = async (i: number) => {
		const arming = mode.armings[i % mode.armings.length];
		let k = activityKeys(arming);
		// Each bucket's keys built once, as the single modes' are: the loop only picks one.
		const byBucket = mode.tags?.map((_, b) => bucketKeys(arming, mode.tags!, b));
		while (Date.now() < end && n < MAX_OPS) {
			const t = process.hrtime.bigint();
			const order = `${process.pid}${++n}`;
			const user = 1 + (n % 100000);
			if (byBucket) k = byBucket[homeBucket(user, byBucket.length)];
			const [code, , , acked] = mode.reserver
				? await mode.reserver.reserve(mode.armings[i % mode.armings.length], user, order)
				: [
						...(await mode.redis.seckillReserve(k.info, k.bought, k.seqs, k.resv, k.last, k.tokens, user, order, "")),
						0
					];
			if (code !== 1 || acked < mode.wait) refused++;
			latencies.push(Number(process.hrtime.bigint() - t) / 1e6);
		}
	};
	await Promise.all(Array.from({ length: CONCURRENCY }, (_, i) => loop(i)));
	const elapsed = (Date.now() - started) / 1000;
	const cpu = (await redisCpu(masters)) - cpuBefore;
	latencies.sort((a, b) => a - b);
	return {
		cpuUs: (cpu * 1e6) / Math.max(1, latencies.length),
		ops: latencies.length / elapsed,
		p50: latencies[Math.floor(latencies.length * 0.5)],
		p99: latencies[Math.floor(latencies.length * 0.99)],
		refused
	};
}

/** Arming ids until each of `count` lands on a different master. */
async function armingsOnDistinctMasters(rc: RedisCluster, count: number): Promise<string[]> {
	const byMaster = new Map<number, string>();
	while (byMaster.size < count) {
		const a = newArmingId();
		const m = await rc.masterOf(redisKeyPrefix(NAMESPACE) + activityKeys(a).info);
		if (!byMaster.has(m)) byMaster.set(m, a);
	}
	return [...byMaster.values()];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
	const rc = await new RedisCluster().start();
	const single = createRedis(
		{ url: process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379", cluster_nodes: [] },
		NAMESPACE,
		reserveScript,
		"bench-single"
	) as ReserveRedis;
	const cluster = createRedis(
		{ url: "", cluster_nodes: rc.nodes },
		NAMESPACE,
		reserveScript,
		"bench-cluster"
	) as ReserveRedis;
	try {
		await new Promise<void>(resolve =>
			cluster.status === "ready" ? resolve() : cluster.once("ready", () => resolve())
		);
		const hot = [newArmingId()];
		const spread = await armingsOnDistinctMasters(rc, 3);
		const singleArming = [newArmingId()];
		await armAll(single, singleArming);
		await armAll(cluster, [...hot, ...spread]);
		const bucketed = [3, 6].map(n => {
			const a = newArmingId();
			return { n, armings: [a], tags: chooseBucketTags(cluster, a, n) };
		});
		for (const b of bucketed) await armAll(cluster, b.armings, b.tags);
		const clusterMasters = () => (cluster as unknown as { nodes(role: string): Redis[] }).nodes("master");
		const singleMasters = () => [single as unknown as Redis];
		const modes: Mode[] = [
			{ name: "single", redis: single, armings: singleArming, wait: 0, masters: singleMasters },
			{ name: "cluster", redis: cluster, armings: hot, wait: 0, masters: clusterMasters },
			{
				name: "cluster+WAIT",
				redis: cluster,
				armings: hot,
				wait: 1,
				reserver: new ReplicatedReserver(cluster, 1, 1000),
				masters: clusterMasters
			},
			{ name: "cluster x3", redis: cluster, armings: spread, wait: 0, masters: clusterMasters },
			...bucketed.map(b => ({
				name: `buckets ${b.n}`,
				redis: cluster,
				armings: b.armings,
				tags: b.tags,
				wait: 0,
				masters: clusterMasters
			}))
		];
		console.log(
			`Redis Cluster bench: ${os.cpus().length} cores, Node ${process.version}, ${CONCURRENCY} reservations in flight, ${SECONDS} s per run, ${ROUNDS} rounds; cluster of ${rc.nodes.length} redis-server processes on this machine`
		);
		const results = new Map<string, Result[]>(modes.map(m => [m.name, []]));
		for (const m of modes) await run({ ...m }).catch(() => undefined); // warm-up
		for (let round = 1; round <= ROUNDS; round++) {
			for (const m of modes) {
				const r = await run(m);
				results.get(m.name)!.push(r);
				console.log(
					`round ${round}  ${m.name.padEnd(13)} ${r.ops.toFixed(0).padStart(7)} reservations/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  Redis CPU ${r.cpuUs.toFixed(1)} µs/reservation${r.refused ? `  refused ${r.refused}` : ""}`
				);
			}
		}
		const base = median(results.get("single")!.map(r => r.ops));
		console.log("median");
		for (const m of modes) {
			const rs = results.get(m.name)!;
			const ops = median(rs.map(r => r.ops));
			console.log(
				`  ${m.name.padEnd(13)} ${ops.toFixed(0).padStart(7)} reservations/s  (${(ops / base).toFixed(2)} of single)  p50 ${median(rs.map(r => r.p50)).toFixed(2)} ms  p99 ${median(rs.map(r => r.p99)).toFixed(2)} ms  Redis CPU ${median(rs.map(r => r.cpuUs)).toFixed(1)} µs/reservation`
			);
		}
		// Stock buckets: one hot activity in 1 ("cluster"), 3 and 6 buckets.
		const one = results.get("cluster")!;
		const oneOps = median(one.map(r => r.ops));
		const oneCpu = median(one.map(r => r.cpuUs));
		console.log("stock buckets (one hot activity on the 3-master cluster; ratios to 1 bucket)");
		for (const [name, label] of [
			["cluster", "1 bucket "],
			["buckets 3", "3 buckets"],
			["buckets 6", "6 buckets"]
		]) {
			const rs = results.get(name)!;
			const ops = median(rs.map(r => r.ops));
			const cpu = median(rs.map(r => r.cpuUs));
			console.log(
				`  ${label} ${ops.toFixed(0).padStart(7)} reservations/s (x${(ops / oneOps).toFixed(2)})  Redis CPU ${cpu.toFixed(1)} µs/reservation (x${(cpu / oneCpu).toFixed(2)})`
			);
		}
		for (const a of singleArming) await single.del(...Object.values(activityKeys(a)));
	} finally {
		single.disconnect();
		cluster.disconnect();
		await rc.stop();
	}
}

main().catch(err => {
	console.error(err);
	process.exit(1);
});
