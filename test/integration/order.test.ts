import { startMall, TestMall } from "../helpers/node";

let mall: TestMall;
let admin: string;

beforeAll(async () => {
	mall = await startMall();
	admin = await mall.http.adminToken();
});
afterAll(() => mall?.stop());

async function product(body: Record<string, unknown> = {}) {
	const r = await mall.http.post("/api/product", { name: "Console", price: 299.99, stock: 10, ...body }, admin);
	expect(r.status).toBe(200);
	return r.body.data as { id: number };
}

async function stockOf(id: number): Promise<number> {
	const [[row]] = (await db().query(`SELECT stock FROM products WHERE id = ${Number(id)}`)) as any;
	return row.stock;
}

async function orderCount(productId: number, where = "1=1"): Promise<number> {
	const [[row]] = (await db().query(
		`SELECT COUNT(*) AS n FROM orders WHERE product_id = ${Number(productId)} AND ${where}`
	)) as any;
	return Number(row.n);
}

const db = () => (mall.node.broker.getLocalService("order") as any).adapter.db;

describe("POST /api/order", () => {
	it("creates a pending order and moves the stock in the same transaction", async () => {
		const u = await mall.http.newUser();
		const p = await product({ price: 19.99, stock: 5, image_url: "https://img/c.png" });
		const r = await mall.http.post("/api/order", { product_id: p.id, quantity: 3 }, u.token);
		expect(r.status).toBe(200);
		expect(r.body.data).toEqual({
			id: expect.any(Number),
			order_no: expect.stringMatching(/^\d{24}$/),
			user_id: u.id,
			product_id: p.id,
			product_name: "Console",
			product_image: "https://img/c.png",
			quantity: 3,
			total_price: 59.97,
			status: 1,
			pay_type: 0,
			created_at: expect.any(String),
			updated_at: expect.any(String)
		});
		expect(await stockOf(p.id)).toBe(2);
	});

	it("refuses with the SPEC's codes and moves nothing", async () => {
		const u = await mall.http.newUser();
		const p = await product({ stock: 2 });
		const empty = await product({ stock: 0 });
		const off = await product({ status: 0 });
		const cases: [unknown, number, number][] = [
			[{ product_id: 99999999, quantity: 1 }, 404, 20001],
			[{ product_id: off.id, quantity: 1 }, 400, 20002],
			[{ product_id: empty.id, quantity: 1 }, 409, 20003],
			[{ product_id: p.id, quantity: 3 }, 409, 20004],
			[{ product_id: p.id, quantity: 0 }, 400, 400],
			[{ product_id: p.id }, 400, 400],
			[{ product_id: "x", quantity: 1 }, 400, 400]
		];
		for (const [body, status, code] of cases) {
			const r = await mall.http.post("/api/order", body, u.token);
			expect({ body, status: r.status, code: r.body.code }).toEqual({ body, status, code });
		}
		expect(await stockOf(p.id)).toBe(2);
		expect(await orderCount(p.id)).toBe(0);
	});

	it("sells exactly the stock to 200 concurrent buyers over HTTP, never below zero", async () => {
		const p = await product({ stock: 50 });
		const buyers = await Promise.all(Array.from({ length: 200 }, () => mall.http.newUser("buyer")));
		const results = await Promise.all(
			buyers.map(b => mall.http.post("/api/order", { product_id: p.id, quantity: 1 }, b.token))
		);
		const ok = results.filter(r => r.status === 200);
		expect(ok).toHaveLength(50);
		expect(
			results.filter(r => r.status !== 200).every(r => r.status === 409 && [20003, 20004].includes(r.body.code))
		).toBe(true);
		expect(new Set(ok.map(r => r.body.data.order_no)).size).toBe(50);
		expect(await stockOf(p.id)).toBe(0);
		expect(await orderCount(p.id)).toBe(50);
	});
});

