/**
 * Backups that restore: scripts/backup.sh dumps a mall with users, products, cart lines,
 * orders and a finished flash sale; scripts/restore.sh loads the dump into a fresh database;
 * every table has the same rows (count and CHECKSUM TABLE), and a node started on the
 * restored database serves the restored data.
 */
import { execFile } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import mysql from "mysql2/promise";
import { PROJECT_ROOT } from "../../config/paths";
import { dropDatabase, startMall, startMallWith, testConfig, TestMall } from "../helpers/node";
import { arm, buy, drained, expectInvariant, makeBuyers, newProduct } from "../helpers/seckill";

const run = promisify(execFile);
let mall: TestMall;
let restored: TestMall | undefined;
const restoredDb = `gomall_r_${crypto.randomBytes(4).toString("hex")}`;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-backup-"));

beforeAll(async () => {
	mall = await startMall();
}, 60000);

afterAll(async () => {
	await restored?.stop();
	await mall?.stop();
	if (mall) await dropDatabase({ ...mall.cfg, db: { ...mall.cfg.db, name: restoredDb } }).catch(() => undefined);
	fs.rmSync(dir, { recursive: true, force: true });
}, 60000);

async function tableStats(db: string): Promise<Record<string, { rows: number; checksum: string }>> {
	const conn = await mysql.createConnection({
		host: mall.cfg.db.host,
		port: mall.cfg.db.port,
		user: mall.cfg.db.user,
		password: mall.cfg.db.password,
		database: db
	});
	try {
		const [tables] = await conn.query(
			"SELECT table_name AS t FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name",
			[db]
		);
		const out: Record<string, { rows: number; checksum: string }> = {};
		for (const { t } of tables as { t: string }[]) {
			const [[c]] = (await conn.query(`SELECT COUNT(*) AS n FROM \`${t}\``)) as any;
			const [[s]] = (await conn.query(`CHECKSUM TABLE \`${t}\``)) as any;
			out[t] = { rows: Number(c.n), checksum: String(s.Checksum) };
		}
		return out;
	} finally {
		await conn.end();
	}
}

it("restores a backup of a mall with users, products, orders and a finished flash sale into a fresh database, table for table", async () => {
	const http = mall.http;
	const admin = await http.adminToken();
	const alice = await http.newUser("alice");
	const bob = await http.newUser("bob");
	const phone = await newProduct(mall, admin, { name: "Phone", price: 1999.99, stock: 50 });
	const cable = await newProduct(mall, admin, { name: "Cable", price: 9.5, stock: 500 });
	expect((await http.post("/api/order", { product_id: phone, quantity: 1 }, alice.token)).status).toBe(200);
	const paid = await http.post("/api/order", { product_id: cable, quantity: 3 }, bob.token);
	expect((await http.post(`/api/order/${paid.body.data.order_no}/pay`, { pay_type: 1 }, bob.token)).status).toBe(200);
	expect((await http.post("/api/cart", { product_id: cable, quantity: 2 }, alice.token)).status).toBe(200);
	// A flash sale run to the end: sold out, every winner's order written.
	const flash = await newProduct(mall, admin, { name: "Flash watch", price: 299 });
	const activity = await arm(mall, admin, { product_id: flash, stock: 5 });
	const buyers = await makeBuyers(mall, 8, "restore");
	const answers = await Promise.all(buyers.map(b => buy(mall, b, flash)));
	expect(answers.filter(r => r.status === 200)).toHaveLength(5);
	expectInvariant(await drained(mall, activity.id));

	const env = { ...process.env, GOMALL_DB_NAME: mall.cfg.db.name };
	const backup = await run("bash", [path.join(PROJECT_ROOT, "scripts", "backup.sh"), dir], { env });
	const file = backup.stdout.match(/wrote (\S+\.sql\.gz)/)![1];
	const out = await run("bash", [path.join(PROJECT_ROOT, "scripts", "restore.sh"), file, restoredDb], { env });
	expect(out.stdout).toMatch(new RegExp(`loaded .* into ${restoredDb}`));

	const before = await tableStats(mall.cfg.db.name);
	const after = await tableStats(restoredDb);
	expect(Object.keys(before)).toEqual(
		expect.arrayContaining(["users", "products", "orders", "cart_items", "seckill_activities"])
	);
	expect(before.orders.rows).toBe(7); // 2 ordinary + 5 flash-sale
	expect(before.users.rows).toBeGreaterThanOrEqual(11);
	expect(after).toEqual(before);

	// Refuses to load into a database that has tables (no mixing with live data).
	await expect(
		run("bash", [path.join(PROJECT_ROOT, "scripts", "restore.sh"), file, restoredDb], { env })
	).rejects.toMatchObject({ code: 1, stderr: expect.stringMatching(/already has/) });

	// A node on the restored database serves what was backed up.
	restored = await startMallWith(testConfig({ db: { name: restoredDb } }));
	const login = await restored.http.post("/api/user/login", { username: bob.username, password: "password-123" });
	expect(login.status).toBe(200);
	const order = await restored.http.get(`/api/order/${paid.body.data.order_no}`, login.body.data.token);
	expect(order.body.data).toMatchObject({ order_no: paid.body.data.order_no, status: 2, quantity: 3 });
	expect((await restored.http.get(`/api/product/${phone}`)).body.data).toMatchObject({ name: "Phone", price: 1999.99 });
}, 120000);
