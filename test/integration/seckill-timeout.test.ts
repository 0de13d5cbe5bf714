import { startMall, TestMall } from "../helpers/node";
import { eventually } from "../helpers/proc";
import { arm, buy, counts, drained, exec, expectInvariant, makeBuyers, newProduct, sql } from "../helpers/seckill";

// Unpaid orders close after 2 s, through the RabbitMQ delay queue only (no sweep).
let mall: TestMall;
let admin: string;

beforeAll(async () => {
	mall = await startMall({ order: { pay_timeout: 2, sweep_interval: 0 } });
	admin = await mall.http.adminToken();
});
afterAll(() => mall?.stop());

it("gives the unit of an unpaid flash-sale order, closed by timeout, to the next buyer; exactly once", async () => {
	const pid = await newProduct(mall, admin);
	const activity = await arm(mall, admin, { product_id: pid, stock: 1 });
	const [first, second] = await makeBuyers(mall, 2, "timeout");
	const won = await buy(mall, first, pid);
	expect(won.status).toBe(200);
	await drained(mall, activity.id);
	expect((await buy(mall, second, pid)).body.code).toBe(60003);

	await eventually(
		async () =>
			(await sql(mall, "SELECT status FROM orders WHERE order_no = ?", [won.body.data.order_no]))[0].status === 5,
		10000,
		100
	);
	// The unit and the first buyer's slot are back in Redis and MySQL...
	await eventually(async () => (await counts(mall, activity.id)).redisRemaining === 1, 5000, 100);
	expect(await counts(mall, activity.id)).toMatchObject({
		redisRemaining: 1,
		reservations: 0,
		dbStock: 1,
		liveOrders: 0,
		orders: 1
	});
	// ...and every node has dropped its sold-out flag: the next buyer gets it.
	await eventually(async () => (await buy(mall, second, pid)).status === 200, 5000, 100);
	const c = await drained(mall, activity.id);
	expect(c).toMatchObject({ redisRemaining: 0, reservations: 1, dbStock: 0, liveOrders: 1, orders: 2 });
	expectInvariant(c);
	// A late pay for the closed order is refused, and nothing moves twice.
	const pay = await mall.http.post(`/api/order/${won.body.data.order_no}/pay`, { pay_type: 1 }, first.token);
	expect([pay.status, pay.body.code]).toEqual([409, 30006]);
	await mall.node.broker.call("stock.release", { arming_id: activity.arming_id, order_no: won.body.data.order_no });
	expectInvariant(await counts(mall, activity.id));
});

it("reconciliation releases the reservation of a closed order whose release was lost", async () => {
	const pid = await newProduct(mall, admin);
	const activity = await arm(mall, admin, { product_id: pid, stock: 2 });
	const [b] = await makeBuyers(mall, 1, "lostrelease");
	await buy(mall, b, pid);
	await drained(mall, activity.id);
	// Close it behind the stock actor's back: as if the node died between commit and release.
	await exec(mall, "UPDATE orders SET status = 5 WHERE activity_id = ?", [activity.id]);
	await exec(mall, "UPDATE seckill_activities SET stock = stock + 1 WHERE id = ?", [activity.id]);
	expect((await counts(mall, activity.id)).reservations).toBe(1);
	const report = (await mall.node.broker.call("stock.reconcile", { activity_id: activity.id })) as any;
	expect(report.activities[0]).toMatchObject({
		released_closed: 1,
		consistent: true,
		redis: { remaining: 2, reservations: 0 },
		db: { stock: 2, live_orders: 0 }
	});
});
