/**
 * Moleculer's retry replays an action whose reply timed out. For an action that changed
 * something before the timeout (a payment, a cancel, a delete), the replay answers an error
 * for what succeeded ("already paid", "not found"). Here the reply of each is made late on
 * purpose, with retries on as in production, and the action must run once.
 */
import { startMall, TestMall } from "../helpers/node";
import { sql } from "../helpers/seckill";

let mall: TestMall;
let admin: string;

beforeAll(async () => {
	mall = await startMall({
		broker: { retry: { enabled: true, retries: 2, delay: 10, max_delay: 50 }, request_timeout: 1500 }
	});
	admin = await mall.http.adminToken();
});
afterAll(() => mall?.stop());

/** Makes `method` of `service` answer 2 s after it finished: past the 1.5 s request timeout. */
function slowReply(service: string, method: string): { calls: () => number; restore: () => void } {
	const svc = mall.node.broker.getLocalService(service) as any;
	const original = svc[method];
	let calls = 0;
	svc[method] = async (...args: unknown[]) => {
		calls++;
		const result = await original.apply(svc, args);
		await new Promise(r => setTimeout(r, 2000));
		return result;
	};
	return { calls: () => calls, restore: () => (svc[method] = original) };
}

async function pendingOrder(): Promise<{ token: string; no: string; productId: number }> {
	const user = await mall.http.newUser("late");
	const product = await mall.http.post("/api/product", { name: "Late reply", price: 5, stock: 10 }, admin);
	const order = await mall.http.post("/api/order", { product_id: product.body.data.id, quantity: 1 }, user.token);
	expect(order.status).toBe(200);
	return { token: user.token, no: order.body.data.order_no, productId: product.body.data.id };
}

describe("an action whose reply came too late is not run again", () => {
	it("pay: runs once, and the answer is never 'already paid'", async () => {
		const { token, no } = await pendingOrder();
		const slow = slowReply("order", "payOrder");
		try {
			const r = await mall.http.post(`/api/order/${no}/pay`, { pay_type: 1 }, token);
			expect(r.body.code).not.toBe(30007);
			expect(slow.calls()).toBe(1);
		} finally {
			slow.restore();
		}
		const [row] = await sql(mall, "SELECT status FROM orders WHERE order_no = ?", [no]);
		expect(Number(row.status)).toBe(2);
	});

	it("cancel: runs once, and the answer is never 'closed'", async () => {
		const { token, no } = await pendingOrder();
		const slow = slowReply("order", "closeOrder");
		try {
			const r = await mall.http.post(`/api/order/${no}/cancel`, {}, token);
			expect(r.body.code).not.toBe(30006);
			expect(slow.calls()).toBe(1);
		} finally {
			slow.restore();
		}
	});

	it("product remove: runs once, and the answer is never 'not found'", async () => {
		const productId = (await mall.http.post("/api/product", { name: "Removed late", price: 5, stock: 1 }, admin)).body
			.data.id;
		const svc = mall.node.broker.getLocalService("product") as any;
		const model = svc.model;
		const destroy = model.destroy.bind(model);
		let calls = 0;
		model.destroy = async (...args: unknown[]) => {
			calls++;
			const n = await destroy(...args);
			await new Promise(r => setTimeout(r, 2000));
			return n;
		};
		try {
			const r = await mall.http.del(`/api/product/${productId}`, undefined, admin);
			expect(r.body.code).not.toBe(20001);
			expect(calls).toBe(1);
		} finally {
			model.destroy = destroy;
		}
	});
});
