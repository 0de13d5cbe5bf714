/**
 * Drives the Go version's prebuilt web client (its frontend/dist, fetched by whoever runs
 * this: it is never part of this project) against GoMall in headless Chromium.
 *
 *   npm run e2e:web-client -- --dist /path/to/frontend/dist [--out dir] [--base-url http://host:port]
 *
 * Without --base-url a whole mall is started on a namespace and database of its own and
 * removed at the end. Each step prints ok / FAILED / skipped / conflict / client-limit and
 * leaves a screenshot in --out; only FAILED makes the exit code non-zero:
 * - skipped: the route answers 404 (sessions, uploads and /version live on other branches);
 * - conflict: the client reads an array where SPEC's contract (and the Go backend the client
 *   came with) sends an object, recognised by the exact page error that follows;
 * - client-limit: the client never asks the server here (sample data, local-only state).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { Browser, chromium, Page } from "playwright-core";
import { ADMIN, startMall, TestMall } from "../helpers/node";

type Status = "ok" | "FAILED" | "skipped" | "conflict" | "client-limit";

/** Ends a step with a status other than ok or FAILED. */
class Verdict extends Error {
	constructor(
		readonly status: Status,
		detail: string
	) {
		super(detail);
	}
}

/**
 * What the client throws when `data` is an object where it expects an array: GET /api/cart
 * (SPEC: {items, total_count, total_price}) and GET /api/order (SPEC: a paged list).
 */
const SHAPE_CONFLICT = /\.(reduce|map) is not a function/;

interface Args {
	dist: string;
	out: string;
	baseUrl: string | null;
	admin: { username: string; password: string };
}

function parseArgs(argv: string[]): Args {
	const get = (name: string) => {
		const i = argv.indexOf(`--${name}`);
		return i >= 0 ? argv[i + 1] : undefined;
	};
	const dist = get("dist");
	if (!dist || !fs.existsSync(path.join(dist, "index.html"))) {
		throw new Error("usage: e2e --dist <the Go client's frontend/dist, with index.html> [--out dir] [--base-url url --admin user:password]");
	}
	const admin = get("admin");
	const [username, password] = admin ? [admin.slice(0, admin.indexOf(":")), admin.slice(admin.indexOf(":") + 1)] : [ADMIN.username, ADMIN.password];
	return {
		dist: path.resolve(dist),
		out: path.resolve(get("out") ?? fs.mkdtempSync(path.join(os.tmpdir(), "gomall-web-client-"))),
		baseUrl: get("base-url") ?? null,
		admin: { username, password }
	};
}

// ---------------------------------------------------------------------------------------
// Product pictures: generated here, so the seed needs no file and no network.

function png(width: number, height: number, rgb: [number, number, number]): Buffer {
	const row = Buffer.alloc(1 + width * 3);
	const rows: Buffer[] = [];
	for (let y = 0; y < height; y++) {
		row[0] = 0;
		for (let x = 0; x < width; x++) {
			// A diagonal stripe, so a picture that renders is told apart from a blank box.
			const shade = (x + y) % 60 < 30 ? 1 : 0.75;
			row[1 + x * 3] = Math.round(rgb[0] * shade);
			row[2 + x * 3] = Math.round(rgb[1] * shade);
			row[3 + x * 3] = Math.round(rgb[2] * shade);
		}
		rows.push(Buffer.from(row));
	}
	const chunk = (type: string, data: Buffer) => {
		const len = Buffer.alloc(4);
		len.writeUInt32BE(data.length);
		const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
		const crc = Buffer.alloc(4);
		crc.writeUInt32BE(zlib.crc32(body));
		return Buffer.concat([len, body, crc]);
	};
	const ihdr = Buffer.alloc(13);
	ihdr.writeUInt32BE(width, 0);
	ihdr.writeUInt32BE(height, 4);
	ihdr.set([8, 2, 0, 0, 0], 8);
	return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", ihdr), chunk("IDAT", zlib.deflateSync(Buffer.concat(rows))), chunk("IEND", Buffer.alloc(0))]);
}

const PICTURES = new Map([
	["/seed-images/a.png", png(240, 240, [37, 99, 235])],
	["/seed-images/b.png", png(240, 240, [22, 163, 74])],
	["/seed-images/c.png", png(240, 240, [220, 38, 38])]
]);
const images_a = PICTURES.get("/seed-images/a.png")!;

