import fs from "node:fs";
import path from "node:path";
import { connectAdmin, listMigrations, migrate, schemaSql } from "../../lib/storage/migrate";
import { PROJECT_ROOT } from "../../config/paths";
import { dropDatabase, testConfig } from "../helpers/node";

const cfg = testConfig();
const other = testConfig();

afterAll(async () => {
	await dropDatabase(cfg);
	await dropDatabase(other);
});

describe("migrations", () => {
	it("apply once even when two nodes start at the same moment", async () => {
		const [a, b] = await Promise.all([migrate(cfg.db), migrate(cfg.db)]);
		const all = listMigrations().map(m => m.name);
		expect([...a, ...b].sort()).toEqual(all.sort());
		expect(await migrate(cfg.db)).toEqual([]);
	});

	it("leave exactly the schema of deploy/mysql/init.sql", async () => {
		const initSql = fs.readFileSync(path.join(PROJECT_ROOT, "deploy", "mysql", "init.sql"), "utf8");
		const migrated = await connectAdmin(cfg.db, cfg.db.name);
		const fromMigrations = await schemaSql(migrated);
		await migrated.end();
		expect(fromMigrations).toBe(initSql);

		// A database created from init.sql (as the Compose file does) is the same and needs no migration.
		const admin = await connectAdmin(other.db);
		await admin.query(`CREATE DATABASE \`${other.db.name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
		await admin.changeUser({ database: other.db.name });
		await admin.query(initSql);
		expect(await schemaSql(admin)).toBe(initSql);
		await admin.end();
		expect(await migrate(other.db)).toEqual([]);
	});
});

describe("scripts/backup.sh", () => {
	it("writes a compressed dump and keeps only the newest N", async () => {
		const { execFileSync } = await import("node:child_process");
		const { gunzipSync } = await import("node:zlib");
		const os = await import("node:os");
		const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gomall-backup-"));
		const env = { ...process.env, GOMALL_DB_NAME: cfg.db.name, GOMALL_BACKUP_KEEP: "2" };
		const script = path.join(PROJECT_ROOT, "scripts", "backup.sh");
		for (let i = 0; i < 3; i++) {
			execFileSync("bash", [script, dir], { env });
			await new Promise(r => setTimeout(r, 1100)); // file names carry the second
		}
		const files = fs.readdirSync(dir).filter(f => f.endsWith(".sql.gz"));
		expect(files).toHaveLength(2);
		const sql = gunzipSync(fs.readFileSync(path.join(dir, files[0]))).toString();
		expect(sql).toMatch(/CREATE TABLE `products`/);
	});
});
