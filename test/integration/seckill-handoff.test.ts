/**
 * The hand-off's edges, each made to happen: concurrent armings of one product, two processes
 * making the same order number, a reservation whose message fails for good, and two stock
 * nodes reconciling at once.
 */
import { createRedis } from "../../lib/storage/redis";
import { activityKeys, parseReservation } from "../../lib/domain/seckill";
import { LeasedWorkerId, WORKER_ID_KEY } from "../../lib/domain/order-no";
import { GomallNode, startNode } from "../../bootstrap/node";
import { startMall, TestMall } from "../helpers/node";
import { eventually } from "../helpers/proc";
import { arm, buy, counts, drained, exec, expectInvariant, makeBuyers, newProduct, sql } from "../helpers/seckill";

let mall: TestMall;
let admin: string;
const extra: GomallNode[] = [];

beforeAll(async () => {
	mall = await startMall({ seckill: { max_deliveries: 3 } });
	admin = await mall.http.adminToken();
});
afterAll(async () => {
	for (const n of extra) await n.shutdown();
	await mall?.stop();
});

const stock = () => mall.node.broker.getLocalService("stock") as any;

describe("arming", () => {
	it("lets exactly one of 20 concurrent inits of one product win; the others get a clean 409, and the sale is exact", async () => {
		const pid = await newProduct(mall, admin);
		// Twenty requests are only concurrent if the first is still arming when the last arrives;
		// under CI's load the first can finish before the last is sent, and the late one is then
		// a re-arm, not a conflict. So the winner holds its lease until the other 19 are refused.
		const svc = stock();
		const { armActivity, armLocked } = svc;
		let refusedSoFar = 0;
		let allRefused!: () => void;
		const othersDone = new Promise<void>(resolve => (allRefused = resolve));
		svc.armActivity = (...args: unknown[]) =>
			armActivity(...args).catch((err: unknown) => {
				if (++refusedSoFar === 19) allRefused();
				throw err;
			});
		svc.armLocked = async (...args: unknown[]) => {
			await Promise.race([othersDone, new Promise(resolve => setTimeout(resolve, 15000))]);
			return armLocked(...args);
		};
		let answers: { status: number; body: any }[];
		try {
			answers = await Promise.all(
				Array.from({ length: 20 }, () => mall.http.post("/api/seckill/init", { product_id: pid, stock: 5 }, admin))
			);
		} finally {
			svc.armActivity = armActivity;
			svc.armLocked = armLocked;
		}
		const won = answers.filter(r => r.status === 200);
		expect(won).toHaveLength(1);
		const refused = answers.filter(r => r.status !== 200);
		expect(refused.map(r => [r.status, r.body.code])).toEqual(Array(19).fill([409, 60009]));
		for (const r of refused) expect(r.body).toMatchObject({ data: null, trace_id: expect.any(String) });

		const live = await sql(mall, "SELECT arming_id FROM seckill_activities WHERE product_id = ? AND status = 1", [pid]);
		expect(live).toEqual([{ arming_id: won[0].body.data.arming_id }]);
		const all = await sql(mall, "SELECT COUNT(*) AS n FROM seckill_activities WHERE product_id = ?", [pid]);
		expect(Number(all[0].n)).toBe(1);

		const buyers = await makeBuyers(mall, 12, "arm20");
		const results = await Promise.all(buyers.map(b => buy(mall, b, pid)));
		expect(results.filter(r => r.status === 200)).toHaveLength(5);
		const c = await drained(mall, won[0].body.data.id);
		expect(c).toMatchObject({ orders: 5, redisRemaining: 0, dbStock: 0 });
		expectInvariant(c);

		// A re-arm after the first finished is no conflict: it replaces the sale.
		expect((await mall.http.post("/api/seckill/init", { product_id: pid, stock: 3 }, admin)).status).toBe(200);
	});
});

describe("order numbers", () => {
	it("never lets one reservation overwrite another's when two processes make the same number: the second is refused and retried", async () => {
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 10 });
		const [a, b] = await makeBuyers(mall, 2, "collide");
		const svc = stock();
		const real = svc.orderNos;
		// What two processes holding one worker id do: the same number twice in one millisecond.
		const same = real.next();
		const numbers = [same, same];
		svc.orderNos = { next: () => numbers.shift() ?? real.next(), stop: () => real.stop() };
		try {
			const first = await buy(mall, a, pid);
			const second = await buy(mall, b, pid);
			expect([first.status, second.status]).toEqual([200, 200]);
			expect(first.body.data.order_no).toBe(same);
			expect(second.body.data.order_no).not.toBe(same);
		} finally {
			svc.orderNos = real;
		}
		const c = await drained(mall, activity.id);
		expect(c).toMatchObject({ orders: 2, reservations: 2 });
		const owners = await sql(mall, "SELECT order_no, user_id FROM orders WHERE activity_id = ? ORDER BY user_id", [
			activity.id
		]);
		expect(owners.map(o => Number(o.user_id))).toEqual([a.id, b.id].sort((x, y) => x - y));
		expect(owners.find(o => Number(o.user_id) === a.id)!.order_no).toBe(same);
	});

	it("leases worker ids: two processes that start from the same counter value get different ids, and a released id is free again", async () => {
		const redis = createRedis(mall.cfg.redis, mall.cfg.namespace);
		try {
			await redis.set(WORKER_ID_KEY, "41");
			const one = new LeasedWorkerId(redis);
			const idOne = await one.start();
			await redis.set(WORKER_ID_KEY, "41");
			const two = new LeasedWorkerId(redis);
			const idTwo = await two.start();
			expect(idOne).toBe(42);
			expect(idTwo).not.toBe(idOne);
			await one.stop();
			await redis.set(WORKER_ID_KEY, "41");
			const three = new LeasedWorkerId(redis);
			expect(await three.start()).toBe(42);
			await Promise.all([two.stop(), three.stop()]);
		} finally {
			redis.disconnect();
		}
	});
});

