/**
 * Repeated writes (SPEC "Repeated requests", failure mode 9): a double-clicked checkout, a
 * retried order with an Idempotency-Key, and the product cache an order invalidates.
 */
import crypto from "node:crypto";
import { HttpResult, startMall, TestMall } from "../helpers/node";

let mall: TestMall;
let admin: string;

beforeAll(async () => {
	mall = await startMall();
	admin = await mall.http.adminToken();
});
afterAll(() => mall?.stop());

const db = () => (mall.node.broker.getLocalService("order") as any).adapter.db;

async function query<T = any>(sql: string, replacements: unknown[] = []): Promise<T[]> {
	const [rows] = await db().query(sql, { replacements });
	return rows as T[];
}

async function product(body: Record<string, unknown> = {}) {
	const r = await mall.http.post("/api/product", { name: "Lamp", price: 12.5, stock: 100, ...body }, admin);
	expect(r.status).toBe(200);
	return r.body.data as { id: number };
}

async function stockOf(id: number): Promise<number> {
	const [row] = await query<{ stock: number }>("SELECT stock FROM products WHERE id = ?", [id]);
	return row.stock;
}

async function ordersOf(userId: number): Promise<{ order_no: string; product_id: number; quantity: number }[]> {
	return query("SELECT order_no, product_id, quantity FROM orders WHERE user_id = ? ORDER BY id", [userId]);
}

const key = () => `k-${crypto.randomBytes(8).toString("hex")}`;

function post(path: string, token: string, body?: unknown, idempotencyKey?: string): Promise<HttpResult> {
	return mall.http.request("POST", path, {
		token,
		body,
		headers: idempotencyKey === undefined ? {} : { "idempotency-key": idempotencyKey }
	});
}

/** A buyer whose cart holds two lines, 1 unit of a and 2 of b. */
async function buyerWithCart(stock = 100) {
	const u = await mall.http.newUser("rep");
	const [a, b] = [await product({ stock }), await product({ stock, price: 3.2 })];
	expect((await mall.http.post("/api/cart", { product_id: a.id, quantity: 1 }, u.token)).status).toBe(200);
	expect((await mall.http.post("/api/cart", { product_id: b.id, quantity: 2 }, u.token)).status).toBe(200);
	return { u, a, b };
}

function expectEnvelope(r: HttpResult, status: number, code: number) {
	expect({ status: r.status, code: r.body?.code }).toEqual({ status, code });
	expect(Object.keys(r.body).sort()).toEqual(["code", "data", "message", "trace_id"]);
	expect(r.body).toMatchObject({ message: expect.any(String), trace_id: expect.any(String) });
}

describe("a repeated checkout (failure mode 9)", () => {
	it.each([10, 50])(
		"%i concurrent checkouts of one cart write one set of orders; the others find it empty",
		async n => {
			const { u, a, b } = await buyerWithCart();
			const results = await Promise.all(Array.from({ length: n }, () => post("/api/order/checkout", u.token)));
			const ok = results.filter(r => r.status === 200);
			expect(ok).toHaveLength(1);
			expect(ok[0].body.data.orders).toHaveLength(2);
			expect(ok[0].body.data.total_price).toBe(18.9);
			for (const r of results.filter(x => x.status !== 200)) {
				expect({ status: r.status, code: r.body?.code }).toEqual({ status: 400, code: 50001 });
				expect(r.body).toMatchObject({ message: "cart is empty", data: null, trace_id: expect.any(String) });
			}
			const orders = await ordersOf(u.id);
			expect(orders.map(o => [o.product_id, o.quantity])).toEqual([
				[a.id, 1],
				[b.id, 2]
			]);
			expect([await stockOf(a.id), await stockOf(b.id)]).toEqual([99, 98]);
			expect((await mall.http.get("/api/cart", u.token)).body.data.items).toEqual([]);
		}
	);

	it.each([10, 50])("%i concurrent checkouts with one Idempotency-Key all answer the first answer", async n => {
		const { u, a, b } = await buyerWithCart();
		const k = key();
		const results = await Promise.all(Array.from({ length: n }, () => post("/api/order/checkout", u.token, {}, k)));
		expect(results.map(r => r.status)).toEqual(Array(n).fill(200));
		const first = results[0].body.data;
		expect(first.orders).toHaveLength(2);
		for (const r of results) expect(r.body.data).toEqual(first);
		const orders = await ordersOf(u.id);
		expect(orders.map(o => o.order_no).sort()).toEqual(
			first.orders.map((o: { order_no: string }) => o.order_no).sort()
		);
		expect([await stockOf(a.id), await stockOf(b.id)]).toEqual([99, 98]);
		// Later, the same key and body: still the first answer, though the cart is now empty.
		const later = await post("/api/order/checkout", u.token, {}, k);
		expect([later.status, later.body.data]).toEqual([200, first]);
		// Without the key, the cart is simply empty.
		expectEnvelope(await post("/api/order/checkout", u.token), 400, 50001);
	});
});

