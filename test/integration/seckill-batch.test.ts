/**
 * One script call for a tick's reservations (lib/domain/seckill.ts BatchedReserver): the buyers
 * whose reservations are asked for in the same tick are decided by one seckill_reserve.lua
 * command, one after the other, each answered exactly as its own call would have been.
 */
import { activityKeys, parseReservation, SeckillResult } from "../../lib/domain/seckill";
import { startMall, TestMall } from "../helpers/node";
import { eventually } from "../helpers/proc";
import { arm, makeBuyers, newProduct, spyScript } from "../helpers/seckill";

let mall: TestMall;
let admin: string;

beforeAll(async () => {
	mall = await startMall();
	admin = await mall.http.adminToken();
});
afterAll(() => mall?.stop());

const stock = () => mall.node.broker.getLocalService("stock") as any;

const spyReserves = () => spyScript(stock().redis, "seckillReserve");

it("decides a tick's reservations in one command, each as if alone: wins, the limit, sold out, a resend", async () => {
	const pid = await newProduct(mall, admin);
	const activity = await arm(mall, admin, { product_id: pid, stock: 3, limit_per_user: 1 });
	const [a, b, c, d] = await makeBuyers(mall, 4, "batch");
	const no = (i: number) => `7${String(i).padStart(20, "0")}`;
	const spy = spyReserves();
	let answers: number[][];
	try {
		// In one tick: A, B, A again (another request), C (the last unit), D (none left), and B's
		// first request resent under its order number (a reply lost: answered as that win).
		answers = await Promise.all(
			[
				[a.id, no(1)],
				[b.id, no(2)],
				[a.id, no(3)],
				[c.id, no(4)],
				[d.id, no(5)],
				[b.id, no(2)]
			].map(([user, orderNo]) => stock().runReserve(activity.arming_id, user, orderNo))
		);
	} finally {
		spy.restore();
	}
	expect(spy.calls).toHaveLength(1);
	expect(answers!.map(r => r[0])).toEqual([
		SeckillResult.WON,
		SeckillResult.WON,
		SeckillResult.LIMIT,
		SeckillResult.WON,
		SeckillResult.SOLD_OUT,
		SeckillResult.WON
	]);
	// Stock left after each win, in the order decided; the resend answers its own win's sequence.
	expect([answers![0][2], answers![1][2], answers![3][2]]).toEqual([2, 1, 0]);
	expect(answers![5][1]).toBe(answers![1][1]);

	const k = activityKeys(activity.arming_id);
	const redis = stock().redis;
	const resv = Object.entries((await redis.hgetall(k.resv)) as Record<string, string>).map(([n, v]) =>
		parseReservation(n, v)
	);
	expect(resv.map(r => [r!.order_no, r!.user_id]).sort()).toEqual([
		[no(1), a.id],
		[no(2), b.id],
		[no(4), c.id]
	]);
	expect(Number(await redis.hget(k.info, "stock"))).toBe(0);
	expect(await redis.hgetall(k.bought)).toEqual({ [a.id]: "1", [b.id]: "1", [c.id]: "1" });
});

it("sends each arming's reservations in a command of their own", async () => {
	const [p1, p2] = [await newProduct(mall, admin), await newProduct(mall, admin)];
	const [s1, s2] = [
		await arm(mall, admin, { product_id: p1, stock: 2 }),
		await arm(mall, admin, { product_id: p2, stock: 2 })
	];
	const buyers = await makeBuyers(mall, 2, "batch2");
	const spy = spyReserves();
	let answers: number[][];
	try {
		answers = await Promise.all(
			buyers.flatMap((u, i) => [
				stock().runReserve(s1.arming_id, u.id, `8${String(i).padStart(20, "0")}`),
				stock().runReserve(s2.arming_id, u.id, `9${String(i).padStart(20, "0")}`)
			])
		);
	} finally {
		spy.restore();
	}
	expect(spy.calls).toHaveLength(2);
	expect(answers!.every(r => r[0] === SeckillResult.WON)).toBe(true);
	for (const s of [s1, s2]) {
		const k = activityKeys(s.arming_id);
		expect(Number(await stock().redis.hget(k.info, "stock"))).toBe(0);
		expect(await stock().redis.hlen(k.resv)).toBe(2);
	}
});