describe("a reservation whose message fails for good", () => {
	it("is dead-lettered once, its buyer polls failed with the reason, reconciliation leaves it, and the operator's release counts once", async () => {
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 3 });
		// The order writer's guard refuses it: the activity's database stock is out of sync.
		await exec(mall, "UPDATE seckill_activities SET stock = 0 WHERE id = ?", [activity.id]);
		const [b] = await makeBuyers(mall, 1, "permfail");
		const won = await buy(mall, b, pid);
		expect(won.body.data).toMatchObject({ status: "queued" });
		const no = won.body.data.order_no;

		let poll: any;
		await eventually(async () => {
			poll = (await mall.http.get(`/api/seckill/result?product_id=${pid}`, b.token)).body.data;
			return poll.status !== "queued";
		}, 20000);
		expect(poll).toEqual({
			status: "failed",
			order_no: no,
			reason: `activity ${activity.id} has no database stock left`
		});

		const dlq = async () =>
			((await mall.node.broker.call("order.deadLetters", { queue: "seckill" })) as any).messages.filter(
				(m: any) => m.message_id === no
			).length;
		expect(await dlq()).toBe(1);
		for (let i = 0; i < 3; i++) {
			const report = ((await mall.node.broker.call("stock.reconcile", { activity_id: activity.id })) as any)
				.activities[0];
			expect(report).toMatchObject({ republished: [], requeued: [], unconfirmed: 0, failed: 1 });
		}
		expect(await dlq()).toBe(1);
		const failed = (await mall.node.broker.call("stock.failed", { activity_id: activity.id })) as any[];
		expect(failed).toEqual([
			expect.objectContaining({ order_no: no, user_id: b.id, reason: expect.stringContaining("no database stock") })
		]);

		// The operator gives the unit back: once.
		const release = () => mall.node.broker.call("stock.releaseFailed", { arming_id: activity.arming_id, order_no: no });
		await expect(release()).resolves.toEqual({ released: true });
		await expect(release()).rejects.toMatchObject({ type: "SECKILL_NOT_FAILED" });
		await exec(mall, "UPDATE seckill_activities SET stock = 3 WHERE id = ?", [activity.id]);
		const c = await counts(mall, activity.id);
		expect(c).toMatchObject({ redisRemaining: 3, reservations: 0, orders: 0 });
		expectInvariant(c);
	});
});

describe("reconciliation's restore", () => {
	it("does not put back the reservation of an order closed after the run read the orders", async () => {
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 5 });
		const [b] = await makeBuyers(mall, 1, "restoreclose");
		const no = (await buy(mall, b, pid)).body.data.order_no;
		await drained(mall, activity.id);
		// What the run read before the close: the order live.
		const [stale] = await sql(
			mall,
			"SELECT order_no, status, user_id, seckill_seq, created_at FROM orders WHERE order_no = ?",
			[no]
		);
		expect((await mall.http.post(`/api/order/${no}/cancel`, {}, b.token)).status).toBe(200);
		const report = { restored: [] as string[], orphan_orders: [] as string[] };
		await stock().restoreLostReservations(activity.arming_id, [stale], new Set(), report);
		expect(report).toEqual({ restored: [], orphan_orders: [] });
		const c = await counts(mall, activity.id);
		expect(c).toMatchObject({ redisRemaining: 5, reservations: 0, liveOrders: 0 });
		expectInvariant(c);
	});
});

describe("reconciliation across stock nodes", () => {
	it("runs one at a time across the cluster (a lease): of concurrent runs on two nodes one works, the other is refused", async () => {
		const other = await startNode(mall.cfg, ["stock"], { nodeID: `${mall.cfg.node_id}-stock2` });
		extra.push(other);
		const pid = await newProduct(mall, admin);
		const activity = await arm(mall, admin, { product_id: pid, stock: 400 });
		const buyers = await makeBuyers(mall, 400, "lease");
		await Promise.all(buyers.map(b => buy(mall, b, pid)));
		await drained(mall, activity.id);

		const node = (n: GomallNode) => n.broker.nodeID;
		const run = (n: GomallNode) =>
			n.broker.call("stock.reconcile", {}, { nodeID: node(n) }).then(
				() => "ran",
				(err: any) => (err.type === "SECKILL_RECONCILE_BUSY" ? "busy" : `error ${err.message}`)
			);
		const metric = (n: GomallNode, result: string) =>
			(n.broker.metrics.getMetric("gomall_seckill_reconcile_runs_total") as any)
				.snapshot()
				.find((s: any) => s.labels.result === result)?.value ?? 0;
		const runs = (result: string) => metric(mall.node, result) + metric(other, result);
		const [ranBefore, busyBefore] = [runs("ran"), runs("busy")];
		const outcomes: string[] = [];
		for (let i = 0; i < 5; i++) outcomes.push(...(await Promise.all([run(mall.node), run(other)])).sort());
		// Each pair: one ran while it held the lease, the other found it held.
		expect(outcomes).toEqual(Array(5).fill(["busy", "ran"]).flat());
		expect([runs("ran") - ranBefore, runs("busy") - busyBefore]).toEqual([5, 5]);
	});
});

it("parses every reservation state the scripts write", () => {
	for (const state of ["R", "P", "C", "O", "F"])
		expect(parseReservation("1", `7|1|1700000000000|${state}`)).toMatchObject({ state });
	expect(activityKeys("a".repeat(32)).failed).toContain("{sk:");
});