describe("POST /api/order with an Idempotency-Key", () => {
	it("repeated (in turn and at once) answers the same order and moves the stock once", async () => {
		const u = await mall.http.newUser("rep");
		const p = await product({ stock: 20 });
		const k = key();
		const first = await post("/api/order", u.token, { product_id: p.id, quantity: 3 }, k);
		expect(first.status).toBe(200);
		const again = await post("/api/order", u.token, { quantity: 3, product_id: String(p.id) }, k);
		expect([again.status, again.body.data]).toEqual([200, first.body.data]);
		const burst = await Promise.all(
			Array.from({ length: 20 }, () => post("/api/order", u.token, { product_id: p.id, quantity: 3 }, k))
		);
		for (const r of burst) expect([r.status, r.body.data]).toEqual([200, first.body.data]);
		expect(await ordersOf(u.id)).toHaveLength(1);
		expect(await stockOf(p.id)).toBe(17);
	});

	it("at once with fresh keys: one order per key, stock exact", async () => {
		const u = await mall.http.newUser("rep");
		const p = await product({ stock: 20 });
		const keys = Array.from({ length: 5 }, key);
		const results = await Promise.all(
			keys.flatMap(k =>
				Array.from({ length: 4 }, () => post("/api/order", u.token, { product_id: p.id, quantity: 1 }, k))
			)
		);
		expect(results.every(r => r.status === 200)).toBe(true);
		expect(new Set(results.map(r => r.body.data.order_no)).size).toBe(5);
		expect(await ordersOf(u.id)).toHaveLength(5);
		expect(await stockOf(p.id)).toBe(15);
	});

	it("refuses the same key with another body (422) and writes nothing", async () => {
		const u = await mall.http.newUser("rep");
		const p = await product({ stock: 20 });
		const k = key();
		const first = await post("/api/order", u.token, { product_id: p.id, quantity: 1 }, k);
		expect(first.status).toBe(200);
		await mall.http.post("/api/cart", { product_id: p.id, quantity: 1 }, u.token);
		for (const r of [
			await post("/api/order", u.token, { product_id: p.id, quantity: 2 }, k),
			await post("/api/order/checkout", u.token, undefined, k)
		]) {
			expectEnvelope(r, 422, 422);
			expect(r.body.message).toMatch(/Idempotency-Key/);
		}
		expect(await ordersOf(u.id)).toHaveLength(1);
		expect(await stockOf(p.id)).toBe(19);
		expect((await mall.http.get("/api/cart", u.token)).body.data.items).toHaveLength(1);
	});

	it("keeps each buyer's keys to themselves", async () => {
		const [u1, u2] = [await mall.http.newUser("rep"), await mall.http.newUser("rep")];
		const p = await product({ stock: 20 });
		const k = key();
		const r1 = await post("/api/order", u1.token, { product_id: p.id, quantity: 1 }, k);
		const r2 = await post("/api/order", u2.token, { product_id: p.id, quantity: 1 }, k);
		expect([r1.status, r2.status]).toEqual([200, 200]);
		expect(r2.body.data.order_no).not.toBe(r1.body.data.order_no);
		expect(r2.body.data.user_id).toBe(u2.id);
		expect(await stockOf(p.id)).toBe(18);
	});

	it("refuses a malformed key with 400 and the envelope, and writes nothing", async () => {
		const u = await mall.http.newUser("rep");
		const p = await product({ stock: 20 });
		for (const bad of ["", "x".repeat(129), "tab\tinside", "caf\u00e9"]) {
			const r = await post("/api/order", u.token, { product_id: p.id, quantity: 1 }, bad);
			expectEnvelope(r, 400, 400);
			expect(r.body.data).toEqual([{ field: "Idempotency-Key", message: expect.any(String) }]);
		}
		expect((await post("/api/order", u.token, { product_id: p.id, quantity: 1 }, "~".repeat(128))).status).toBe(200);
		expect((await post("/api/order", u.token, { product_id: p.id, quantity: 1 }, "a b")).status).toBe(200);
		expect(await stockOf(p.id)).toBe(18);
	});

	it("stores no refusal: after a 409 the same key may succeed once the stock is back", async () => {
		const u = await mall.http.newUser("rep");
		const p = await product({ stock: 1 });
		const k = key();
		const short = await post("/api/order", u.token, { product_id: p.id, quantity: 2 }, k);
		expectEnvelope(short, 409, 20004);
		expect((await mall.http.put(`/api/product/${p.id}`, { stock: 5 }, admin)).status).toBe(200);
		const ok = await post("/api/order", u.token, { product_id: p.id, quantity: 2 }, k);
		expect(ok.status).toBe(200);
		expect((await post("/api/order", u.token, { product_id: p.id, quantity: 2 }, k)).body.data).toEqual(ok.body.data);
		expect(await stockOf(p.id)).toBe(3);
	});

	it("a burst with one key whose request is refused: each runs in turn, all refused alike, nothing kept", async () => {
		const u = await mall.http.newUser("rep");
		const p = await product({ stock: 1 });
		const k = key();
		// Each holder of the key rolls back, so the next waiter claims it (waiters may deadlock: retried).
		const results = await Promise.all(
			Array.from({ length: 10 }, () => post("/api/order", u.token, { product_id: p.id, quantity: 2 }, k))
		);
		for (const r of results) expectEnvelope(r, 409, 20004);
		expect(await query("SELECT 1 FROM idempotency_keys WHERE user_id = ?", [u.id])).toEqual([]);
		expect(await stockOf(p.id)).toBe(1);
	});

	it("forgets a key after 24 h: an expired key is ignored, then purged", async () => {
		const u = await mall.http.newUser("rep");
		const p = await product({ stock: 20 });
		const k = key();
		const first = await post("/api/order", u.token, { product_id: p.id, quantity: 1 }, k);
		const [row] = await query<{ ttl: number }>(
			"SELECT TIMESTAMPDIFF(SECOND, created_at, expires_at) AS ttl FROM idempotency_keys WHERE user_id = ? AND idem_key = ?",
			[u.id, k]
		);
		expect(Number(row.ttl)).toBe(24 * 3600);
		await query("UPDATE idempotency_keys SET expires_at = NOW(3) - INTERVAL 1 SECOND WHERE user_id = ?", [u.id]);
		const second = await post("/api/order", u.token, { product_id: p.id, quantity: 1 }, k);
		expect(second.status).toBe(200);
		expect(second.body.data.order_no).not.toBe(first.body.data.order_no);
		expect(await stockOf(p.id)).toBe(18);

		await query("UPDATE idempotency_keys SET expires_at = NOW(3) - INTERVAL 1 SECOND WHERE user_id = ?", [u.id]);
		const order = mall.node.broker.getLocalService("order") as any;
		expect(await order.purgeIdempotencyKeys()).toBeGreaterThanOrEqual(1);
		expect(await query("SELECT 1 FROM idempotency_keys WHERE user_id = ?", [u.id])).toEqual([]);
	});
});

