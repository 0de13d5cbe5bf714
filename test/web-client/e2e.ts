/**
 * Drives the Go version's prebuilt web client (its frontend/dist, fetched by whoever runs
 * this: it is never part of this project) against GoMall in headless Chromium.
 *
 *   npm run e2e:web-client -- --dist /path/to/frontend/dist [--out dir] [--base-url http://host:port --admin user:password]
 *
 * Without --base-url a whole mall is started on a namespace, database and upload directory of
 * its own and removed at the end. The dist is served by a small static server here, which
 * proxies /api and /uploads to GoMall and, for this client only, rewrites the `data` of three
 * answers (see go-client-compat.ts). Each step prints ok / FAILED / skipped / client-limit,
 * the routes the adapter rewrote during it, and leaves a screenshot in --out; only FAILED
 * (or no step at all) makes the exit code non-zero:
 * - skipped: the route answers 404 (sessions, uploads and /version were built on other branches);
 * - client-limit: the client never asks the server here (sample data, local-only state); the
 *   step still checks what the server holds, and fails if that is wrong.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { Browser, chromium, Page } from "playwright-core";
import { ADMIN, cleanupNamespace, dropDatabase, startMallWith, testConfig, TestMall } from "../helpers/node";
import { adaptForGoClient, goClientRule } from "./go-client-compat";

type Status = "ok" | "FAILED" | "skipped" | "client-limit";

/** Ends a step with a status other than ok or FAILED. */
class Verdict extends Error {
	constructor(
		readonly status: Status,
		detail: string
	) {
		super(detail);
	}
}

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
		throw new Error(
			"usage: e2e --dist <the Go client's frontend/dist, with index.html> [--out dir] [--base-url url --admin user:password]"
		);
	}
	const admin = get("admin");
	const [username, password] = admin
		? [admin.slice(0, admin.indexOf(":")), admin.slice(admin.indexOf(":") + 1)]
		: [ADMIN.username, ADMIN.password];
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
	return Buffer.concat([
		Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
		chunk("IHDR", ihdr),
		chunk("IDAT", zlib.deflateSync(Buffer.concat(rows))),
		chunk("IEND", Buffer.alloc(0))
	]);
}

const PICTURES = new Map([
	["/seed-images/a.png", png(240, 240, [37, 99, 235])],
	["/seed-images/b.png", png(240, 240, [22, 163, 74])],
	["/seed-images/c.png", png(240, 240, [220, 38, 38])]
]);
const images_a = PICTURES.get("/seed-images/a.png")!;

// ---------------------------------------------------------------------------------------
// The static server: the dist with the SPA fallback, /api and /uploads proxied to GoMall.

const TYPES: Record<string, string> = {
	".html": "text/html; charset=utf-8",
	".js": "text/javascript",
	".css": "text/css",
	".svg": "image/svg+xml",
	".png": "image/png",
	".json": "application/json",
	".ico": "image/x-icon"
};

/** One answer the adapter rewrote (see go-client-compat.ts), for the step table. */
export interface Adapted {
	route: string;
}

function startStatic(
	dist: string,
	upstream: string,
	images: Map<string, Buffer>,
	adapted: Adapted[]
): Promise<{ url: string; close(): Promise<void> }> {
	const up = new URL(upstream);
	const server = http.createServer((req, res) => {
		const url = new URL(req.url ?? "/", "http://x");
		if (url.pathname === "/api" || url.pathname.startsWith("/api/") || url.pathname.startsWith("/uploads/")) {
			const rule = goClientRule(req.method, req.url);
			const headers = { ...req.headers, host: up.host };
			// The adapter reads the answer's JSON: ask for it uncompressed (GoMall does not compress anyway).
			if (rule) headers["accept-encoding"] = "identity";
			const proxied = http.request(
				{ host: up.hostname, port: up.port, method: req.method, path: req.url, headers },
				r => {
					if (!rule) {
						res.writeHead(r.statusCode ?? 502, r.headers);
						r.pipe(res);
						return;
					}
					const chunks: Buffer[] = [];
					r.on("data", (c: Buffer) => chunks.push(c));
					r.on("error", () => res.destroy());
					r.on("end", () => {
						const body = Buffer.concat(chunks);
						const rewritten = adaptForGoClient(rule, r.statusCode ?? 502, r.headers as Record<string, string>, body);
						if (rewritten) adapted.push({ route: `${rule.method} ${rule.path}` });
						const out = rewritten ?? body;
						res.writeHead(
							r.statusCode ?? 502,
							rewritten ? { ...r.headers, "content-length": String(out.length) } : r.headers
						);
						res.end(out);
					});
				}
			);
			proxied.on("error", () => {
				if (!res.headersSent) res.writeHead(502);
				res.end();
			});
			req.pipe(proxied);
			return;
		}
		const image = images.get(url.pathname);
		if (image) {
			res.writeHead(200, { "content-type": "image/png" }).end(image);
			return;
		}
		let file: string;
		try {
			file = path.join(dist, path.normalize(decodeURIComponent(url.pathname)));
		} catch {
			file = "";
		}
		if (!file.startsWith(dist + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile())
			file = path.join(dist, "index.html");
		res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
		fs.createReadStream(file).pipe(res);
	});
	return new Promise((resolve, reject) => {
		server.once("error", reject);
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
		});
	});
}