describe("POST /api/order/checkout", () => {
	it("turns every cart line into an order and empties the cart", async () => {
		const u = await mall.http.newUser();
		const [a, b] = [await product({ price: 10, stock: 5 }), await product({ price: 2.5, stock: 5 })];
		await mall.http.post("/api/cart", { product_id: a.id, quantity: 2 }, u.token);
		await mall.http.post("/api/cart", { product_id: b.id, quantity: 3 }, u.token);
		const r = await mall.http.post("/api/order/checkout", undefined, u.token);
		expect(r.status).toBe(200);
		expect(r.body.data.orders).toHaveLength(2);
		expect(r.body.data.total_price).toBe(27.5);
		expect([await stockOf(a.id), await stockOf(b.id)]).toEqual([3, 2]);
		expect((await mall.http.get("/api/cart", u.token)).body.data.items).toEqual([]);
	});

	it("is all or nothing: one short line writes no order, moves no stock and keeps the cart", async () => {
		const u = await mall.http.newUser();
		const [a, b] = [await product({ stock: 10 }), await product({ stock: 5 })];
		await mall.http.post("/api/cart", { product_id: a.id, quantity: 1 }, u.token);
		await mall.http.post("/api/cart", { product_id: b.id, quantity: 5 }, u.token);
		// Someone else buys 3 of b after the line was added: the cart line is now short.
		const other = await mall.http.newUser();
		expect((await mall.http.post("/api/order", { product_id: b.id, quantity: 3 }, other.token)).status).toBe(200);
		const r = await mall.http.post("/api/order/checkout", undefined, u.token);
		expect([r.status, r.body.code]).toEqual([409, 50007]);
		expect(r.body.data).toMatchObject({ product_id: b.id });
		expect([await stockOf(a.id), await stockOf(b.id)]).toEqual([10, 2]);
		expect(await orderCount(a.id)).toBe(0);
		expect((await mall.http.get("/api/cart", u.token)).body.data.items).toHaveLength(2);
	});

	it("refuses an empty cart with 50001 and an off-shelf line with 50009", async () => {
		const u = await mall.http.newUser();
		const empty = await mall.http.post("/api/order/checkout", undefined, u.token);
		expect([empty.status, empty.body.code]).toEqual([400, 50001]);
		const p = await product();
		await mall.http.post("/api/cart", { product_id: p.id, quantity: 1 }, u.token);
		await mall.http.put(`/api/product/${p.id}`, { status: 0 }, admin);
		const off = await mall.http.post("/api/order/checkout", undefined, u.token);
		expect([off.status, off.body.code]).toEqual([400, 50009]);
	});

	it("sells exactly the stock when 200 buyers check out at once", async () => {
		const p = await product({ stock: 50 });
		const buyers = await Promise.all(Array.from({ length: 200 }, () => mall.http.newUser("cart")));
		for (const b of buyers)
			expect((await mall.http.post("/api/cart", { product_id: p.id, quantity: 1 }, b.token)).status).toBe(200);
		const results = await Promise.all(buyers.map(b => mall.http.post("/api/order/checkout", undefined, b.token)));
		expect(results.filter(r => r.status === 200)).toHaveLength(50);
		expect(results.filter(r => r.status !== 200).every(r => r.body.code === 50007)).toBe(true);
		expect(await stockOf(p.id)).toBe(0);
		expect(await orderCount(p.id)).toBe(50);
	});
});