// ---------------------------------------------------------------------------------------
// The static server: the dist with the SPA fallback, /api and /uploads proxied to GoMall.

const TYPES: Record<string, string> = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png", ".json": "application/json", ".ico": "image/x-icon" };

function startStatic(dist: string, upstream: string, images: Map<string, Buffer>): Promise<{ url: string; close(): Promise<void> }> {
	const up = new URL(upstream);
	const server = http.createServer((req, res) => {
		const url = new URL(req.url ?? "/", "http://x");
		if (url.pathname === "/api" || url.pathname.startsWith("/api/") || url.pathname.startsWith("/uploads/")) {
			const proxied = http.request({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: { ...req.headers, host: up.host } }, r => {
				res.writeHead(r.statusCode ?? 502, r.headers);
				r.pipe(res);
			});
			proxied.on("error", () => {
				res.writeHead(502).end();
			});
			req.pipe(proxied);
			return;
		}
		const image = images.get(url.pathname);
		if (image) {
			res.writeHead(200, { "content-type": "image/png" }).end(image);
			return;
		}
		let file = path.join(dist, path.normalize(decodeURIComponent(url.pathname)));
		if (!file.startsWith(dist + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) file = path.join(dist, "index.html");
		res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
		fs.createReadStream(file).pipe(res);
	});
	return new Promise(resolve =>
		server.listen(0, "127.0.0.1", () => {
			const { port } = server.address() as { port: number };
			resolve({
				url: `http://127.0.0.1:${port}`,
				close: () =>
					new Promise<void>(r => {
						server.closeAllConnections();
						server.close(() => r());
					})
			});
		})
	);
}

// ---------------------------------------------------------------------------------------
// A small API client for seeding and for checking what the server holds.

async function api(base: string, method: string, p: string, body?: unknown, token?: string | null): Promise<{ status: number; body: any }> {
	const headers: Record<string, string> = {};
	if (token) headers.authorization = `Bearer ${token}`;
	if (body !== undefined) headers["content-type"] = "application/json";
	const res = await fetch(base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
	const text = await res.text();
	let parsed: any = null;
	try {
		parsed = text ? JSON.parse(text) : null;
	} catch {
		parsed = { text };
	}
	return { status: res.status, body: parsed };
}

function must<T = any>(r: { status: number; body: any }, what: string): T {
	if (r.status !== 200 || r.body?.code !== 0) throw new Error(`${what}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
	return r.body.data as T;
}

function shapeOf(data: unknown): string {
	if (Array.isArray(data)) return "an array";
	if (data && typeof data === "object") return `an object {${Object.keys(data).join(", ")}}`;
	return JSON.stringify(data);
}

// ---------------------------------------------------------------------------------------

interface StepResult {
	name: string;
	status: Status;
	detail: string;
	shot: string;
}

interface Seeded {
	products: { id: number; name: string; price: number; stock: number; image_url: string }[];
	flash: { product_id: number; name: string };
}

const cleanups: (() => Promise<void>)[] = [];
/** In reverse order of start: the mall goes last, the browser and the static server talk to it. */
async function cleanUp(): Promise<void> {
	while (cleanups.length) await cleanups.pop()!().catch(e => console.error(`cleanup: ${(e as Error).message}`));
}

async function main(): Promise<number> {
	const args = parseArgs(process.argv.slice(2));
	fs.mkdirSync(args.out, { recursive: true });
	const results: StepResult[] = [];
	try {
		let base = args.baseUrl;
		if (!base) {
			const mall: TestMall = await startMall({ log: { level: "warn", requests: false } });
			cleanups.push(() => mall.stop());
			base = mall.baseUrl;
			console.log(`mall at ${base}: namespace ${mall.cfg.namespace}, database ${mall.cfg.db.name} (both removed at the end)`);
		}
		const site = await startStatic(args.dist, base, PICTURES);
		cleanups.push(() => site.close());

		const browser: Browser = await chromium.launch({
			executablePath: "/usr/bin/chromium",
			args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
		});
		cleanups.push(() => browser.close());
		const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, locale: "zh-CN" });
		await runSteps(page, base, site.url, args, results);
	} catch (err) {
		results.push({ name: "driver", status: "FAILED", detail: (err as Error).message, shot: "" });
	} finally {
		await cleanUp();
	}
	printTable(results, args.out);
	return results.some(r => r.status === "FAILED") ? 1 : 0;
}

async function runSteps(page: Page, base: string, site: string, args: Args, results: StepResult[]): Promise<void> {
	const pageErrors: string[] = [];
	const apiFailures: string[] = [];
	const outside = new Set<string>();
	page.on("pageerror", e => pageErrors.push(e.message));
	page.setDefaultTimeout(8000);
	page.on("response", r => {
		const u = new URL(r.url());
		if (u.pathname.startsWith("/api/") && r.status() >= 400) apiFailures.push(`${r.request().method()} ${u.pathname} → ${r.status()}`);
	});
	// Every confirm() of the client (checkout, cancel) is answered yes.
	page.on("dialog", d => void d.accept());
	// The client has absolute http://localhost:8080/photos/... pictures in its sample data:
	// nothing leaves the static server's origin, whatever runs on this machine's 8080.
	await page.route("**/*", route => {
		if (route.request().url().startsWith(site)) return route.continue();
		outside.add(route.request().url());
		return route.abort();
	});

	let n = 0;
	/** Runs one step: the page must hold no uncaught error and no failed /api answer it did not expect. */
	const step = async (name: string, fn: () => Promise<string>, allowed: RegExp[] = []) => {
		pageErrors.length = 0;
		apiFailures.length = 0;
		const shot = `${String(++n).padStart(2, "0")}-${name.replace(/[^a-z0-9]+/gi, "-").toLowerCase()}.png`;
		let status: Status = "ok";
		let detail = "";
		try {
			detail = await fn();
			await page.waitForTimeout(300);
		} catch (err) {
			status = err instanceof Verdict ? err.status : "FAILED";
			detail = (err as Error).message.split("\n")[0];
		}
		const unexpected = apiFailures.filter(f => !allowed.some(a => a.test(f)));
		if (pageErrors.length) {
			const known = pageErrors.every(e => SHAPE_CONFLICT.test(e));
			if (status !== "skipped" && status !== "client-limit") status = known ? "conflict" : "FAILED";
			const errors = `page error: ${[...new Set(pageErrors)].join("; ")}`;
			detail = status === "conflict" || status === "FAILED" ? `${errors}${detail ? ` (${detail})` : ""}` : `${detail} (then ${errors})`;
		} else if (unexpected.length && status === "ok") {
			status = "FAILED";
			detail = `failed /api answers: ${unexpected.join(", ")}${detail ? ` (${detail})` : ""}`;
		}
		await page.screenshot({ path: path.join(args.out, shot), fullPage: true }).catch(() => undefined);
		results.push({ name, status, detail, shot });
		console.log(`${status.padEnd(12)} ${name}: ${detail}`);
		return status;
	};
	const visible = (text: string | RegExp, timeout = 5000) => page.getByText(text).first().waitFor({ state: "visible", timeout });
	/**
	 * Opens a page of the client the way a user gets there: the client keeps only the token
	 * across loads and the cart page asks for the cart once, at mount, only if the session is
	 * already restored; so a fresh load of /cart shows "please log in". Home first, then the link.
	 */
	const openInApp = async (to: string) => {
		await page.goto(`${site}/`);
		await visible(username);
		await page.locator(`header a[href="${to}"]`).first().click();
	};
	const token = () => page.evaluate(() => localStorage.getItem("token"));
	const waitApi = (method: string, p: string | RegExp) => {
		const res = page.waitForResponse(r => r.request().method() === method && (typeof p === "string" ? new URL(r.url()).pathname === p : p.test(new URL(r.url()).pathname)), { timeout: 10000 });
		// Awaited only on the path that needs it; a step that ends early must not leave a rejection behind.
		res.catch(() => undefined);
		return res;
	};
	/** A call the client defines but never makes, made from the page with its token. */
	const fromPage = (method: string, p: string, body?: unknown) =>
		page.evaluate(
			async ({ method, p, body }) => {
				const t = localStorage.getItem("token");
				const headers: Record<string, string> = { "content-type": "application/json" };
				if (t) headers.authorization = `Bearer ${t}`;
				const r = await fetch(p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
				return { status: r.status, body: (await r.json().catch(() => null)) as any };
			},
			{ method, p, body }
		);

	// ---- seed (admin API) ------------------------------------------------------------
	const admin = must<{ token: string }>(await api(base, "POST", "/api/user/login", args.admin), "admin login").token;
	let uploadedUrl: string | null = null;
	await step("seed: upload a product image (POST /api/upload)", async () => {
		const form = new FormData();
		form.append("file", new Blob([new Uint8Array(images_a)], { type: "image/png" }), "e2e-a.png");
		const res = await fetch(`${base}/api/upload`, { method: "POST", headers: { authorization: `Bearer ${admin}` }, body: form });
		if (res.status === 404) throw new Verdict("skipped", "POST /api/upload answers 404: not on this branch (uploads); the seed uses the driver's own pictures");
		const body: any = await res.json().catch(() => null);
		const url: string | undefined = body?.data?.url ?? body?.data?.file_url ?? body?.data?.image_url;
		if (res.status !== 200 || !url) throw new Error(`HTTP ${res.status} ${JSON.stringify(body)}`);
		uploadedUrl = url.replace(/^https?:\/\/[^/]+/, "");
		const back = await fetch(site + uploadedUrl);
		const bytes = Buffer.from(await back.arrayBuffer());
		if (back.status !== 200 || !bytes.equals(images_a)) throw new Error(`${uploadedUrl} through the proxy: HTTP ${back.status}, ${bytes.length} bytes, not the uploaded ones`);
		return `uploaded, served back byte-identical at ${uploadedUrl}`;
	});
	const seed: Seeded = { products: [], flash: { product_id: 0, name: "" } };
	const suffix = crypto.randomBytes(2).toString("hex");
	for (const p of [
		{ name: `E2E 降噪耳机 ${suffix}`, price: 199, stock: 50, category: "手机数码", description: "Seeded by the web-client driver: on the shelf, 50 in stock.", image_url: uploadedUrl ?? "/seed-images/a.png", status: 1 },
		{ name: `E2E 机械键盘 ${suffix}`, price: 19.99, stock: 20, category: "电脑办公", description: "Seeded by the web-client driver: the second product.", image_url: "/seed-images/b.png", status: 1 },
		{ name: `E2E 秒杀手表 ${suffix}`, price: 99, stock: 10, category: "手机数码", description: "Seeded by the web-client driver: on flash sale.", image_url: "/seed-images/c.png", status: 1 }
	]) {
		const created = must<{ id: number }>(await api(base, "POST", "/api/product", p, admin), "create product");
		seed.products.push({ id: created.id, name: p.name, price: p.price, stock: p.stock, image_url: p.image_url });
	}
	const flashProduct = seed.products[2];
	must(
		await api(base, "POST", "/api/seckill/init", { product_id: flashProduct.id, stock: 5, seckill_price: 9.9, start_time: new Date(Date.now() - 60_000).toISOString(), end_time: new Date(Date.now() + 3_600_000).toISOString() }, admin),
		"seckill init"
	);
	seed.flash = { product_id: flashProduct.id, name: flashProduct.name };
	const [A, B] = seed.products;

	// ---- the client ---------------------------------------------------------------------
	const username = `web_${crypto.randomBytes(4).toString("hex")}`;
	let password = "Passw0rd-e2e";

	await step("register", async () => {
		await page.goto(`${site}/register`);
		await page.fill("#username", username);
		await page.fill("#password", password);
		await page.fill("#confirmPassword", password);
		await page.fill("#email", `${username}@example.com`);
		const res = waitApi("POST", "/api/user/register");
		await page.click("main button[type=submit]");
		if ((await res).status() !== 200) throw new Error(`POST /api/user/register → ${(await res).status()}`);
		await page.waitForURL(`${site}/`);
		await visible(username);
		return `registered ${username}, landed on / with the name in the header`;
	});

	await step("login (home page)", async () => {
		await page.getByRole("button", { name: "退出" }).click();
		await visible("登录");
		await page.goto(`${site}/login`);
		await page.fill("#username", username);
		await page.fill("#password", password);
		const res = waitApi("POST", "/api/user/login");
		await page.click("main button[type=submit]");
		if ((await res).status() !== 200) throw new Error(`POST /api/user/login → ${(await res).status()}`);
		await page.waitForURL(`${site}/`);
		await visible(username);
		await visible(A.name);
		return "logged in; the home page lists the seeded products";
	});

	await step("product list", async () => {
		await page.goto(`${site}/products`);
		for (const p of seed.products) await visible(p.name);
		await visible(A.price.toFixed(2));
		await visible(B.price.toFixed(2));
		const broken = await page.$$eval("img", imgs => imgs.filter(i => i.src.includes("/seed-images/") || i.src.includes("/uploads/")).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src));
		if (broken.length) throw new Error(`pictures not loaded: ${broken.join(", ")}`);
		return `${seed.products.length} seeded products with prices, stock and pictures`;
	});

	await step("product detail", async () => {
		await page.getByRole("link", { name: A.name }).first().click();
		await page.waitForURL(`${site}/products/${A.id}`);
		await page.getByRole("heading", { name: A.name }).waitFor({ timeout: 5000 });
		await visible(A.price.toFixed(2));
		await visible(`${A.stock} 件`);
		return `/products/${A.id}: name, price ¥${A.price.toFixed(2)}, stock ${A.stock}`;
	});

	await step("add to cart", async () => {
		await page.getByRole("button", { name: "+", exact: true }).click();
		const added = waitApi("POST", "/api/cart");
		const listed = waitApi("GET", "/api/cart");
		await page.getByRole("button", { name: "加入购物车" }).click();
		if ((await added).status() !== 200) throw new Error(`POST /api/cart → ${(await added).status()}`);
		const data = ((await (await listed).json()) as any).data;
		await page.waitForTimeout(500);
		const server = must<any>(await api(base, "GET", "/api/cart", undefined, await token()), "cart");
		const line = server.items.find((i: any) => i.product_id === A.id);
		if (line?.quantity !== 2) throw new Error(`the server's cart holds ${JSON.stringify(server.items)}`);
		if (!Array.isArray(data) && pageErrors.length) throw new Verdict("conflict", `the server holds the line (quantity 2); GET /api/cart data is ${shapeOf(data)}, the client stores it as the array of lines`);
		await visible("已添加到购物车");
		return "POST /api/cart 200; the server holds the line with quantity 2";
	});

	const cartPage = async () => {
		const listed = waitApi("GET", "/api/cart");
		await openInApp("/cart");
		const data = ((await (await listed).json()) as any).data;
		await page.waitForTimeout(500);
		if (pageErrors.length) throw new Verdict("conflict", `GET /api/cart data is ${shapeOf(data)}; the client expects an array of lines`);
	};

	await step("cart page", async () => {
		await cartPage();
		await visible(A.name);
		await visible(`¥${(A.price * 2).toFixed(2)}`);
		return `one line: ${A.name} × 2, ¥${(A.price * 2).toFixed(2)}`;
	});

	await step("change a quantity (cart)", async () => {
		const plus = page.getByRole("button", { name: "+", exact: true });
		if (!(await plus.count())) await cartPage();
		const puts: string[] = [];
		const onReq = (r: { method(): string; url(): string }) => {
			if (r.method() === "PUT" && new URL(r.url()).pathname === "/api/cart") puts.push(r.url());
		};
		page.on("request", onReq);
		await plus.first().click();
		await visible("已更新");
		await visible(`¥${(A.price * 3).toFixed(2)}`);
		page.off("request", onReq);
		if (!puts.length) {
			const server = must<any>(await api(base, "GET", "/api/cart", undefined, await token()), "cart");
			throw new Verdict("client-limit", `the page shows 3, but the client only changes its local state (no PUT /api/cart): the server's line stays ${server.items[0]?.quantity}`);
		}
		return "quantity 3 on the page and on the server";
	});

	let orderNos: string[] = [];
	await step("checkout (order)", async () => {
		const btn = page.getByRole("button", { name: "去结算" });
		if (!(await btn.count())) await cartPage();
		const res = waitApi("POST", "/api/order/checkout");
		await btn.click();
		const body = (await (await res).json()) as any;
		if ((await res).status() !== 200) throw new Error(`POST /api/order/checkout → ${(await res).status()} ${JSON.stringify(body)}`);
		orderNos = (body.data.orders ?? body.data).map((o: any) => o.order_no);
		await page.waitForURL(`${site}/orders`);
		return `checkout made ${orderNos.join(", ")}; the client's toast counts data.length (${shapeOf(body.data)})`;
	});
	if (!orderNos.length) {
		// The next steps need an order whatever happened above: made as the client's "buy" would.
		const t = await token();
		orderNos = [must<{ order_no: string }>(await api(base, "POST", "/api/order", { product_id: A.id, quantity: 2 }, t), "order").order_no];
		await api(base, "DELETE", "/api/cart/clear", undefined, t);
	}

	const ordersPage = async () => {
		const listed = waitApi("GET", "/api/order");
		await openInApp("/orders");
		const data = ((await (await listed).json()) as any).data;
		await page.waitForTimeout(500);
		if (pageErrors.length) throw new Verdict("conflict", `GET /api/order data is ${shapeOf(data)} (SPEC's paged list); the client expects an array of orders`);
	};
	const card = (orderNo: string) => page.locator("div", { hasText: `订单号: ${orderNo}` }).filter({ has: page.getByRole("button") }).last();

	await step("orders page", async () => {
		await ordersPage();
		for (const no of orderNos) await visible(`订单号: ${no}`);
		await visible("待支付");
		return `${orderNos.length} order(s), pending payment`;
	});

	await step("pay", async () => {
		await ordersPage();
		const res = waitApi("POST", `/api/order/${orderNos[0]}/pay`);
		await card(orderNos[0]).getByRole("button", { name: "立即支付" }).click();
		if ((await res).status() !== 200) throw new Error(`pay → ${(await res).status()}`);
		await visible("支付成功！");
		await visible("订单已完成");
		const o = must<any>(await api(base, "GET", `/api/order/${orderNos[0]}`, undefined, await token()), "order");
		if (o.status !== 2) throw new Error(`the server says status ${o.status}`);
		return `${orderNos[0]} paid (status 2 on the server)`;
	});

	await step("cancel (another order)", async () => {
		const other = must<{ order_no: string }>(await api(base, "POST", "/api/order", { product_id: B.id, quantity: 1 }, await token()), "order").order_no;
		await ordersPage();
		const res = waitApi("POST", `/api/order/${other}/cancel`);
		await card(other).getByRole("button", { name: "取消订单" }).click();
		if ((await res).status() !== 200) throw new Error(`cancel → ${(await res).status()}`);
		await visible("订单已取消");
		const o = must<any>(await api(base, "GET", `/api/order/${other}`, undefined, await token()), "order");
		if (o.status !== 5) throw new Error(`the server says status ${o.status}`);
		return `${other} (made through POST /api/order) cancelled (status 5 on the server)`;
	});

	await step("flash-sale page", async () => {
		const asked: string[] = [];
		const onReq = (r: { url(): string }) => {
			if (new URL(r.url()).pathname.startsWith("/api/seckill")) asked.push(r.url());
		};
		page.on("request", onReq);
		await page.goto(`${site}/seckill`);
		await visible("正在秒杀");
		await page.waitForTimeout(500);
		page.off("request", onReq);
		const listed = must<any[]>(await api(base, "GET", "/api/seckill"), "seckill list");
		if (!listed.some(a => a.product_id === seed.flash.product_id)) throw new Error(`GET /api/seckill does not list the seeded activity: ${JSON.stringify(listed)}`);
		if (!asked.length && !(await page.getByText(seed.flash.name).count())) {
			throw new Verdict("client-limit", `the page shows the client's built-in sample list (iPhone 15 Pro Max, ...; its pictures point at http://localhost:8080/photos/) and never asks GoMall; GET /api/seckill lists the seeded "${seed.flash.name}"`);
		}
		return `lists "${seed.flash.name}"`;
	});

	await step("flash-sale purchase", async () => {
		const asked: string[] = [];
		const onReq = (r: { method(): string; url(): string }) => {
			if (r.method() === "POST" && new URL(r.url()).pathname === "/api/seckill") asked.push(r.url());
		};
		page.on("request", onReq);
		await page.getByRole("button", { name: "立即秒杀" }).first().click();
		await visible("秒杀成功！订单已创建", 5000).catch(() => undefined);
		await page.waitForTimeout(500);
		page.off("request", onReq);
		// What the client would have asked: the same call with its token, so GoMall's side is checked.
		const t = await token();
		const won = must<any>(await api(base, "POST", "/api/seckill", { product_id: seed.flash.product_id }, t), "POST /api/seckill");
		let result: any = null;
		for (let i = 0; i < 50; i++) {
			result = must<any>(await api(base, "GET", `/api/seckill/result?product_id=${seed.flash.product_id}`, undefined, t), "seckill result");
			if (result.status !== "queued") break;
			await new Promise(r => setTimeout(r, 200));
		}
		if (result?.status !== "success") throw new Error(`POST /api/seckill ${JSON.stringify(won)}, result ${JSON.stringify(result)}`);
		if (!asked.length) throw new Verdict("client-limit", `the button shows "秒杀成功" after a 1 s timer without any request; the same buy through the API: ${won.status} → ${result.status}, order ${result.order_no}`);
		return `bought through the page: order ${result.order_no}`;
	});

	await step("profile", async () => {
		const res = waitApi("GET", "/api/user/profile");
		await page.goto(`${site}/`);
		const body = (await (await res).json()) as any;
		if (body.data?.username !== username) throw new Error(`GET /api/user/profile gave ${JSON.stringify(body.data)}`);
		await visible(username);
		return "the client has no profile page: at start it restores the session with GET /api/user/profile, the name is in the header";
	});

	await step(
		"change password (POST /api/auth/change-password)",
		async () => {
			const next = "Passw0rd-e2e-2";
			const r = await fromPage("POST", "/api/auth/change-password", { old_password: password, new_password: next });
			if (r.status === 404) throw new Verdict("skipped", "404: not on this branch (sessions); the client defines the call but has no page for it");
			if (r.status !== 200 || r.body?.code !== 0) throw new Error(`HTTP ${r.status} ${JSON.stringify(r.body)}`);
			password = next;
			const again = must<{ token: string }>(await api(base, "POST", "/api/user/login", { username, password }), "login with the new password");
			await page.evaluate(t => localStorage.setItem("token", t), again.token);
			return "changed (called from the page as the client's userApi.changePassword would); the new password logs in";
		},
		[/\/api\/auth\/change-password → 404/]
	);

	await step(
		"log out",
		async () => {
			const before = await token();
			const r = await fromPage("POST", "/api/auth/logout");
			await page.goto(`${site}/`);
			await visible(username);
			await page.getByRole("button", { name: "退出" }).click();
			await visible("登录");
			if (await token()) throw new Error("the token is still in localStorage");
			if (r.status === 404) throw new Verdict("skipped", "the header's 退出 forgets the token (ok); POST /api/auth/logout answers 404: not on this branch (sessions)");
			if (r.status !== 200) throw new Error(`POST /api/auth/logout → ${r.status} ${JSON.stringify(r.body)}`);
			const after = await api(base, "GET", "/api/user/profile", undefined, before);
			if (after.status !== 401) throw new Error(`the logged-out token still reads the profile: HTTP ${after.status}`);
			return "退出 forgets the token; POST /api/auth/logout (which the client defines but does not call) ends the session: the old token gets 401";
		},
		[/\/api\/auth\/logout → 404/]
	);

	await step("GET /version", async () => {
		const r = await api(base, "GET", "/version");
		if (r.status === 404) throw new Verdict("skipped", "404: not on this branch (uploads/version); the client does not call it");
		return `${JSON.stringify(must(r, "/version"))}`;
	});

	if (outside.size) console.log(`blocked requests outside the static server: ${[...outside].join(", ")}`);
}

function printTable(results: StepResult[], out: string): void {
	const w = Math.max(...results.map(r => r.name.length), 4);
	console.log(`\n${"step".padEnd(w)}  ${"status".padEnd(12)}  detail`);
	for (const r of results) console.log(`${r.name.padEnd(w)}  ${r.status.padEnd(12)}  ${r.detail}${r.shot ? `  [${r.shot}]` : ""}`);
	console.log(`\nscreenshots in ${out}`);
}

// A stray rejection must not end the process before the cleanups have run.
process.on("unhandledRejection", err => console.error(`unhandled: ${(err as Error)?.message ?? err}`));
for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => void cleanUp().then(() => process.exit(130)));

main().then(
	code => process.exit(code),
	err => {
		console.error(err);
		process.exit(1);
	}
);
