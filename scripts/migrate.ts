/** `npm run migrate`: applies pending migrations to the configured database and exits. */
import { loadConfig } from "../config";
import { migrate } from "../lib/storage/migrate";
import { parseCliArgs } from "../bootstrap/cli";

async function main(): Promise<void> {
	const args = parseCliArgs(process.argv.slice(2));
	const cfg = loadConfig({ env: args.env, file: args.config });
	const applied = await migrate(cfg.db, msg => console.log(msg));
	console.log(
		applied.length ? `applied ${applied.length} migration(s) to ${cfg.db.name}` : `${cfg.db.name} is up to date`
	);
}

main().catch(err => {
	console.error(`migrate failed: ${err.message}`);
	process.exit(1);
});
