import { parseArgs } from "node:util";

export interface CliArgs {
	env?: string;
	config?: string;
	services?: string[];
	repl: boolean;
	/** HTTP worker processes sharing the port (Node's cluster module); 1 = this process serves. */
	workers: number;
}

/** `--env dev|prod|test`, `--config file.json`, `--services user,product`, `--repl`, `--workers N`. */
export function parseCliArgs(argv: string[]): CliArgs {
	const { values } = parseArgs({
		args: argv,
		options: {
			env: { type: "string" },
			config: { type: "string" },
			services: { type: "string" },
			repl: { type: "boolean", default: false },
			workers: { type: "string", default: "1" }
		},
		strict: true
	});
	return {
		env: values.env,
		config: values.config,
		services: values.services
			?.split(",")
			.map(s => s.trim())
			.filter(Boolean),
		repl: values.repl ?? false,
		workers: parseWorkers(values.workers ?? "1", values.repl ?? false)
	};
}

function parseWorkers(raw: string, repl: boolean): number {
	const n = Number(raw);
	if (!Number.isInteger(n) || n < 1 || n > 64)
		throw new Error(`--workers must be a whole number from 1 to 64, got "${raw}"`);
	if (n > 1 && repl)
		throw new Error("--repl needs a single process: drop --workers or run the REPL on a node of its own");
	return n;
}
