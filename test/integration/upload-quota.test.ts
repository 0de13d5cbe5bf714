import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { RedisClient } from "../../lib/storage/redis";
import { plainRedis, startMall, TestMall } from "../helpers/node";

/** A real 1x1 PNG (70 bytes); padded after its end it is still a PNG by its bytes. */
const PNG = Buffer.from(
	"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
	"base64"
);
const SCRIPT = Buffer.from("#!/bin/sh\nrm -rf /\n");
const png = (size: number) => Buffer.concat([PNG, Buffer.alloc(size - PNG.length)]);
const FILES_PER_DAY = 3;
const BYTES_PER_DAY = 2048;
const QUOTA = 70009;

let mall: TestMall;
let dir: string;
let redis: RedisClient;

beforeAll(async () => {
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-quota-"));
	mall = await startMall({
		upload: { dir, quota_files_per_day: FILES_PER_DAY, quota_bytes_per_day: BYTES_PER_DAY }
	});
	redis = plainRedis(mall.cfg);
});
afterAll(async () => {
	redis?.disconnect();
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

async function upload(files: Buffer[], token: string) {
	const form = new FormData();
	files.forEach((bytes, i) => form.append("files", new Blob([new Uint8Array(bytes)]), `f${i}.png`));
	const res = await fetch(mall.baseUrl + "/api/upload/multi", {
		method: "POST",
		body: form,
		headers: { authorization: `Bearer ${token}` }
	});
	return { status: res.status, body: (await res.json()) as any, headers: res.headers };
}

/** Refused over the quota: 429, the quota code in the envelope, a Retry-After up to the next UTC day, nothing kept. */
async function expectOverQuota(files: Buffer[], token: string) {
	const before = filesOnDisk();
	const r = await upload(files, token);
	expect([r.status, r.body.code]).toEqual([429, QUOTA]);
	expect(r.body).toMatchObject({ data: null });
	expect(typeof r.body.trace_id).toBe("string");
	const retryAfter = Number(r.headers.get("retry-after"));
	const now = new Date();
	const toMidnight = (Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1) - now.getTime()) / 1000;
	expect(retryAfter).toBeGreaterThanOrEqual(1);
	expect(retryAfter).toBeLessThanOrEqual(Math.ceil(toMidnight) + 1);
	expect(filesOnDisk()).toEqual(before);
}

async function metric(name: string, labels = ""): Promise<number> {
	const text = await (await fetch(`${mall.baseUrl}/metrics`)).text();
	const line = text
		.split("\n")
		.find(l => l.startsWith(name + (labels ? "{" : "")) && (!labels || l.includes(labels)) && !l.startsWith("#"));
	return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : NaN;
}

const utcDay = () => new Date().toISOString().slice(0, 10);

describe("the per-user upload quota", () => {
	it("counts committed files per user and UTC day; a request over it is 429/70009 and keeps nothing", async () => {
		expect(await metric("gomall_upload_quota_refused_total", 'limit="files"')).toBe(0);
		expect(await metric("gomall_upload_quota_refused_total", 'limit="bytes"')).toBe(0);
		const a = await mall.http.newUser("qa");
		expect((await upload([PNG, PNG], a.token)).status).toBe(200);
		// 2 + 2 > 3: refused whole, its staged files removed.
		await expectOverQuota([PNG, PNG], a.token);
		// Refused requests used no quota: one more file still fits.
		const third = await upload([PNG], a.token);
		expect([third.status, third.body.code]).toEqual([200, 0]);
		// Used up: refused before a byte is read, however small.
		await expectOverQuota([PNG], a.token);
		expect(await metric("gomall_upload_quota_refused_total", 'limit="files"')).toBe(2);

		// Counted in Redis, per user and UTC day, and the key expires.
		const key = `gomall:${mall.cfg.namespace}:upload:quota:{u${a.id}}:${utcDay()}`;
		expect(await redis.hgetall(key)).toEqual({ files: "3", bytes: String(3 * PNG.length) });
		const ttl = await redis.ttl(key);
		expect(ttl).toBeGreaterThan(0);
		expect(ttl).toBeLessThanOrEqual(2 * 86400);

		// Another user has a quota of their own.
		const b = await mall.http.newUser("qb");
		expect((await upload([PNG, PNG, PNG], b.token)).status).toBe(200);
	});

	it("counts bytes too: a request whose files would pass quota_bytes_per_day is refused, a smaller one fits", async () => {
		const c = await mall.http.newUser("qc");
		expect((await upload([png(1500)], c.token)).status).toBe(200);
		await expectOverQuota([png(600)], c.token);
		expect(await metric("gomall_upload_quota_refused_total", 'limit="bytes"')).toBe(1);
		const fits = await upload([png(BYTES_PER_DAY - 1500)], c.token);
		expect([fits.status, fits.body.data[0].size]).toEqual([200, BYTES_PER_DAY - 1500]);
		await expectOverQuota([PNG], c.token);
	});

	it("uses no quota for a request refused for another reason", async () => {
		const d = await mall.http.newUser("qd");
		for (let i = 0; i < 4; i++) {
			const bad = await upload([PNG, SCRIPT], d.token);
			expect([bad.status, bad.body.code]).toEqual([400, 70003]);
		}
		const ok = await upload([PNG, PNG, PNG], d.token);
		expect([ok.status, ok.body.data.length]).toEqual([200, 3]);
	});

	it("admits concurrent requests of one user only up to the quota (checked atomically, not per node)", async () => {
		const e = await mall.http.newUser("qe");
		const before = filesOnDisk().length;
		// Each request alone fits (2 <= 3); any two together do not.
		const all = await Promise.all(Array.from({ length: 4 }, () => upload([PNG, PNG], e.token)));
		expect(all.map(r => r.status).sort()).toEqual([200, 429, 429, 429]);
		expect(filesOnDisk().length).toBe(before + 2);
	});

	it("does not limit admins (they stock the catalogue)", async () => {
		const admin = await mall.http.adminToken();
		for (let i = 0; i < 3; i++) expect((await upload([png(1000), png(1000)], admin)).status).toBe(200);
	});
});