// ---------------------------------------------------------------------------------------
// A small API client for seeding and for checking what the server holds.

async function api(
	base: string,
	method: string,
	p: string,
	body?: unknown,
	token?: string | null
): Promise<{ status: number; body: any }> {
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

// ---------------------------------------------------------------------------------------

interface StepResult {
	name: string;
	status: Status;
	detail: string;
	/** The routes whose answers the compatibility adapter rewrote during the step. */
	adapter: string;
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
	const adapted: Adapted[] = [];
	try {
		let base = args.baseUrl;
		if (!base) {
			const uploads = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-web-client-uploads-"));
			cleanups.push(async () => fs.rmSync(uploads, { recursive: true, force: true }));
			const cfg = testConfig({ log: { level: "warn", requests: false }, upload: { dir: uploads } });
			// Registered before the start, so a start that fails half-way leaves nothing behind either.
			cleanups.push(async () => {
				await dropDatabase(cfg);
				await cleanupNamespace(cfg);
			});
			const mall: TestMall = await startMallWith(cfg);
			cleanups.push(() => mall.node.shutdown());
			base = mall.baseUrl;
			console.log(
				`mall at ${base}: namespace ${cfg.namespace}, database ${cfg.db.name}, uploads in ${uploads} (all removed at the end)`
			);
		}
		const site = await startStatic(args.dist, base, PICTURES, adapted);
		cleanups.push(() => site.close());

		const browser: Browser = await chromium.launch({
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
		cleanups.push(() => browser.close());
		const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, locale: "zh-CN" });
		await runSteps(page, base, site.url, args, results, adapted);
	} catch (err) {
		results.push({ name: "driver", status: "FAILED", detail: (err as Error).message, adapter: "", shot: "" });
	} finally {
		await cleanUp();
	}
	printTable(results, args.out);
	return results.some(r => r.status === "FAILED") || !results.length ? 1 : 0;
}

async function runSteps(
	page: Page,
	base: string,
	site: string,
	args: Args,
	results: StepResult[],
	adapted: Adapted[]
): Promise<void> {
	const pageErrors: string[] = [];
	const apiFailures: string[] = [];
	const outside = new Set<string>();
	page.on("pageerror", e => pageErrors.push(e.message));
	page.setDefaultTimeout(8000);
	page.on("response", r => {
		const u = new URL(r.url());
		if (u.pathname.startsWith("/api/") && r.status() >= 400)
			apiFailures.push(`${r.request().method()} ${u.pathname} → ${r.status()}`);
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
	const shotName = (name: string, number: number) =>
		`${String(number).padStart(2, "0")}-${name
			.replace(/[^a-z0-9]+/gi, "-")
			.replace(/^-|-$/g, "")
			.toLowerCase()}.png`;
	/**
	 * Runs one step. Its verdict is ok only if fn returned (every assertion in it held), the
	 * page threw nothing uncaught, and no /api answer failed that the step did not expect.
	 */
	const step = async (name: string, fn: () => Promise<string>, allowed: RegExp[] = [], screenshot = true) => {
		pageErrors.length = 0;
		apiFailures.length = 0;
		const adaptedBefore = adapted.length;
		const shot = shotName(name, ++n);
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
			status = "FAILED";
			detail = `page error: ${[...new Set(pageErrors)].join("; ")}${detail ? ` (${detail})` : ""}`;
		} else if (unexpected.length && status !== "FAILED") {
			status = "FAILED";
			detail = `failed /api answers: ${unexpected.join(", ")}${detail ? ` (${detail})` : ""}`;
		}
		if (screenshot) await page.screenshot({ path: path.join(args.out, shot), fullPage: true }).catch(() => undefined);
		const adapter = [...new Set(adapted.slice(adaptedBefore).map(a => a.route))].join(", ");
		results.push({ name, status, detail, adapter, shot: screenshot ? shot : "" });
		console.log(`${status.padEnd(12)} ${name}: ${detail}${adapter ? ` [adapter: ${adapter}]` : ""}`);
		return status;
	};
	const visible = (text: string | RegExp, timeout = 5000) =>
		page.getByText(text).first().waitFor({ state: "visible", timeout });
	/** Fails unless the text is on the page now and stays off it: for "must not show". */
	const absent = async (text: string | RegExp) => {
		if (await page.getByText(text).count()) throw new Error(`the page shows ${String(text)}`);
	};
	/**
	 * Opens a page of the client the way a user gets there: the client keeps only the token
	 * across loads and the cart page asks for the cart once, at mount, only if the session is
	 * already restored; so a fresh load of /cart shows "please log in". Home first, then the link.
	 */
	const openInApp = async (to: string) => {
		await page.goto(`${site}/`);
		await visible(username);
		await page.locator(`header a[href="${to}"]`).first().click();
		await page.waitForURL(`${site}${to}`);
	};
	const token = () => page.evaluate(() => localStorage.getItem("token"));
	const waitApi = (method: string, p: string | RegExp) => {
		const res = page.waitForResponse(
			r =>
				r.request().method() === method &&
				(typeof p === "string" ? new URL(r.url()).pathname === p : p.test(new URL(r.url()).pathname)),
			{ timeout: 10000 }
		);
		// Awaited only on the path that needs it; a step that ends early must not leave a rejection behind.
		res.catch(() => undefined);
		return res;
	};
	/**
	 * A call the client defines but never makes, made from the page (same origin, through the
	 * static server) with the client's token, or with the token given.
	 */
	const fromPage = (method: string, p: string, body?: unknown, withToken?: string | null) =>
		page.evaluate(
			async ({ method, p, body, withToken }) => {
				const t = withToken ?? localStorage.getItem("token");
				const headers: Record<string, string> = { "content-type": "application/json" };
				if (t) headers.authorization = `Bearer ${t}`;
				const r = await fetch(p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
				return { status: r.status, body: (await r.json().catch(() => null)) as any };
			},
			{ method, p, body, withToken }
		);
	/** What GoMall holds in the buyer's cart (asked directly, not through the adapter). */
	const serverCart = async () =>
		must<{ items: any[]; total_count: number; total_price: number }>(
			await api(base, "GET", "/api/cart", undefined, await token()),
			"GET /api/cart"
		);
	const serverOrder = async (no: string) =>
		must<any>(await api(base, "GET", `/api/order/${no}`, undefined, await token()), `GET /api/order/${no}`);
	const badge = () => page.locator("header [class*=cartBadge]").first();

	// ---- seed (admin API) ------------------------------------------------------------
	const admin = must<{ token: string }>(await api(base, "POST", "/api/user/login", args.admin), "admin login").token;
	let uploadedUrl: string | null = null;
	await step("seed: upload a product image (POST /api/upload)", async () => {
		const form = new FormData();
		form.append("file", new Blob([new Uint8Array(images_a)], { type: "image/png" }), "e2e-a.png");
		const res = await fetch(`${base}/api/upload`, {
			method: "POST",
			headers: { authorization: `Bearer ${admin}` },
			body: form
		});
		if (res.status === 404)
			throw new Verdict(
				"skipped",
				"POST /api/upload answers 404: not on this branch (uploads); the seed uses the driver's own pictures"
			);
		const body: any = await res.json().catch(() => null);
		const url: string | undefined = body?.data?.url ?? body?.data?.file_url ?? body?.data?.image_url;
		if (res.status !== 200 || !url) throw new Error(`HTTP ${res.status} ${JSON.stringify(body)}`);
		uploadedUrl = url.replace(/^https?:\/\/[^/]+/, "");
		const back = await fetch(site + uploadedUrl);
		const bytes = Buffer.from(await back.arrayBuffer());
		if (back.status !== 200 || !bytes.equals(images_a))
			throw new Error(
				`${uploadedUrl} through the proxy: HTTP ${back.status}, ${bytes.length} bytes, not the uploaded ones`
			);
		// The page shows the picture itself, from the static server's origin.
		await page.goto(site + uploadedUrl);
		return `uploaded, served back byte-identical at ${uploadedUrl} (through the static server), used as the first product's image_url`;
	});
	const seed: Seeded = { products: [], flash: { product_id: 0, name: "" } };
	const suffix = crypto.randomBytes(2).toString("hex");
	for (const p of [
		{
			name: `E2E 降噪耳机 ${suffix}`,
			price: 199,
			stock: 50,
			category: "手机数码",
			description: "Seeded by the web-client driver: on the shelf, 50 in stock.",
			image_url: uploadedUrl ?? "/seed-images/a.png",
			status: 1
		},
		{
			name: `E2E 机械键盘 ${suffix}`,
			price: 19.99,
			stock: 20,
			category: "电脑办公",
			description: "Seeded by the web-client driver: the second product.",
			image_url: "/seed-images/b.png",
			status: 1
		},
		{
			name: `E2E 秒杀手表 ${suffix}`,
			price: 99,
			stock: 10,
			category: "手机数码",
			description: "Seeded by the web-client driver: on flash sale.",
			image_url: "/seed-images/c.png",
			status: 1
		}
	]) {
		const created = must<{ id: number }>(await api(base, "POST", "/api/product", p, admin), "create product");
		seed.products.push({ id: created.id, name: p.name, price: p.price, stock: p.stock, image_url: p.image_url });
	}
	const flashProduct = seed.products[2];
	must(
		await api(
			base,
			"POST",
			"/api/seckill/init",
			{
				product_id: flashProduct.id,
				stock: 5,
				seckill_price: 9.9,
				start_time: new Date(Date.now() - 60_000).toISOString(),
				end_time: new Date(Date.now() + 3_600_000).toISOString()
			},
			admin
		),
		"seckill init"
	);
	seed.flash = { product_id: flashProduct.id, name: flashProduct.name };
	const [A, B] = seed.products;
	const yuan = (v: number) => `¥${v.toFixed(2)}`;

	// ---- the client ---------------------------------------------------------------------
	const username = `web_${crypto.randomBytes(4).toString("hex")}`;
	let password = "Passw0rd-e2e";
	/** The client's login form, filled; submitLogin sends it and gives GoMall's answer. */
	const fillLogin = async (pw: string) => {
		await page.goto(`${site}/login`);
		await page.fill("#username", username);
		await page.fill("#password", pw);
	};
	const submitLogin = async () => {
		const res = waitApi("POST", "/api/user/login");
		await page.click("main button[type=submit]");
		return res;
	};
	/** The session register opened: the client drops it on 退出 without ending it; change-password must end it. */
	let registerToken: string | null = null;

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
		registerToken = await token();
		if (!registerToken) throw new Error("no token in localStorage");
		return `registered ${username}, landed on / with the name in the header`;
	});

	await step("login (home page)", async () => {
		await page.getByRole("button", { name: "退出" }).click();
		await visible("登录");
		await fillLogin(password);
		const res = await submitLogin();
		if (res.status() !== 200) throw new Error(`POST /api/user/login → ${res.status()}`);
		await page.waitForURL(`${site}/`);
		await visible(username);
		await visible(A.name);
		if ((await token()) === registerToken) throw new Error("the login kept the register's token");
		return "logged in (a second session); the home page lists the seeded products";
	});

	await step("product list", async () => {
		await page.goto(`${site}/products`);
		for (const p of seed.products) await visible(p.name);
		await visible(A.price.toFixed(2));
		await visible(B.price.toFixed(2));
		const imgs = await page.$$eval("img", imgs =>
			imgs.map(i => ({ src: i.src, ok: i.complete && i.naturalWidth > 0 }))
		);
		const ours = imgs.filter(i => i.src.includes("/seed-images/") || i.src.includes("/uploads/"));
		const broken = ours.filter(i => !i.ok).map(i => i.src);
		if (broken.length) throw new Error(`pictures not loaded: ${broken.join(", ")}`);
		if (ours.length < seed.products.length) throw new Error(`only ${ours.length} seeded pictures on the page`);
		if (uploadedUrl && !ours.some(i => i.src.endsWith(uploadedUrl!)))
			throw new Error(`the uploaded picture ${uploadedUrl} is not on the page`);
		return `${seed.products.length} seeded products with prices and pictures${uploadedUrl ? " (the first one's is the uploaded file)" : ""}`;
	});

	await step("product detail", async () => {
		await page.getByRole("link", { name: A.name }).first().click();
		await page.waitForURL(`${site}/products/${A.id}`);
		await page.getByRole("heading", { name: A.name }).waitFor({ timeout: 5000 });
		await visible(A.price.toFixed(2));
		await visible(`${A.stock} 件`);
		return `/products/${A.id}: name, price ${yuan(A.price)}, stock ${A.stock}`;
	});

	/** On a product's page: the quantity up to `quantity`, then 加入购物车; the client then reloads the cart (GET /api/cart). */
	const addToCart = async (quantity: number) => {
		for (let i = 1; i < quantity; i++) await page.getByRole("button", { name: "+", exact: true }).click();
		const added = waitApi("POST", "/api/cart");
		const listed = waitApi("GET", "/api/cart");
		await page.getByRole("button", { name: "加入购物车" }).click();
		if ((await added).status() !== 200) throw new Error(`POST /api/cart → ${(await added).status()}`);
		if ((await listed).status() !== 200) throw new Error(`GET /api/cart → ${(await listed).status()}`);
		await visible("已添加到购物车");
	};

	await step("add to cart", async () => {
		await addToCart(2);
		await badge().filter({ hasText: /^2$/ }).waitFor({ timeout: 5000 });
		const server = await serverCart();
		const line = server.items.find(i => i.product_id === A.id);
		if (line?.quantity !== 2 || server.items.length !== 1)
			throw new Error(`the server's cart holds ${JSON.stringify(server.items)}`);
		return `${A.name} × 2 from its page: toast 已添加到购物车, the header's cart badge shows 2; the server holds the line with quantity 2`;
	});

	await step("add a second product to the cart", async () => {
		await page.goto(`${site}/products/${B.id}`);
		await page.getByRole("heading", { name: B.name }).waitFor({ timeout: 5000 });
		// A fresh load: the client restores the session, but its cart store starts empty until it asks again.
		await addToCart(1);
		await badge().filter({ hasText: /^3$/ }).waitFor({ timeout: 5000 });
		const server = await serverCart();
		if (server.items.length !== 2 || server.total_count !== 3)
			throw new Error(`the server's cart holds ${JSON.stringify(server.items)}`);
		return `${B.name} × 1: the badge shows 3 (the client reloaded both lines); the server holds 2 lines, 3 items`;
	});

	const cartPage = async () => {
		const listed = waitApi("GET", "/api/cart");
		await openInApp("/cart");
		if ((await listed).status() !== 200) throw new Error(`GET /api/cart → ${(await listed).status()}`);
		await page.getByRole("heading", { name: "购物车" }).waitFor({ timeout: 5000 });
	};
	/** The cart page's line of a product: the element that holds its name and its own +/- buttons. */
	const cartLine = (name: string) =>
		page
			.locator("div", { has: page.getByRole("heading", { name }) })
			.filter({ has: page.getByRole("button", { name: "+", exact: true }) })
			.last();

	await step("cart page", async () => {
		await cartPage();
		await visible("2 件商品");
		await cartLine(A.name)
			.getByText(yuan(A.price * 2))
			.waitFor({ timeout: 5000 });
		await cartLine(B.name).getByText(yuan(B.price)).first().waitFor({ timeout: 5000 });
		await visible(yuan(A.price * 2 + B.price));
		return `2 lines: ${A.name} × 2 = ${yuan(A.price * 2)}, ${B.name} × 1 = ${yuan(B.price)}; total ${yuan(A.price * 2 + B.price)}`;
	});

	await step("change a quantity (cart)", async () => {
		const puts: string[] = [];
		const onReq = (r: { method(): string; url(): string }) => {
			if (r.method() === "PUT" && new URL(r.url()).pathname === "/api/cart") puts.push(r.url());
		};
		page.on("request", onReq);
		await cartLine(A.name).getByRole("button", { name: "+", exact: true }).click();
		await visible("已更新");
		await cartLine(A.name)
			.getByText(yuan(A.price * 3))
			.waitFor({ timeout: 5000 });
		await visible(yuan(A.price * 3 + B.price));
		await page.waitForTimeout(500);
		page.off("request", onReq);
		const line = (await serverCart()).items.find(i => i.product_id === A.id);
		if (puts.length) {
			if (line?.quantity !== 3) throw new Error(`PUT /api/cart sent, but the server's line holds ${line?.quantity}`);
			return "quantity 3 on the page and on the server";
		}
		if (line?.quantity !== 2) throw new Error(`no PUT /api/cart, yet the server's line holds ${line?.quantity}`);
		throw new Verdict(
			"client-limit",
			`the page shows ${A.name} × 3 (${yuan(A.price * 3)}) and toasts 已更新, but the client only changes its own state (no PUT /api/cart): GET /api/cart still holds 2`
		);
	});

	let orderNos: string[] = [];
	await step("checkout (order)", async () => {
		const res = waitApi("POST", "/api/order/checkout");
		await page.getByRole("button", { name: "去结算" }).click();
		const answer = await res;
		const body = (await answer.json()) as any;
		if (answer.status() !== 200 || !Array.isArray(body?.data))
			throw new Error(`POST /api/order/checkout → ${answer.status()} ${JSON.stringify(body)}`);
		orderNos = body.data.map((o: any) => o.order_no);
		await visible("结算成功，生成 2 个订单");
		await page.waitForURL(`${site}/orders`);
		const server = await serverCart();
		if (server.items.length) throw new Error(`the server's cart still holds ${JSON.stringify(server.items)}`);
		const orders = await Promise.all(orderNos.map(serverOrder));
		const a = orders.find(o => o.product_id === A.id);
		const b = orders.find(o => o.product_id === B.id);
		if (orders.length !== 2 || a?.quantity !== 2 || b?.quantity !== 1 || a.status !== 1 || b.status !== 1)
			throw new Error(`the server's orders: ${JSON.stringify(orders)}`);
		return `toast 结算成功，生成 2 个订单; the server made ${orderNos.join(", ")} (pending), from ITS cart: ${A.name} × 2 (not the page's 3), ${B.name} × 1; the cart is empty`;
	});

	const ordersPage = async () => {
		const listed = waitApi("GET", "/api/order");
		await openInApp("/orders");
		if ((await listed).status() !== 200) throw new Error(`GET /api/order → ${(await listed).status()}`);
		await page.getByRole("heading", { name: "我的订单" }).waitFor({ timeout: 5000 });
	};
	/** An order's card on the orders page: the element that holds its number and its status. */
	const card = (orderNo: string) =>
		page
			.locator("div", { hasText: `订单号: ${orderNo}` })
			.filter({ has: page.getByRole("heading") })
			.last();
	const orderOf = async (productId: number) => {
		for (const no of orderNos) if ((await serverOrder(no)).product_id === productId) return no;
		throw new Error(`no order of product ${productId} among ${orderNos.join(", ")}`);
	};

	await step("orders page", async () => {
		await ordersPage();
		await visible(`${orderNos.length} 个订单`);
		const [noA, noB] = [await orderOf(A.id), await orderOf(B.id)];
		for (const [no, p, q] of [
			[noA, A, 2],
			[noB, B, 1]
		] as const) {
			const c = card(no);
			await c.getByRole("heading", { name: p.name }).waitFor({ timeout: 5000 });
			await c.getByText(`数量: ${q} 件`).waitFor({ timeout: 5000 });
			await c.getByText(yuan(p.price * q)).waitFor({ timeout: 5000 });
			await c.getByText("待支付").waitFor({ timeout: 5000 });
		}
		return `${noA}: ${A.name} × 2 ${yuan(A.price * 2)} 待支付; ${noB}: ${B.name} × 1 ${yuan(B.price)} 待支付`;
	});

	await step("pay", async () => {
		const no = await orderOf(A.id);
		const res = waitApi("POST", `/api/order/${no}/pay`);
		await card(no).getByRole("button", { name: "立即支付" }).click();
		if ((await res).status() !== 200) throw new Error(`pay → ${(await res).status()}`);
		await visible("支付成功！");
		await card(no).getByText("已支付").waitFor({ timeout: 5000 });
		await card(no).getByText("订单已完成").waitFor({ timeout: 5000 });
		const o = await serverOrder(no);
		if (o.status !== 2) throw new Error(`the server says status ${o.status}`);
		return `${no} (${A.name}) paid through its 立即支付: the card shows 已支付; status 2 on the server`;
	});

	await step("cancel (another order)", async () => {
		const no = await orderOf(B.id);
		const res = waitApi("POST", `/api/order/${no}/cancel`);
		await card(no).getByRole("button", { name: "取消订单" }).click();
		if ((await res).status() !== 200) throw new Error(`cancel → ${(await res).status()}`);
		await visible("订单已取消");
		// This build of the client names only statuses 1 (待支付) and 2 (已支付): a cancelled
		// order (5) reads 未知状态, without buttons.
		await card(no).getByText("未知状态").waitFor({ timeout: 5000 });
		if (await card(no).getByRole("button").count()) throw new Error("the cancelled order's card still has buttons");
		await card(await orderOf(A.id))
			.getByText("已支付")
			.waitFor({ timeout: 5000 });
		const o = await serverOrder(no);
		if (o.status !== 5) throw new Error(`the server says status ${o.status}`);
		return `${no} (${B.name}, from the same checkout) cancelled through its 取消订单: toast 订单已取消, status 5 on the server; the card loses its buttons and reads 未知状态 (this build of the client names only 待支付 and 已支付); the paid one stays 已支付`;
	});

	await step("flash-sale page", async () => {
		const asked: string[] = [];
		const onReq = (r: { url(): string }) => {
			if (new URL(r.url()).pathname.startsWith("/api/seckill")) asked.push(r.url());
		};
		page.on("request", onReq);
		await openInApp("/seckill");
		await visible("正在秒杀");
		await page.waitForTimeout(500);
		page.off("request", onReq);
		const listed = must<any[]>(await api(base, "GET", "/api/seckill"), "seckill list");
		if (!listed.some(a => a.product_id === seed.flash.product_id))
			throw new Error(`GET /api/seckill does not list the seeded activity: ${JSON.stringify(listed)}`);
		if (!asked.length && !(await page.getByText(seed.flash.name).count())) {
			throw new Verdict(
				"client-limit",
				`the page shows the client's built-in sample list (iPhone 15 Pro Max, ...; its pictures point at http://localhost:8080/photos/) and never asks GoMall; GET /api/seckill lists the seeded "${seed.flash.name}"`
			);
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
		await visible("秒杀成功！订单已创建");
		await page.waitForURL(`${site}/orders`);
		page.off("request", onReq);
		if (asked.length)
			throw new Error("the client asked POST /api/seckill: this driver's client-limit verdict is out of date");
		// What the client would have asked: the same call, from the page, with its token.
		const won = await fromPage("POST", "/api/seckill", { product_id: seed.flash.product_id });
		if (won.status !== 200 || won.body?.code !== 0)
			throw new Error(`POST /api/seckill from the page → ${won.status} ${JSON.stringify(won.body)}`);
		let result: any = null;
		for (let i = 0; i < 50; i++) {
			result = (await fromPage("GET", `/api/seckill/result?product_id=${seed.flash.product_id}`)).body?.data;
			if (result?.status !== "queued") break;
			await page.waitForTimeout(200);
		}
		if (result?.status !== "success" || !result.order_no)
			throw new Error(`POST /api/seckill ${JSON.stringify(won.body)}, result ${JSON.stringify(result)}`);
		// The flash-sale order on the client's own orders page, at the flash price.
		await ordersPage();
		await visible("3 个订单");
		const c = card(result.order_no);
		await c.getByRole("heading", { name: seed.flash.name }).waitFor({ timeout: 5000 });
		await c.getByText(yuan(9.9)).waitFor({ timeout: 5000 });
		await c.getByText("待支付").waitFor({ timeout: 5000 });
		throw new Verdict(
			"client-limit",
			`立即秒杀 on the sample list toasts 秒杀成功！订单已创建 after a 1 s timer, with no request; the same buy made from the page with the client's token (POST /api/seckill → ${won.body.data.status}, result ${result.status}) made ${result.order_no}, which the orders page then shows: ${seed.flash.name} ${yuan(9.9)} 待支付`
		);
	});

	await step("profile", async () => {
		const res = waitApi("GET", "/api/user/profile");
		await page.goto(`${site}/`);
		const body = (await (await res).json()) as any;
		if (body.data?.username !== username) throw new Error(`GET /api/user/profile gave ${JSON.stringify(body.data)}`);
		await page.locator("header").getByText(username).waitFor({ timeout: 5000 });
		return "the client has no profile page: at start it restores the session with GET /api/user/profile, whose username the header shows";
	});

	const oldPassword = password;
	const newPassword = "Passw0rd-e2e-2";
	await step(
		"change password (POST /api/auth/change-password, from the page)",
		async () => {
			const current = await token();
			const r = await fromPage("POST", "/api/auth/change-password", {
				old_password: oldPassword,
				new_password: newPassword
			});
			if (r.status === 404)
				throw new Verdict(
					"skipped",
					"404: not on this branch (sessions); the client defines the call but has no page for it"
				);
			if (r.status !== 200 || r.body?.code !== 0) throw new Error(`HTTP ${r.status} ${JSON.stringify(r.body)}`);
			password = newPassword;
			// The register's session, which the client forgot without ending, is over; the page's own goes on.
			const other = await api(base, "GET", "/api/user/profile", undefined, registerToken);
			if (other.status !== 401) throw new Error(`the register's session still reads the profile: HTTP ${other.status}`);
			const mine = await api(base, "GET", "/api/user/profile", undefined, current);
			if (mine.status !== 200) throw new Error(`the page's own session was ended too: HTTP ${mine.status}`);
			const wrong = await fromPage("POST", "/api/auth/change-password", {
				old_password: oldPassword,
				new_password: "Passw0rd-e2e-3"
			});
			if (wrong.status !== 400 || wrong.body?.code !== 10004)
				throw new Error(`the old password again: HTTP ${wrong.status} ${JSON.stringify(wrong.body)}`);
			await page.reload();
			await page.locator("header").getByText(username).waitFor({ timeout: 5000 });
			return `changed (the call the client's userApi defines, made from the page with its token); the register's session now gets 401 (${other.body?.code}), the page's own still works; the old password again → 400/10004`;
		},
		[/POST \/api\/auth\/change-password → 400/]
	);

	await step(
		"log in with the old password (refused)",
		async () => {
			if (password === oldPassword) throw new Verdict("skipped", "the password was not changed");
			await page.getByRole("button", { name: "退出" }).click();
			await visible("登录");
			await fillLogin(oldPassword);
			// The client toasts GoMall's message, but its 401 handler (the response interceptor)
			// reloads /login at the same moment, so the toast is gone before a screenshot can be
			// taken (holding the reload back and raw DevTools captures did not catch it either).
			// A probe records whether the page showed it, in sessionStorage, which outlives the reload.
			const body = (await api(base, "POST", "/api/user/login", { username, password: oldPassword })).body;
			if (body?.code !== 10004) throw new Error(`the old password through the API: ${JSON.stringify(body)}`);
			await page.evaluate(message => {
				// Runs in the page (this file is compiled without the DOM's types).
				const w = globalThis as any;
				w.sessionStorage.removeItem("e2e-toast");
				new w.MutationObserver((_m: unknown, observer: { disconnect(): void }) => {
					if (w.document.body.innerText.includes(message)) {
						w.sessionStorage.setItem("e2e-toast", message);
						observer.disconnect();
					}
				}).observe(w.document.body, { childList: true, subtree: true, characterData: true });
			}, body.message as string);
			const answer = await submitLogin();
			if (answer.status() !== 401) throw new Error(`POST /api/user/login with the old password → ${answer.status()}`);
			await page.waitForTimeout(2000);
			await page.waitForLoadState("load");
			const seen = await page.evaluate(() => (globalThis as any).sessionStorage.getItem("e2e-toast") as string | null);
			if (seen !== body.message) throw new Error(`the client never showed "${body.message}"`);
			if (!page.url().startsWith(`${site}/login`)) throw new Error(`the client went to ${page.url()}`);
			await page.locator("#password").waitFor({ timeout: 5000 });
			if (await token()) throw new Error("a token was stored");
			return `POST /api/user/login → 401/10004; the page showed "${body.message}" (a toast, seen by a probe: the client's 401 handler reloads /login at once, so no screenshot has it); then /login again, logged out, no token`;
		},
		[/POST \/api\/user\/login → 401/]
	);

	await step("log in with the new password", async () => {
		if (password === oldPassword) throw new Verdict("skipped", "the password was not changed");
		await fillLogin(password);
		const res = await submitLogin();
		if (res.status() !== 200) throw new Error(`POST /api/user/login → ${res.status()}`);
		await page.waitForURL(`${site}/`);
		await visible("登录成功！");
		await page.locator("header").getByText(username).waitFor({ timeout: 5000 });
		return "the client's login page with the new password: 登录成功！, the name in the header";
	});

	await step("log out", async () => {
		const held = await token();
		if (!held) throw new Error("the client holds no token");
		// The login step's toast goes first, so the screenshot shows only what 退出 did.
		await page.getByText("登录成功！").waitFor({ state: "hidden", timeout: 8000 });
		await page.getByRole("button", { name: "退出" }).click();
		await visible("登录");
		await absent(username);
		if (await token()) throw new Error("the token is still in localStorage");
		// 退出 only forgets the token; the call the client defines but never makes, with the token it held.
		const r = await fromPage("POST", "/api/auth/logout", undefined, held);
		if (r.status === 404)
			throw new Verdict(
				"skipped",
				"the header's 退出 forgets the token; POST /api/auth/logout answers 404: not on this branch (sessions)"
			);
		if (r.status !== 200 || r.body?.code !== 0)
			throw new Error(`POST /api/auth/logout → ${r.status} ${JSON.stringify(r.body)}`);
		const after = await api(base, "GET", "/api/user/profile", undefined, held);
		if (after.status !== 401 || after.body?.code !== 10006)
			throw new Error(`the logged-out token reads the profile: HTTP ${after.status} ${JSON.stringify(after.body)}`);
		return "退出 forgets the token (the header shows 登录/注册); POST /api/auth/logout with the token it held (the client never calls it) ends the session: that token then gets 401/10006";
	});

	// The client never asks for it: an API check, without a screenshot.
	await step(
		"GET /version",
		async () => {
			const r = await api(base, "GET", "/version");
			if (r.status === 404)
				throw new Verdict("skipped", "404: not on this branch (uploads/version); the client does not call it");
			return `${JSON.stringify(must(r, "/version"))} (the client does not call it)`;
		},
		[],
		false
	);

	if (outside.size) console.log(`blocked requests outside the static server: ${[...outside].join(", ")}`);
}

function printTable(results: StepResult[], out: string): void {
	const w = Math.max(...results.map(r => r.name.length), 4);
	console.log(`\n${"step".padEnd(w)}  ${"status".padEnd(12)}  ${"adapter".padEnd(26)}  detail`);
	for (const r of results)
		console.log(
			`${r.name.padEnd(w)}  ${r.status.padEnd(12)}  ${(r.adapter || "-").padEnd(26)}  ${r.detail}${r.shot ? `  [${r.shot}]` : ""}`
		);
	console.log(`\nscreenshots in ${out}`);
}

// A stray rejection must not end the process before the cleanups have run.
process.on("unhandledRejection", err => console.error(`unhandled: ${(err as Error)?.message ?? err}`));
for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => void cleanUp().then(() => process.exit(130)));
// A throw outside a step (in a server callback, say) would end the process with the mall still up.
process.on("uncaughtException", err => {
	console.error(`uncaught: ${err.message}`);
	void cleanUp().then(() => process.exit(1));
});

main().then(
	code => process.exit(code),
	err => {
		console.error(err);
		process.exit(1);
	}
);
