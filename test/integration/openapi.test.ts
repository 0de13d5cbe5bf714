import SwaggerParser from "@apidevtools/swagger-parser";
import { chromium } from "playwright-core";
import { startMall, TestMall } from "../helpers/node";

let mall: TestMall;

beforeAll(async () => {
	mall = await startMall();
});
afterAll(() => mall?.stop());

/** Every route of the SPEC's REST contract. */
const SPEC_ROUTES = [
	"post /api/user/register",
	"post /api/user/login",
	"get /api/user/profile",
	"get /api/product",
	"get /api/product/{id}",
	"post /api/product",
	"put /api/product/{id}",
	"delete /api/product/{id}",
	"post /api/order",
	"post /api/order/checkout",
	"get /api/order",
	"get /api/order/{order_no}",
	"post /api/order/{order_no}/pay",
	"post /api/order/{order_no}/cancel",
	"post /api/cart",
	"get /api/cart",
	"put /api/cart",
	"delete /api/cart",
	"delete /api/cart/clear",
	"post /api/seckill/init",
	"post /api/seckill",
	"get /api/seckill",
	"get /api/seckill/result",
	"get /health",
	"get /ready",
	"get /metrics",
	"post /api/upload",
	"post /api/upload/multi",
	"get /uploads/{name}",
	"get /version"
];

describe("OpenAPI document", () => {
	it("validates against the OpenAPI 3 schema (swagger-parser) and lists every SPEC route with its parameters", async () => {
		const r = await fetch(`${mall.baseUrl}/swagger/doc.json`);
		expect(r.status).toBe(200);
		const doc = (await r.json()) as any;
		// Throws, naming the problem, unless the document is valid OpenAPI 3 (schema and refs).
		await expect(SwaggerParser.validate(structuredClone(doc))).resolves.toBeTruthy();
		const routes = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops as object).map(m => `${m} ${p}`));
		for (const route of SPEC_ROUTES) expect(routes).toContain(route);
		const register = doc.paths["/api/user/register"].post;
		expect(register.requestBody.content["application/json"].schema).toMatchObject({
			required: ["username", "password"],
			properties: {
				username: { type: "string", pattern: "^[A-Za-z0-9_]{3,32}$" },
				password: { type: "string", minLength: 8, maxLength: 72 },
				email: { type: "string", format: "email" }
			}
		});
		expect(doc.paths["/api/product"].get.parameters).toContainEqual({
			name: "page_size",
			in: "query",
			required: false,
			schema: { type: "integer", minimum: 1, maximum: 100, default: 10 }
		});
		expect(doc.paths["/api/product"].post.security).toEqual([{ bearerAuth: [] }]);
	});

	it("documents the uploads as multipart/form-data, the stored files' URL and /version", async () => {
		const doc = (await (await fetch(`${mall.baseUrl}/swagger/doc.json`)).json()) as any;
		const single = doc.paths["/api/upload"].post;
		expect(single.requestBody.content["multipart/form-data"].schema).toEqual({
			type: "object",
			required: ["file"],
			properties: { file: { type: "string", format: "binary" } }
		});
		expect(single.security).toEqual([{ bearerAuth: [] }]);
		expect(Object.keys(single.responses)).toEqual(expect.arrayContaining(["200", "400", "401", "413", "415"]));
		const multi = doc.paths["/api/upload/multi"].post;
		expect(multi.requestBody.content["multipart/form-data"].schema.properties.files).toEqual({
			type: "array",
			items: { type: "string", format: "binary" },
			maxItems: mall.cfg.upload.max_files
		});
		expect(doc.paths["/uploads/{name}"].get.responses["200"].content).toHaveProperty("image/png");
		expect(doc.paths["/version"].get.responses).toHaveProperty("200");
		// Nothing of the upload actor's internals is a route.
		expect(Object.keys(doc.paths).filter(p => /commit|discard|save/.test(p))).toEqual([]);
	});

	it("documents the sale tokens: the token and captcha routes, their parameters and codes", async () => {
		const doc = (await (await fetch(`${mall.baseUrl}/swagger/doc.json`)).json()) as any;
		const token = doc.paths["/api/seckill/token"].get;
		expect(token.security).toEqual([{ bearerAuth: [] }]);
		expect(token.parameters.map((p: any) => [p.name, p.in, p.required])).toEqual(
			expect.arrayContaining([
				["product_id", "query", true],
				["captcha_id", "query", false],
				["captcha_answer", "query", false]
			])
		);
		expect(token.description).toMatch(/60013/);
		expect(doc.paths["/api/seckill/captcha"].get.parameters.map((p: any) => p.name)).toContain("product_id");
		const buy = doc.paths["/api/seckill"].post;
		expect(buy.requestBody.content["application/json"].schema.properties.sale_token).toMatchObject({
			type: "string"
		});
		expect(buy.description).toMatch(/60012/);
	});

	it("documents the pushed result: an event stream for a user, its product and its bounds", async () => {
		const doc = (await (await fetch(`${mall.baseUrl}/swagger/doc.json`)).json()) as any;
		const stream = doc.paths["/api/seckill/result/stream"].get;
		expect(stream.security).toEqual([{ bearerAuth: [] }]);
		expect(stream.parameters.map((p: any) => [p.name, p.in, p.required])).toEqual([["product_id", "query", true]]);
		expect(stream.responses["200"].content).toHaveProperty("text/event-stream");
		expect(stream.responses["429"].description).toMatch(/60014.*60015/);
	});
});

describe("Swagger UI", () => {
	it("loads in headless Chromium from local files, without console errors", async () => {
		const browser = await chromium.launch({
			executablePath: "/usr/bin/chromium",
			args: [
				"--headless",
				"--no-sandbox",
				"--disable-gpu",
				"--disable-quic",
				"--no-first-run",
				"--disable-background-networking",
				"--disable-component-update",
				"--disable-sync"
			]
		});
		try {
			const page = await browser.newPage();
			const problems: string[] = [];
			page.on("console", m => {
				if (m.type() === "error") problems.push(m.text());
			});
			page.on("pageerror", e => problems.push(e.message));
			const outside: string[] = [];
			page.on("request", req => {
				if (!req.url().startsWith(mall.baseUrl)) outside.push(req.url());
			});
			await page.goto(`${mall.baseUrl}/swagger/index.html`);
			await page.waitForSelector(".swagger-ui .info .title", { timeout: 15000 });
			expect(await page.textContent(".swagger-ui .info .title")).toContain("GoMall API");
			await page.waitForSelector(".opblock-tag", { timeout: 15000 });
			expect(await page.locator(".opblock").count()).toBeGreaterThanOrEqual(SPEC_ROUTES.length);
			expect(problems).toEqual([]);
			expect(outside).toEqual([]);
		} finally {
			await browser.close();
		}
	});

	it("serves nothing else from the swagger folder", async () => {
		const r = await fetch(`${mall.baseUrl}/swagger/package.json`);
		expect(r.status).toBe(404);
		const traversal = await fetch(`${mall.baseUrl}/swagger/..%2F..%2Fpackage.json`);
		expect(traversal.status).toBe(404);
	});
});
