import { startMall, TestMall } from "../helpers/node";

let mall: TestMall;
let admin: string;
let user: string;

beforeAll(async () => {
	mall = await startMall();
	admin = await mall.http.adminToken();
	user = (await mall.http.newUser()).token;
});
afterAll(() => mall?.stop());

const phone = {
	name: "Phone X",
	price: 1999.99,
	stock: 10,
	description: "a phone",
	category: "phones",
	image_url: "https://img.example/x.png"
};

async function create(body: Record<string, unknown>) {
	const r = await mall.http.post("/api/product", body, admin);
	expect(r.status).toBe(200);
	return r.body.data;
}

describe("admin writes", () => {
	it("creates a product with an exact decimal price returned as a number", async () => {
		const p = await create({ ...phone, price: 19.99 });
		expect(p).toMatchObject({
			id: expect.any(Number),
			name: "Phone X",
			price: 19.99,
			stock: 10,
			status: 1,
			category: "phones"
		});
		expect(typeof p.price).toBe("number");
		const [[row]] = (await (mall.node.broker.getLocalService("product") as any).adapter.db.query(
			`SELECT CAST(price AS CHAR) AS price FROM products WHERE id = ${p.id}`
		)) as any;
		expect(row.price).toBe("19.99");
	});

	it.each([
		["missing name", { price: 1, stock: 1 }, "name"],
		["negative price", { name: "n", price: -1, stock: 1 }, "price"],
		["three decimals", { name: "n", price: 1.005, stock: 1 }, "price"],
		["fractional stock", { name: "n", price: 1, stock: 1.5 }, "stock"],
		["negative stock", { name: "n", price: 1, stock: -3 }, "stock"],
		["bad status", { name: "n", price: 1, stock: 1, status: 7 }, "status"]
	])("rejects %s with 400 and writes nothing", async (_n, body, field) => {
		const before = await mall.http.get("/api/product?page_size=100");
		const r = await mall.http.post("/api/product", body, admin);
		expect([r.status, r.body.code]).toEqual([400, 400]);
		expect(r.body.data.map((f: { field: string }) => f.field)).toContain(field);
		const after = await mall.http.get("/api/product?page_size=100");
		expect(after.body.data.total).toBe(before.body.data.total);
	});

	it("is 401 without a token and 403/10010 for a non-admin", async () => {
		const anon = await mall.http.post("/api/product", phone);
		expect([anon.status, anon.body.code]).toEqual([401, 401]);
		const p = await create(phone);
		for (const r of [
			await mall.http.post("/api/product", phone, user),
			await mall.http.put(`/api/product/${p.id}`, { price: 1 }, user),
			await mall.http.del(`/api/product/${p.id}`, undefined, user)
		]) {
			expect([r.status, r.body.code]).toEqual([403, 10010]);
		}
		const still = await mall.http.get(`/api/product/${p.id}`);
		expect(still.body.data.price).toBe(1999.99);
	});

	it("updates some fields and the cached detail follows", async () => {
		const p = await create(phone);
		expect((await mall.http.get(`/api/product/${p.id}`)).body.data.price).toBe(1999.99); // now cached
		const r = await mall.http.put(`/api/product/${p.id}`, { price: 1499.5, stock: 3 }, admin);
		expect(r.status).toBe(200);
		expect(r.body.data).toMatchObject({ price: 1499.5, stock: 3, name: "Phone X" });
		expect((await mall.http.get(`/api/product/${p.id}`)).body.data).toMatchObject({ price: 1499.5, stock: 3 });
		const off = await mall.http.put(`/api/product/${p.id}`, { status: 0 }, admin);
		expect([off.status, off.body.data?.status, off.body.data?.price]).toEqual([200, 0, 1499.5]);
	});

	it("deletes, then the product is 404/20001 everywhere", async () => {
		const p = await create(phone);
		await mall.http.get(`/api/product/${p.id}`);
		const r = await mall.http.del(`/api/product/${p.id}`, undefined, admin);
		expect(r.status).toBe(200);
		for (const res of [
			await mall.http.get(`/api/product/${p.id}`),
			await mall.http.put(`/api/product/${p.id}`, { price: 2 }, admin),
			await mall.http.del(`/api/product/${p.id}`, undefined, admin)
		]) {
			expect([res.status, res.body.code]).toEqual([404, 20001]);
		}
	});

	it("rejects a non-numeric id with 400", async () => {
		const r = await mall.http.get("/api/product/abc");
		expect([r.status, r.body.code]).toEqual([400, 400]);
	});
});

describe("public list", () => {
	let ids: number[];
	beforeAll(async () => {
		await (mall.node.broker.getLocalService("product") as any).model.destroy({ where: {} });
		ids = [];
		for (let i = 0; i < 25; i++) {
			const p = await create({
				name: `Item ${i} ${i % 5 === 0 ? "special_50%" : "plain"}`,
				price: 10 + i,
				stock: 5,
				category: i % 2 ? "odd" : "even"
			});
			ids.push(p.id);
		}
		await create({ name: "Hidden special", price: 1, stock: 1, category: "even", status: 0 });
	});

	it("pages newest first with total and total_page", async () => {
		const r = await mall.http.get("/api/product?page=2&page_size=10");
		expect(r.status).toBe(200);
		expect(r.body.data).toMatchObject({ total: 25, page: 2, page_size: 10, total_page: 3 });
		expect(r.body.data.list.map((p: { id: number }) => p.id)).toEqual(ids.slice().reverse().slice(10, 20));
	});

	it("defaults to page 1 of 10", async () => {
		const r = await mall.http.get("/api/product");
		expect(r.body.data).toMatchObject({ page: 1, page_size: 10, total: 25 });
		expect(r.body.data.list).toHaveLength(10);
	});

	it("filters by category and keyword, treating % and _ literally, and hides off-shelf products", async () => {
		const odd = await mall.http.get("/api/product?category=odd&page_size=100");
		expect(odd.body.data.total).toBe(12);
		const special = await mall.http.get("/api/product?keyword=special&page_size=100");
		expect(special.body.data.total).toBe(5);
		const literal = await mall.http.get(`/api/product?keyword=${encodeURIComponent("_50%")}`);
		expect(literal.body.data.total).toBe(5);
		const pct = await mall.http.get(`/api/product?keyword=${encodeURIComponent("%")}`);
		expect(pct.body.data.total).toBe(5);
	});

	it.each([
		["page_size=101"],
		["page=0"],
		["page_size=abc"],
		["page=99999999999999999999"],
		["page=1e308"],
		["page=100001"],
		["page=-1"],
		["page=1.5"],
		["page_size=1e308"]
	])("rejects %s with 400 naming the field", async q => {
		const r = await mall.http.get(`/api/product?${q}`);
		expect([r.status, r.body.code]).toEqual([400, 400]);
		expect(r.body.data.map((e: { field: string }) => e.field)).toEqual([q.split("=")[0]]);
	});

	it("serves the deepest page allowed (empty, not an error)", async () => {
		const r = await mall.http.get("/api/product?page=100000&page_size=100");
		expect(r.status).toBe(200);
		expect(r.body.data).toMatchObject({ list: [], page: 100000, total: 25 });
	});
});
