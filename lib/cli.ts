import { parseArgs } from "node:util";

export interface CliArgs {
	env?: string;
	config?: string;
	services?: string[];
	repl: boolean;
}

/** `--env dev|prod|test`, `--config file.json`, `--services user,product`, `--repl`. */
export function parseCliArgs(argv: string[]): CliArgs {
	const { values } = parseArgs({
		args: argv,
		options: {
			env: { type: "string" },
			config: { type: "string" },
			services: { type: "string" },
			repl: { type: "boolean", default: false }
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
		repl: values.repl ?? false
	};
}
