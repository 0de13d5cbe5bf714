import { startMall, TestMall } from "../helpers/node";

let mall: TestMall;
let admin: string;

beforeAll(async () => {
	mall = await startMall();
	admin = await mall.http.adminToken();
});
afterAll(() => mall?.stop());

async function product(body: Record<string, unknown> = {}) {
	const r = await mall.http.post(
		"/api/product",
		{ name: "Widget", price: 19.99, stock: 10, image_url: "https://img/w.png", ...body },
		admin
	);
	expect(r.status).toBe(200);
	return r.body.data as { id: number };
}

describe("cart", () => {
	// product_price duplicates price for the Go version's web client (README, "The Go version's web client").
	it("adds to an existing line and lists a product snapshot with exact totals", async () => {
		const u = await mall.http.newUser();
		const a = await product({ price: 19.99 });
		const b = await product({ name: "Gadget", price: 0.1 });
		expect((await mall.http.post("/api/cart", { product_id: a.id, quantity: 1 }, u.token)).body.data).toEqual({
			product_id: a.id,
			quantity: 1
		});
		expect((await mall.http.post("/api/cart", { product_id: a.id, quantity: 2 }, u.token)).body.data).toEqual({
			product_id: a.id,
			quantity: 3
		});
		await mall.http.post("/api/cart", { product_id: b.id, quantity: 2 }, u.token);
		const r = await mall.http.get("/api/cart", u.token);
		expect(r.status).toBe(200);
		expect(r.body.data).toEqual({
			items: [
				{
					id: expect.any(Number),
					product_id: a.id,
					product_name: "Widget",
					price: 19.99,
					product_price: 19.99,
					product_image: "https://img/w.png",
					quantity: 3,
					sub_total: 59.97
				},
				{
					id: expect.any(Number),
					product_id: b.id,
					product_name: "Gadget",
					price: 0.1,
					product_price: 0.1,
					product_image: "https://img/w.png",
					quantity: 2,
					sub_total: 0.2
				}
			],
			total_count: 5,
			total_price: 60.17
		});
	});

	it("updates, removes by body or query, and clears", async () => {
		const u = await mall.http.newUser();
		const [a, b, c] = [await product(), await product(), await product()];
		for (const p of [a, b, c]) await mall.http.post("/api/cart", { product_id: p.id, quantity: 1 }, u.token);
		expect((await mall.http.put("/api/cart", { product_id: a.id, quantity: 7 }, u.token)).body.data.quantity).toBe(7);
		expect((await mall.http.del("/api/cart", { product_id: b.id }, u.token)).status).toBe(200);
		expect((await mall.http.request("DELETE", `/api/cart?product_id=${c.id}`, { token: u.token })).status).toBe(200);
		let cart = await mall.http.get("/api/cart", u.token);
		expect(cart.body.data.items.map((i: { product_id: number }) => i.product_id)).toEqual([a.id]);
		expect((await mall.http.del("/api/cart/clear", undefined, u.token)).status).toBe(200);
		cart = await mall.http.get("/api/cart", u.token);
		expect(cart.body.data).toEqual({ items: [], total_count: 0, total_price: 0 });
	});

	it("keeps each buyer's cart to themselves", async () => {
		const [u1, u2] = [await mall.http.newUser(), await mall.http.newUser()];
		const p = await product();
		await mall.http.post("/api/cart", { product_id: p.id, quantity: 2 }, u1.token);
		expect((await mall.http.get("/api/cart", u2.token)).body.data.items).toEqual([]);
		const r = await mall.http.del("/api/cart", { product_id: p.id }, u2.token);
		expect([r.status, r.body.code]).toEqual([404, 50002]);
		expect((await mall.http.get("/api/cart", u1.token)).body.data.total_count).toBe(2);
	});

	it("refuses bad input with the SPEC's codes and changes nothing", async () => {
		const u = await mall.http.newUser();
		const p = await product({ stock: 5 });
		const off = await product({ status: 0 });
		await mall.http.post("/api/cart", { product_id: p.id, quantity: 4 }, u.token);
		const cases: [string, () => Promise<any>, number, number][] = [
			["quantity 0", () => mall.http.post("/api/cart", { product_id: p.id, quantity: 0 }, u.token), 400, 400],
			["quantity 1000", () => mall.http.post("/api/cart", { product_id: p.id, quantity: 1000 }, u.token), 400, 400],
			[
				"unknown product",
				() => mall.http.post("/api/cart", { product_id: 99999999, quantity: 1 }, u.token),
				404,
				20001
			],
			["off shelf", () => mall.http.post("/api/cart", { product_id: off.id, quantity: 1 }, u.token), 400, 50009],
			["add beyond stock", () => mall.http.post("/api/cart", { product_id: p.id, quantity: 2 }, u.token), 409, 50007],
			["set beyond stock", () => mall.http.put("/api/cart", { product_id: p.id, quantity: 6 }, u.token), 409, 50007],
			[
				"update a missing line",
				() => mall.http.put("/api/cart", { product_id: off.id, quantity: 1 }, u.token),
				400,
				50009
			],
			["remove a missing line", () => mall.http.del("/api/cart", { product_id: 99999999 }, u.token), 404, 50002],
			["no token", () => mall.http.get("/api/cart"), 401, 401]
		];
		for (const [name, call, status, code] of cases) {
			const r = await call();
			expect({ name, status: r.status, code: r.body.code }).toEqual({ name, status, code });
		}
		const cart = await mall.http.get("/api/cart", u.token);
		expect(cart.body.data.items).toHaveLength(1);
		expect(cart.body.data.items[0].quantity).toBe(4);
	});

	it("gives 50002 when updating a line that is not in the cart", async () => {
		const u = await mall.http.newUser();
		const p = await product();
		const r = await mall.http.put("/api/cart", { product_id: p.id, quantity: 1 }, u.token);
		expect([r.status, r.body.code]).toEqual([404, 50002]);
	});

	it("drops the line of a deleted product", async () => {
		const u = await mall.http.newUser();
		const p = await product();
		await mall.http.post("/api/cart", { product_id: p.id, quantity: 1 }, u.token);
		await mall.http.del(`/api/product/${p.id}`, undefined, admin);
		expect((await mall.http.get("/api/cart", u.token)).body.data.items).toEqual([]);
	});
});