describe("the product cache after a regular order", () => {
	it("drops only the ordered products' details: another product's stays cached", async () => {
		const u = await mall.http.newUser("rep");
		const [ordered, other] = [await product({ stock: 10 }), await product({ stock: 10 })];
		// Both details read once, so both are cached.
		expect((await mall.http.get(`/api/product/${ordered.id}`)).body.data.stock).toBe(10);
		expect((await mall.http.get(`/api/product/${other.id}`)).body.data.stock).toBe(10);
		// Behind the cache's back: only a cache hit still says 10.
		await query("UPDATE products SET stock = 7 WHERE id = ?", [other.id]);
		expect((await mall.http.post("/api/order", { product_id: ordered.id, quantity: 4 }, u.token)).status).toBe(200);

		// The ordered product's detail is fresh (the event is handled just after the answer).
		let stock = 0;
		for (const end = Date.now() + 3000; Date.now() < end; await new Promise(r => setTimeout(r, 50))) {
			stock = (await mall.http.get(`/api/product/${ordered.id}`)).body.data.stock;
			if (stock === 6) break;
		}
		expect(stock).toBe(6);
		// The other product's detail is still the cached one.
		expect((await mall.http.get(`/api/product/${other.id}`)).body.data.stock).toBe(10);
		const cacher = mall.node.broker.cacher as any;
		const cached = await cacher.get(`product.get:${other.id}`);
		expect(cached).toMatchObject({ id: other.id, stock: 10 });
	});
});

describe("the OpenAPI document", () => {
	it("lists the Idempotency-Key header and the 422 for order and checkout only", async () => {
		const doc = (await (await fetch(`${mall.baseUrl}/swagger/doc.json`)).json()) as any;
		for (const op of [doc.paths["/api/order"].post, doc.paths["/api/order/checkout"].post]) {
			expect(op.parameters).toContainEqual(
				expect.objectContaining({
					name: "Idempotency-Key",
					in: "header",
					required: false,
					schema: { type: "string", minLength: 1, maxLength: 128, pattern: "^[\\x20-\\x7E]+$" }
				})
			);
			expect(op.responses["422"].description).toMatch(/^422: /);
		}
		const pay = doc.paths["/api/order/{order_no}/pay"].post;
		expect(pay.parameters.map((p: { name: string }) => p.name)).not.toContain("Idempotency-Key");
		expect(pay.responses["422"]).toBeUndefined();
	});
});
