import amqp from "amqplib";
import { names } from "../../lib/messaging/topology";
import { startMall, TestMall } from "../helpers/node";
import { eventually } from "../helpers/proc";

// Orders wait 2 s for payment; the periodic sweep is off, so a close can only come from RabbitMQ.
let mall: TestMall;
let admin: string;

beforeAll(async () => {
	mall = await startMall({ order: { pay_timeout: 2, sweep_interval: 0 } });
	admin = await mall.http.adminToken();
});
afterAll(() => mall?.stop());

const db = () => (mall.node.broker.getLocalService("order") as any).adapter.db;

async function product(stock: number) {
	return (await mall.http.post("/api/product", { name: "Timed", price: 5, stock }, admin)).body.data as { id: number };
}

async function query<T = any>(sql: string): Promise<T[]> {
	const [rows] = await db().query(sql);
	return rows;
}

const statusOf = async (no: string) => (await query(`SELECT status FROM orders WHERE order_no = '${no}'`))[0].status;
const stockOf = async (id: number) => (await query(`SELECT stock FROM products WHERE id = ${id}`))[0].stock;

describe("closing unpaid orders", () => {
	it("closes an unpaid order through the RabbitMQ delay queue and returns its stock", async () => {
		const u = await mall.http.newUser();
		const p = await product(3);
		const no = (await mall.http.post("/api/order", { product_id: p.id, quantity: 2 }, u.token)).body.data.order_no;
		expect(await stockOf(p.id)).toBe(1);
		await eventually(async () => (await statusOf(no)) === 5, 10000, 100);
		expect(await stockOf(p.id)).toBe(3);
		const pay = await mall.http.post(`/api/order/${no}/pay`, { pay_type: 1 }, u.token);
		expect([pay.status, pay.body.code]).toEqual([409, 30006]);
	});

	it("has the sweep close an order whose delay message was lost", async () => {
		const u = await mall.http.newUser();
		const p = await product(1);
		const no = (await mall.http.post("/api/order", { product_id: p.id, quantity: 1 }, u.token)).body.data.order_no;
		const conn = await amqp.connect(mall.cfg.amqp.url);
		const ch = await conn.createChannel();
		const { messageCount } = await ch.purgeQueue(names(mall.cfg.namespace).payTimeoutQueue(2000));
		await conn.close();
		expect(messageCount).toBe(1);
		await new Promise(r => setTimeout(r, 3000));
		expect(await statusOf(no)).toBe(1); // nothing closed it...
		expect(await mall.node.broker.call("order.sweep")).toEqual({ closed: 1 }); // ...until the sweep
		expect(await statusOf(no)).toBe(5);
		expect(await stockOf(p.id)).toBe(1);
	});

	it("lets exactly one of pay and close win for each of 100 racing orders; the stock sums hold", async () => {
		const initial = 150;
		const p = await product(initial);
		const buyers = await Promise.all(Array.from({ length: 100 }, () => mall.http.newUser("race")));
		const orders = await Promise.all(
			buyers.map(async b => {
				const no = (await mall.http.post("/api/order", { product_id: p.id, quantity: 1 }, b.token)).body.data
					.order_no as string;
				// The answer comes after the row was written: its deadline is at most 2 s from now.
				return { b, no, answeredAt: Date.now() };
			})
		);
		// Pay across each order's own deadline, from 1 s before it to 1 s after: under load the 100
		// orders are written over seconds, so one start time for all would put every pay past
		// the deadlines of the first ones (or before those of the last).
		const pays = await Promise.all(
			orders.map(async ({ b, no, answeredAt }, i) => {
				const payAt = answeredAt + 2000 + (i - 50) * 20;
				await new Promise(r => setTimeout(r, Math.max(0, payAt - Date.now())));
				return { no, r: await mall.http.post(`/api/order/${no}/pay`, { pay_type: 1 }, b.token) };
			})
		);
		await eventually(
			async () => (await query(`SELECT COUNT(*) AS n FROM orders WHERE product_id = ${p.id} AND status = 1`))[0].n == 0,
			15000,
			200
		);

		let paid = 0;
		for (const { no, r } of pays) {
			const status = await statusOf(no);
			if (r.status === 200) {
				expect(status).toBe(2);
				paid++;
			} else {
				expect([r.status, r.body.code, status]).toEqual([409, 30006, 5]);
			}
		}
		expect(paid).toBeGreaterThan(0);
		expect(paid).toBeLessThan(100);
		const [{ live }] = await query(`SELECT COUNT(*) AS live FROM orders WHERE product_id = ${p.id} AND status <> 5`);
		expect(Number(live)).toBe(paid);
		expect((await stockOf(p.id)) + Number(live)).toBe(initial);
	});
});
