import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ALL_SERVICES, GomallNode, startNode } from "../../bootstrap/node";
import { setConfig } from "../../config";
import { startMall, TestMall } from "../helpers/node";

/** A real 1x1 PNG and a real 1x1 baseline JPEG. */
const PNG = Buffer.from(
	"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
	"base64"
);
const JPEG = Buffer.from(
	"/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////////////////////////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgBAQABPxA=",
	"base64"
);
const SCRIPT = Buffer.from("#!/bin/sh\necho '<script>alert(1)</script>'\nrm -rf /\n");
const MAX_BYTES = 4096;
const MAX_FILES = 3;

let mall: TestMall;
let dir: string;
let token: string;

beforeAll(async () => {
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-upload-"));
	mall = await startMall({ upload: { dir, max_bytes: MAX_BYTES, max_files: MAX_FILES }, build: "test-build-42" });
	token = (await mall.http.newUser("up")).token;
});
afterAll(async () => {
	await mall?.stop();
	fs.rmSync(dir, { recursive: true, force: true });
});

/** Every file under the upload directory, staged ones included. */
function filesOnDisk(): string[] {
	return (fs.readdirSync(dir, { recursive: true, withFileTypes: true }) as fs.Dirent[])
		.filter(d => d.isFile())
		.map(d => path.relative(dir, path.join(d.parentPath, d.name)))
		.sort();
}

type Part = { field?: string; name: string; bytes: Buffer; type?: string };