it("runs a sale's opening at once: more reservations than the broker's bulkhead allows any action are in flight together", async () => {
	// The broker's bulkhead (broker.bulkhead.concurrency, 100 by default) is for actions that
	// hold a database connection or the CPU; a reservation waits on a tick's script and a
	// publisher's confirm, and stock.seckill has its own (seckill.concurrency).
	const broker = mall.node.broker;
	expect(mall.cfg.broker.bulkhead.concurrency).toBeLessThan(300);
	const pid = await newProduct(mall, admin, { stock: 300 });
	await arm(mall, admin, { product_id: pid, stock: 300 });
	const buyers = await makeBuyers(mall, 300, "opening");
	// Every buyer's request in one turn, as a gateway passes on a turn's requests.
	const calls = buyers.map(b =>
		broker.call<{ order_no?: string }, { product_id: number }>(
			"stock.seckill",
			{ product_id: pid },
			{ meta: { user: { id: b.id, role: 1, sid: "s" } } }
		)
	);
	const labels = { service: "stock", action: "stock.seckill" };
	const gauge = (name: string) => broker.metrics.getMetric(name)?.get(labels)?.value;
	const [inFlight, queued] = [
		gauge("moleculer.request.bulkhead.inflight"),
		gauge("moleculer.request.bulkhead.queue.size")
	];
	const answers = await Promise.all(calls);
	expect({ inFlight, queued }).toEqual({ inFlight: 300, queued: 0 });
	expect(answers.filter(a => a.order_no)).toHaveLength(300);
});

it("reads a sale's activity from Redis once for a whole opening's first requests, and again after a re-arming", async () => {
	const pid = await newProduct(mall, admin, { stock: 10 });
	const first = await arm(mall, admin, { product_id: pid, stock: 10 });
	const redis = stock().redis;
	const get = redis.get;
	let reads = 0;
	let gate: Promise<void> | null = null;
	redis.get = (...args: unknown[]) => {
		reads++;
		// A read sent while the gate is closed keeps its answer until it opens: a read overtaken
		// by a re-arming and the read that follows it.
		const held = gate;
		return get.apply(redis, args).then((v: unknown) => (held ? held.then(() => v) : v));
	};
	try {
		// As if the stock actor had not seen the sale yet (its read at seckill.armed done and
		// forgotten): every request of the opening's first turn misses.
		await eventually(async () => stock().metas.get(pid)?.arming === first.arming_id, 2000, 5);
		stock().forgetActivity(pid);
		const metas = await Promise.all(Array.from({ length: 50 }, () => stock().activityFor(pid)));
		expect(reads).toBe(1);
		expect(new Set(metas.map(m => m?.arming))).toEqual(new Set([first.arming_id]));
		// Armed again while a read is on its way: that read's answer is not kept.
		let open!: () => void;
		gate = new Promise(r => (open = r));
		stock().forgetActivity(pid);
		const overtaken = stock().activityFor(pid);
		gate = null;
		await new Promise(r => setTimeout(r, 20));
		// The re-arming's own read (seckill.armed) answers first; the overtaken one after it.
		const second = await arm(mall, admin, { product_id: pid, stock: 10 });
		await eventually(async () => stock().metas.get(pid)?.arming === second.arming_id, 2000, 5);
		open();
		expect((await overtaken)?.arming).not.toBe(second.arming_id);
		expect((await stock().activityFor(pid))?.arming).toBe(second.arming_id);
	} finally {
		redis.get = get;
	}
});

it("knows a sale once it is armed, before its first buyer asks", async () => {
	const pid = await newProduct(mall, admin, { stock: 10 });
	const activity = await arm(mall, admin, { product_id: pid, stock: 10 });
	// seckill.armed reached this node's stock actor: it read the sale, no request needed.
	await eventually(async () => stock().metas.get(pid)?.arming === activity.arming_id, 2000, 10);
});
