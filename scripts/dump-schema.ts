/**
 * `npm run schema:dump`: migrates a scratch database and writes its schema to
 * deploy/mysql/init.sql, which a test keeps equal to the migrated schema.
 */
import fs from "node:fs";
import path from "node:path";
import { loadConfig } from "../config";
import { connectAdmin, migrate, schemaSql } from "../lib/storage/migrate";
import { PROJECT_ROOT } from "../config/paths";

async function main(): Promise<void> {
	const cfg = loadConfig();
	const db = { ...cfg.db, name: `gomall_schema_dump_${process.pid}` };
	await migrate(db);
	const conn = await connectAdmin(db, db.name);
	try {
		const out = path.join(PROJECT_ROOT, "deploy", "mysql", "init.sql");
		fs.writeFileSync(out, await schemaSql(conn));
		console.log(`wrote ${path.relative(PROJECT_ROOT, out)}`);
	} finally {
		await conn.query(`DROP DATABASE \`${db.name}\``);
		await conn.end();
	}
}

main().catch(err => {
	console.error(`schema:dump failed: ${err.message}`);
	process.exit(1);
});