/** A counter's value on a gateway's /metrics (NaN when absent). */
async function metric(baseUrl: string, name: string): Promise<number> {
	const text = await (await fetch(`${baseUrl}/metrics`)).text();
	const line = text.split("\n").find(l => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
	return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : NaN;
}

/** Sets a file's times back, as if it had been stored `hours` ago. */
function age(file: string, hours: number): void {
	const t = (Date.now() - hours * 3600_000) / 1000;
	fs.utimesSync(file, t, t);
}

async function upload(route: "/api/upload" | "/api/upload/multi", parts: Part[], auth: string | null = token) {
	const form = new FormData();
	for (const p of parts)
		form.append(
			p.field ?? (route === "/api/upload" ? "file" : "files"),
			new Blob([new Uint8Array(p.bytes)], { type: p.type ?? "image/png" }),
			p.name
		);
	const res = await fetch(mall.baseUrl + route, {
		method: "POST",
		body: form,
		headers: auth ? { authorization: `Bearer ${auth}` } : {}
	});
	return { status: res.status, body: (await res.json()) as any, headers: res.headers };
}

/** A refused request: the status and code asked for, the envelope, and nothing new on disk. */
async function expectRefused(run: () => Promise<{ status: number; body: any }>, status: number, code: number) {
	const before = filesOnDisk();
	const r = await run();
	expect([r.status, r.body.code]).toEqual([status, code]);
	expect(r.body).toMatchObject({ data: null });
	expect(typeof r.body.trace_id).toBe("string");
	expect(JSON.stringify(r.body)).not.toContain(dir);
	expect(filesOnDisk()).toEqual(before);
	return r;
}

describe("POST /api/upload and /api/upload/multi", () => {
	it("stores a PNG under a generated name and serves it back byte for byte, typed, nosniff, cached for good", async () => {
		const r = await upload("/api/upload", [{ name: "photo.png", bytes: PNG }]);
		expect(r.status).toBe(200);
		expect(r.body.code).toBe(0);
		const f = r.body.data;
		expect(f).toMatchObject({ filename: "photo.png", size: PNG.length, content_type: "image/png" });
		expect(f.name).toMatch(/^[0-9a-f]{32}\.png$/);
		expect(f.url).toBe(`/uploads/${f.name}`);
		expect(fs.readFileSync(path.join(dir, f.name)).equals(PNG)).toBe(true);

		const got = await fetch(mall.baseUrl + f.url);
		expect(got.status).toBe(200);
		expect(got.headers.get("content-type")).toBe("image/png");
		expect(got.headers.get("x-content-type-options")).toBe("nosniff");
		expect(got.headers.get("cache-control")).toMatch(/max-age=31536000/);
		expect(Buffer.from(await got.arrayBuffer()).equals(PNG)).toBe(true);

		// The URL is what a product's image_url takes.
		const admin = await mall.http.adminToken();
		const p = await mall.http.post("/api/product", { name: "Pictured", price: 1.5, stock: 1, image_url: f.url }, admin);
		expect(p.status).toBe(200);
		expect((await mall.http.get(`/api/product/${p.body.data.id}`)).body.data.image_url).toBe(f.url);
	});

	it("names a file by its bytes: a JPEG sent as 'x.png' with type image/png is stored and served as image/jpeg", async () => {
		const r = await upload("/api/upload", [{ name: "x.png", bytes: JPEG, type: "image/png" }]);
		expect(r.status).toBe(200);
		expect(r.body.data).toMatchObject({ content_type: "image/jpeg", size: JPEG.length });
		expect(r.body.data.name).toMatch(/^[0-9a-f]{32}\.jpg$/);
		const got = await fetch(mall.baseUrl + r.body.data.url);
		expect(got.headers.get("content-type")).toBe("image/jpeg");
		expect(got.headers.get("x-content-type-options")).toBe("nosniff");
		expect(Buffer.from(await got.arrayBuffer()).equals(JPEG)).toBe(true);
	});

	it("stores several files at once and answers an array in their order", async () => {
		const r = await upload("/api/upload/multi", [
			{ name: "a.jpg", bytes: JPEG, type: "image/jpeg" },
			{ name: "b.png", bytes: PNG }
		]);
		expect(r.status).toBe(200);
		expect(r.body.data).toHaveLength(2);
		expect(r.body.data.map((f: any) => f.content_type)).toEqual(["image/jpeg", "image/png"]);
		for (const [f, bytes] of [
			[r.body.data[0], JPEG],
			[r.body.data[1], PNG]
		] as [any, Buffer][]) {
			const got = await fetch(mall.baseUrl + f.url);
			expect(got.status).toBe(200);
			expect(Buffer.from(await got.arrayBuffer()).equals(bytes)).toBe(true);
		}
		// Nothing left staged once the request is answered.
		expect(filesOnDisk().filter(f => f.startsWith(".incoming"))).toEqual([]);
	});

	it("refuses a script renamed .png (400/70003), alone or among good images, and keeps nothing", async () => {
		await expectRefused(() => upload("/api/upload", [{ name: "evil.png", bytes: SCRIPT }]), 400, 70003);
		await expectRefused(() => upload("/api/upload", [{ name: "empty.png", bytes: Buffer.alloc(0) }]), 400, 70003);
		// All or nothing: the good images of a refused request are not kept either.
		await expectRefused(
			() =>
				upload("/api/upload/multi", [
					{ name: "a.png", bytes: PNG },
					{ name: "b.jpg", bytes: JPEG },
					{ name: "evil.png", bytes: SCRIPT }
				]),
			400,
			70003
		);
		await expectRefused(
			() =>
				upload("/api/upload/multi", [
					{ name: "evil.png", bytes: SCRIPT },
					{ name: "a.png", bytes: PNG }
				]),
			400,
			70003
		);
	});

	it("refuses a file over upload.max_bytes (413/70002), a partial one included, and keeps nothing", async () => {
		const big = Buffer.concat([PNG, Buffer.alloc(MAX_BYTES)]);
		await expectRefused(() => upload("/api/upload", [{ name: "big.png", bytes: big }]), 413, 70002);
		await expectRefused(
			() =>
				upload("/api/upload/multi", [
					{ name: "a.png", bytes: PNG },
					{ name: "big.png", bytes: big }
				]),
			413,
			70002
		);
		// Exactly at the limit is fine.
		const atLimit = Buffer.concat([PNG, Buffer.alloc(MAX_BYTES - PNG.length)]);
		const ok = await upload("/api/upload", [{ name: "limit.png", bytes: atLimit }]);
		expect([ok.status, ok.body.data.size]).toEqual([200, MAX_BYTES]);
	});

	it("refuses more files than allowed (400/70007): over upload.max_files on /multi, more than one on /upload", async () => {
		const four = Array.from({ length: MAX_FILES + 1 }, (_, i) => ({ name: `p${i}.png`, bytes: PNG }));
		await expectRefused(() => upload("/api/upload/multi", four), 400, 70007);
		await expectRefused(
			() =>
				upload("/api/upload", [
					{ name: "a.png", bytes: PNG },
					{ name: "b.png", bytes: PNG }
				]),
			400,
			70007
		);
		const three = await upload("/api/upload/multi", four.slice(0, MAX_FILES));
		expect([three.status, three.body.data.length]).toEqual([200, MAX_FILES]);
	});

	it("refuses a body that is not multipart (415/70008) and a form without a file (400/70001)", async () => {
		await expectRefused(
			() => mall.http.request("POST", "/api/upload", { body: { file: PNG.toString("base64") }, token }),
			415,
			70008
		);
		await expectRefused(
			() =>
				mall.http.request("POST", "/api/upload/multi", {
					raw: PNG.toString("latin1"),
					token,
					headers: { "content-type": "image/png" }
				}),
			415,
			70008
		);
		await expectRefused(
			() =>
				mall.http.request("POST", "/api/upload", {
					raw: "--x--\r\n",
					token,
					headers: { "content-type": "multipart/form-data" }
				}),
			415,
			70008
		);
		await expectRefused(
			async () => {
				const form = new FormData();
				form.append("note", "no file here");
				const res = await fetch(mall.baseUrl + "/api/upload", {
					method: "POST",
					body: form,
					headers: { authorization: `Bearer ${token}` }
				});
				return { status: res.status, body: await res.json() };
			},
			400,
			70001
		);
		await expectRefused(
			// Cut off before its closing boundary: an image's bytes, but not a whole request.
			() =>
				mall.http.request("POST", "/api/upload", {
					raw: '--b\r\nContent-Disposition: form-data; name="file"; filename="a.gif"\r\n\r\nGIF89a' + "x".repeat(64),
					token,
					headers: { "content-type": "multipart/form-data; boundary=b" }
				}),
			400,
			70008
		);
	});

	it("refuses a caller without a valid token (401) before reading the body", async () => {
		await expectRefused(() => upload("/api/upload", [{ name: "a.png", bytes: PNG }], null), 401, 401);
		await expectRefused(() => upload("/api/upload/multi", [{ name: "a.png", bytes: PNG }], null), 401, 401);
		await expectRefused(() => upload("/api/upload", [{ name: "a.png", bytes: PNG }], "not-a-token"), 401, 10006);
	});
});

describe("GET /uploads/<name>", () => {
	it("serves only generated names: traversal, dot files and unknown names are 404 in the envelope", async () => {
		const stored = (await upload("/api/upload", [{ name: "a.png", bytes: PNG }])).body.data.name as string;
		for (const p of [
			"/uploads/..%2F..%2Fpackage.json",
			"/uploads/%2e%2e%2f%2e%2e%2fpackage.json",
			"/uploads/..%5C..%5Cpackage.json",
			"/uploads/.incoming",
			`/uploads/%2Fetc%2Fpasswd`,
			`/uploads/${stored}%00.txt`,
			`/uploads/${stored.toUpperCase()}`,
			`/uploads/${"0".repeat(32)}.png`,
			"/uploads/package.json"
		]) {
			const r = await fetch(mall.baseUrl + p);
			expect([p, r.status]).toEqual([p, 404]);
			expect(r.headers.get("content-type")).toMatch(/^application\/json/);
			const body = (await r.json()) as any;
			expect(body.code === 70005 || body.code === 404).toBe(true);
			expect(JSON.stringify(body)).not.toContain(dir);
		}
		// A path that leaves /uploads is routed elsewhere, never to a file.
		const out = await fetch(`${mall.baseUrl}/uploads/a/../../package.json`);
		expect(out.status).toBe(404);
		expect((await fetch(`${mall.baseUrl}/uploads/${stored}`)).status).toBe(200);
	});
});

describe("DELETE /api/upload/:name", () => {
	it("is for admins: a user gets 403/10010 and the file stays; an admin removes it and GET /uploads/<name> is 404", async () => {
		const name = (await upload("/api/upload", [{ name: "d.png", bytes: PNG }])).body.data.name as string;
		const deleted = await metric(mall.baseUrl, "gomall_upload_deleted_total");
		expect(deleted).toBeGreaterThanOrEqual(0);
		const asUser = await mall.http.del(`/api/upload/${name}`, undefined, token);
		expect([asUser.status, asUser.body.code, asUser.body.data]).toEqual([403, 10010, null]);
		const anonymous = await mall.http.del(`/api/upload/${name}`);
		expect([anonymous.status, anonymous.body.code]).toEqual([401, 401]);
		expect(fs.existsSync(path.join(dir, name))).toBe(true);

		const admin = await mall.http.adminToken();
		const r = await mall.http.del(`/api/upload/${name}`, undefined, admin);
		expect([r.status, r.body.code, r.body.data]).toEqual([200, 0, { name }]);
		expect(typeof r.body.trace_id).toBe("string");
		expect(fs.existsSync(path.join(dir, name))).toBe(false);
		const got = await fetch(`${mall.baseUrl}/uploads/${name}`);
		expect([got.status, ((await got.json()) as any).code]).toEqual([404, 70005]);
		expect(await metric(mall.baseUrl, "gomall_upload_deleted_total")).toBe(deleted + 1);

		// Gone is gone: a second delete finds nothing.
		const again = await mall.http.del(`/api/upload/${name}`, undefined, admin);
		expect([again.status, again.body.code, again.body.data]).toEqual([404, 70005, null]);
	});

	it("answers 404/70005 for an unknown or invalid name and removes nothing", async () => {
		const stored = (await upload("/api/upload", [{ name: "k.png", bytes: PNG }])).body.data.name as string;
		const admin = await mall.http.adminToken();
		const before = filesOnDisk();
		for (const p of [
			`${"0".repeat(32)}.png`,
			stored.toUpperCase(),
			`${stored}.png`,
			"package.json",
			"..%2F..%2Fpackage.json",
			"%2e%2e%2f" + stored,
			".incoming",
			"x".repeat(2000)
		]) {
			const r = await mall.http.del(`/api/upload/${p}`, undefined, admin);
			expect([p, r.status, r.body.code]).toEqual([p, 404, 70005]);
			expect(JSON.stringify(r.body)).not.toContain(dir);
		}
		expect(filesOnDisk()).toEqual(before);
	});
});

describe("the orphan sweep", () => {
	it("removes stored files no product references once past upload.orphan_grace_hours; referenced and fresh ones stay", async () => {
		const admin = await mall.http.adminToken();
		const names: string[] = [];
		for (let i = 0; i < 5; i++)
			names.push((await upload("/api/upload", [{ name: `s${i}.png`, bytes: PNG }])).body.data.name);
		const [orphan, onShelf, offShelf, elsewhere, fresh] = names;
		for (const [image_url, status] of [
			[`/uploads/${onShelf}`, 1],
			[`/uploads/${offShelf}`, 0],
			// The same file behind a CDN, with a cache-busting query: still a reference.
			[`https://cdn.example.com/uploads/${elsewhere}?v=2`, 1]
		] as [string, number][]) {
			const p = await mall.http.post("/api/product", { name: "ref", price: 1, stock: 1, image_url, status }, admin);
			expect(p.status).toBe(200);
		}
		// The product actor says which names its products use, in one call for many.
		const refs = await mall.node.broker.call<string[], { names: string[] }>("product.imageRefs", { names });
		expect([...refs].sort()).toEqual([onShelf, offShelf, elsewhere].sort());

		for (const n of [orphan, onShelf, offShelf, elsewhere]) age(path.join(dir, n), 25);
		// Not a stored name, however old: never the sweep's to remove.
		const stranger = path.join(dir, "notes.txt");
		fs.writeFileSync(stranger, "operator's file");
		age(stranger, 1000);

		const swept = await metric(mall.baseUrl, "gomall_upload_orphans_swept_total");
		expect(swept).toBeGreaterThanOrEqual(0);
		const r = await mall.node.broker.call<{ swept: number }>("upload.sweepOrphans");
		expect(r).toMatchObject({ swept: 1 });
		expect(fs.existsSync(path.join(dir, orphan))).toBe(false);
		expect((await fetch(`${mall.baseUrl}/uploads/${orphan}`)).status).toBe(404);
		for (const n of [onShelf, offShelf, elsewhere, fresh]) {
			expect([n, fs.existsSync(path.join(dir, n))]).toEqual([n, true]);
			expect((await fetch(`${mall.baseUrl}/uploads/${n}`)).status).toBe(200);
		}
		expect(fs.existsSync(stranger)).toBe(true);
		expect(await metric(mall.baseUrl, "gomall_upload_orphans_swept_total")).toBe(swept + 1);

		// Once its product is gone, a file is an orphan like any other.
		const list = await mall.node.broker.call<any, any>("product.imageRefs", { names: [offShelf] });
		expect(list).toEqual([offShelf]);
		fs.rmSync(stranger);
	});
});

describe("GET /version", () => {
	it("answers the API version and this build in the envelope", async () => {
		const r = await mall.http.get("/version");
		expect(r.status).toBe(200);
		const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, "../../package.json"), "utf8"));
		expect(r.body).toMatchObject({
			code: 0,
			message: "success",
			data: { version: "v1", api_prefix: "/api", app_version: pkg.version, build: "test-build-42" }
		});
		expect(typeof r.body.trace_id).toBe("string");
	});
});

