import fs from "node:fs";
import path from "node:path";

/** The project root (where package.json is), from source under ts-jest or from dist/. */
function findRoot(start: string): string {
	let dir = start;
	while (!fs.existsSync(path.join(dir, "package.json"))) {
		const parent = path.dirname(dir);
		if (parent === dir) throw new Error(`package.json not found above ${start}`);
		dir = parent;
	}
	return dir;
}

export const PROJECT_ROOT = findRoot(__dirname);
export const MIGRATIONS_DIR = path.join(PROJECT_ROOT, "migrations");
export const LUA_DIR = path.join(PROJECT_ROOT, "lua");
