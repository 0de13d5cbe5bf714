/**
 * The layering rules of eslint.config.mjs, tried on imports written for the purpose: each
 * upward import must be refused, each downward one allowed. ESLint runs in a child process
 * (its flat config is an ES module, which Jest's CommonJS sandbox cannot load).
 */
import { execFileSync } from "node:child_process";
import path from "node:path";

const ROOT = path.join(__dirname, "..", "..");

/** [file the import is written in, import specifier] */
const REFUSED: [string, string][] = [
	["lib/http/probe.ts", "../../services/api.service"],
	["lib/storage/probe.ts", "../../moleculer.config"],
	["lib/domain/probe.ts", "../../bootstrap/node"],
	["lib/messaging/probe.ts", "../../mixins/db.mixin"],
	["lib/contract/probe.ts", "../http/body"],
	["lib/observability/probe.ts", "../storage/redis"],
	["lib/storage/probe.ts", "../domain/seckill"],
	["mixins/probe.ts", "../services/product.service"],
	["services/probe.ts", "./product.service"],
	["services/api/probe.ts", "../stock.service"],
	["services/probe.ts", "../moleculer.config"],
	["config/probe.ts", "../lib/contract/codes"]
];
const ALLOWED: [string, string][] = [
	["lib/http/probe.ts", "../domain/seckill"],
	["lib/domain/probe.ts", "../contract/errors"],
	["lib/storage/probe.ts", "../../config"],
	["mixins/probe.ts", "../lib/storage/redis"],
	["services/probe.ts", "../mixins/db.mixin"],
	["services/api/probe.ts", "./types"],
	["bootstrap/probe.ts", "../moleculer.config"],
	["bootstrap/probe.ts", "../services/api.service"]
];

function lint(cases: [string, string][]): number[] {
	const script = `
		const { ESLint } = require("eslint");
		(async () => {
			const eslint = new ESLint({ cwd: ${JSON.stringify(ROOT)} });
			const cases = JSON.parse(process.argv[1]);
			const counts = [];
			for (const [file, spec] of cases) {
				const [result] = await eslint.lintText('import x from "' + spec + '";\\nexport default x;\\n', { filePath: file });
				counts.push(result.messages.filter(m => m.ruleId === "no-restricted-imports").length);
			}
			process.stdout.write(JSON.stringify(counts));
		})().catch(err => { console.error(err); process.exit(1); });`;
	return JSON.parse(
		execFileSync(process.execPath, ["-e", script, JSON.stringify(cases)], { cwd: ROOT, encoding: "utf8" })
	);
}

describe("import boundaries (npm run lint)", () => {
	it("refuses every upward import and allows the downward ones", () => {
		const counts = lint([...REFUSED, ...ALLOWED]);
		const refused = REFUSED.map(([file, spec], i) => ({ file, spec, errors: counts[i] }));
		const allowed = ALLOWED.map(([file, spec], i) => ({ file, spec, errors: counts[REFUSED.length + i] }));
		expect(refused.filter(r => r.errors !== 1)).toEqual([]);
		expect(allowed.filter(r => r.errors !== 0)).toEqual([]);
	}, 60000);
});