describe("list, detail, pay, cancel", () => {
	it("lists the caller's orders newest first, paged and filtered by status", async () => {
		const u = await mall.http.newUser();
		const p = await product({ stock: 20 });
		const nos: string[] = [];
		for (let i = 0; i < 12; i++)
			nos.push((await mall.http.post("/api/order", { product_id: p.id, quantity: 1 }, u.token)).body.data.order_no);
		await mall.http.post(`/api/order/${nos[0]}/pay`, { pay_type: 1 }, u.token);
		const page2 = await mall.http.get("/api/order?page=2&page_size=5", u.token);
		expect(page2.body.data).toMatchObject({ total: 12, page: 2, page_size: 5, total_page: 3 });
		expect(page2.body.data.list.map((o: { order_no: string }) => o.order_no)).toEqual(
			nos.slice().reverse().slice(5, 10)
		);
		const paid = await mall.http.get("/api/order?status=2", u.token);
		expect(paid.body.data.list.map((o: { order_no: string }) => o.order_no)).toEqual([nos[0]]);
		expect((await mall.http.get("/api/order?status=9", u.token)).status).toBe(400);
		for (const q of ["page=99999999999999999999", "page=1e308"])
			expect((await mall.http.get(`/api/order?${q}`, u.token)).body.code).toBe(400);
	});

	it("pays once: 30007 the second time; a paid order cannot be cancelled (30003)", async () => {
		const u = await mall.http.newUser();
		const p = await product({ stock: 3 });
		const no = (await mall.http.post("/api/order", { product_id: p.id, quantity: 1 }, u.token)).body.data.order_no;
		expect((await mall.http.post(`/api/order/${no}/pay`, { pay_type: 3 }, u.token)).status).toBe(400);
		const paid = await mall.http.post(`/api/order/${no}/pay`, { pay_type: 2 }, u.token);
		expect(paid.body.data).toMatchObject({ status: 2, pay_type: 2 });
		const again = await mall.http.post(`/api/order/${no}/pay`, { pay_type: 2 }, u.token);
		expect([again.status, again.body.code]).toEqual([409, 30007]);
		const cancel = await mall.http.post(`/api/order/${no}/cancel`, undefined, u.token);
		expect([cancel.status, cancel.body.code]).toEqual([409, 30003]);
		expect(await stockOf(p.id)).toBe(2);
	});

	it("cancels once, returning the stock exactly once; a closed order cannot be paid (30006)", async () => {
		const u = await mall.http.newUser();
		const p = await product({ stock: 3 });
		const no = (await mall.http.post("/api/order", { product_id: p.id, quantity: 2 }, u.token)).body.data.order_no;
		expect(await stockOf(p.id)).toBe(1);
		const cancels = await Promise.all(
			Array.from({ length: 5 }, () => mall.http.post(`/api/order/${no}/cancel`, undefined, u.token))
		);
		expect(cancels.filter(r => r.status === 200)).toHaveLength(1);
		expect(cancels.filter(r => r.status !== 200).every(r => r.body.code === 30006)).toBe(true);
		expect(await stockOf(p.id)).toBe(3);
		const pay = await mall.http.post(`/api/order/${no}/pay`, { pay_type: 1 }, u.token);
		expect([pay.status, pay.body.code]).toEqual([409, 30006]);
	});

	it("hides another buyer's order: detail, pay and cancel are 404; an admin sees it", async () => {
		const [owner, other] = [await mall.http.newUser(), await mall.http.newUser()];
		const p = await product({ stock: 3 });
		const no = (await mall.http.post("/api/order", { product_id: p.id, quantity: 1 }, owner.token)).body.data.order_no;
		for (const r of [
			await mall.http.get(`/api/order/${no}`, other.token),
			await mall.http.post(`/api/order/${no}/pay`, { pay_type: 1 }, other.token),
			await mall.http.post(`/api/order/${no}/cancel`, undefined, other.token),
			await mall.http.get("/api/order/123456789012345678901234", owner.token)
		]) {
			expect([r.status, r.body.code]).toEqual([404, 30001]);
		}
		expect((await mall.http.get(`/api/order/${no}`, owner.token)).body.data.status).toBe(1);
		expect((await mall.http.get(`/api/order/${no}`, admin)).body.data.order_no).toBe(no);
		expect((await mall.http.get(`/api/order/${no}`)).status).toBe(401);
		expect(await stockOf(p.id)).toBe(2);
	});
});