describe("the upload actor on another node", () => {
	let gateway: TestMall;
	let uploadNode: GomallNode;
	let dir2: string;

	beforeAll(async () => {
		dir2 = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-upload-remote-"));
		gateway = await startMall(
			{ upload: { dir: dir2, max_bytes: MAX_BYTES, max_files: MAX_FILES } },
			ALL_SERVICES.filter(s => s !== "upload")
		);
		// Same namespace and configuration, another node: the files travel over NATS both ways.
		uploadNode = await startNode({ ...gateway.cfg, node_id: `${gateway.cfg.node_id}-upload` }, ["upload"]);
		await gateway.node.broker.waitForServices("upload", 10000);
	});
	afterAll(async () => {
		await uploadNode?.shutdown();
		await gateway?.stop();
		fs.rmSync(dir2, { recursive: true, force: true });
	});

	const send = async (route: string, parts: Part[], auth: string) => {
		const form = new FormData();
		for (const p of parts) form.append("files", new Blob([new Uint8Array(p.bytes)]), p.name);
		const res = await fetch(gateway.baseUrl + route, {
			method: "POST",
			body: form,
			headers: { authorization: `Bearer ${auth}` }
		});
		return { status: res.status, body: (await res.json()) as any };
	};

	it("stores through the gateway, serves back byte for byte, and a refused request leaves nothing on the owner's disk", async () => {
		expect(gateway.node.broker.getLocalService("upload")).toBeFalsy();
		const auth = (await gateway.http.newUser("remote")).token;
		const ok = await send(
			"/api/upload/multi",
			[
				{ name: "a.png", bytes: PNG },
				{ name: "b.jpg", bytes: JPEG }
			],
			auth
		);
		expect(ok.status).toBe(200);
		for (const [f, bytes] of [
			[ok.body.data[0], PNG],
			[ok.body.data[1], JPEG]
		] as [any, Buffer][]) {
			expect(fs.readFileSync(path.join(dir2, f.name)).equals(bytes)).toBe(true);
			const got = await fetch(gateway.baseUrl + f.url);
			expect([got.status, got.headers.get("content-type"), got.headers.get("x-content-type-options")]).toEqual([
				200,
				f.content_type,
				"nosniff"
			]);
			expect(Buffer.from(await got.arrayBuffer()).equals(bytes)).toBe(true);
		}
		const files = () =>
			(fs.readdirSync(dir2, { recursive: true }) as string[])
				.filter(f => fs.statSync(path.join(dir2, f)).isFile())
				.sort();
		const before = files();
		const bad = await send(
			"/api/upload/multi",
			[
				{ name: "a.png", bytes: PNG },
				{ name: "evil.png", bytes: SCRIPT }
			],
			auth
		);
		expect([bad.status, bad.body.code]).toEqual([400, 70003]);
		const big = await send(
			"/api/upload/multi",
			[
				{ name: "a.png", bytes: PNG },
				{ name: "big.png", bytes: Buffer.concat([PNG, Buffer.alloc(MAX_BYTES)]) }
			],
			auth
		);
		expect([big.status, big.body.code]).toEqual([413, 70002]);
		expect(files()).toEqual(before);
	});
});

describe("the upload actor on another node: deletes and sweeps", () => {
	let gateway: TestMall;
	let uploadNode: GomallNode;
	let lone: GomallNode | undefined;
	let dir3: string;
	let dir4: string;

	beforeAll(async () => {
		dir3 = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-upload-remote-"));
		dir4 = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-upload-lone-"));
		gateway = await startMall(
			{ upload: { dir: dir3 } },
			ALL_SERVICES.filter(s => s !== "upload")
		);
		uploadNode = await startNode(
			{
				...gateway.cfg,
				node_id: `${gateway.cfg.node_id}-upload`,
				// The periodic orphan sweep, every second on this node.
				upload: { ...gateway.cfg.upload, orphan_sweep_interval: 1 }
			},
			["upload"]
		);
		await gateway.node.broker.waitForServices("upload", 10000);
	});
	afterAll(async () => {
		await lone?.shutdown();
		await uploadNode?.shutdown();
		await gateway?.stop();
		setConfig(mall.cfg);
		fs.rmSync(dir3, { recursive: true, force: true });
		fs.rmSync(dir4, { recursive: true, force: true });
	});

	const send = async (bytes: Buffer, auth: string) => {
		const form = new FormData();
		form.append("file", new Blob([new Uint8Array(bytes)]), "a.png");
		const res = await fetch(gateway.baseUrl + "/api/upload", {
			method: "POST",
			body: form,
			headers: { authorization: `Bearer ${auth}` }
		});
		return (await res.json()) as any;
	};

	it("an admin's delete through the gateway removes the file on the node that holds it", async () => {
		const admin = await gateway.http.adminToken();
		const name = (await send(PNG, admin)).data.name as string;
		expect(fs.existsSync(path.join(dir3, name))).toBe(true);
		const r = await gateway.http.del(`/api/upload/${name}`, undefined, admin);
		expect([r.status, r.body.code]).toEqual([200, 0]);
		expect(fs.existsSync(path.join(dir3, name))).toBe(false);
		expect((await fetch(`${gateway.baseUrl}/uploads/${name}`)).status).toBe(404);
	});

	it("sweeps old orphans every upload.orphan_sweep_interval, keeping referenced and fresh files", async () => {
		const admin = await gateway.http.adminToken();
		const [orphan, referenced, fresh] = [
			(await send(PNG, admin)).data.name,
			(await send(PNG, admin)).data.name,
			(await send(PNG, admin)).data.name
		] as string[];
		const p = await gateway.http.post(
			"/api/product",
			{ name: "kept", price: 1, stock: 1, image_url: `/uploads/${referenced}` },
			admin
		);
		expect(p.status).toBe(200);
		age(path.join(dir3, orphan), 48);
		age(path.join(dir3, referenced), 48);
		for (let i = 0; i < 100 && fs.existsSync(path.join(dir3, orphan)); i++) await new Promise(r => setTimeout(r, 50));
		expect(fs.existsSync(path.join(dir3, orphan))).toBe(false);
		expect(fs.existsSync(path.join(dir3, referenced))).toBe(true);
		expect(fs.existsSync(path.join(dir3, fresh))).toBe(true);
	});

	it("removes nothing when no product actor can say what is referenced", async () => {
		// An upload node alone in a namespace of its own: nobody answers product.imageRefs.
		const cfg = { ...gateway.cfg, namespace: `${gateway.cfg.namespace}-lone`, node_id: `${gateway.cfg.node_id}-lone` };
		lone = await startNode({ ...cfg, upload: { ...cfg.upload, dir: dir4 } }, ["upload"]);
		const name = `${"ab".repeat(16)}.png`;
		fs.writeFileSync(path.join(dir4, name), PNG);
		age(path.join(dir4, name), 48);
		await expect(lone.broker.call("upload.sweepOrphans")).rejects.toBeTruthy();
		expect(fs.existsSync(path.join(dir4, name))).toBe(true);
	});
});

describe("a client that goes away mid-upload", () => {
	it("leaves nothing on disk once its connection is gone", async () => {
		const before = filesOnDisk();
		const boundary = "gomallabort";
		const head = Buffer.concat([
			Buffer.from(
				`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n`
			),
			PNG,
			Buffer.alloc(1000)
		]);
		const { request } = await import("node:http");
		const url = new URL(mall.baseUrl + "/api/upload");
		const req = request({
			host: url.hostname,
			port: url.port,
			path: url.pathname,
			method: "POST",
			headers: { authorization: `Bearer ${token}`, "content-type": `multipart/form-data; boundary=${boundary}` }
		});
		req.on("error", () => undefined);
		req.write(head);
		// The file is staged (its first bytes were an image) and still open when the client leaves.
		const staged = () => filesOnDisk().filter(f => f.startsWith(".incoming/")).length;
		for (let i = 0; i < 50 && staged() === 0; i++) await new Promise(r => setTimeout(r, 20));
		expect(staged()).toBe(1);
		req.destroy();
		for (let i = 0; i < 100 && filesOnDisk().length !== before.length; i++) await new Promise(r => setTimeout(r, 20));
		expect(filesOnDisk()).toEqual(before);
	});
});
